//! A PCI function assigned through VFIO, with its MSI-X on an
//! [`MsixAccelerator`].
//!
//! Every call into the accelerator is marked `// msix-accel:` with the
//! section of docs/integration.md it implements:
//! - creation ([`VfioFunction::open`]): the kernel VFIO source (section 2),
//!   the layout (3), the memslot (7), the accelerator (6);
//! - config space ([`VfioFunction::config_read`], [`VfioFunction::config_write`]):
//!   the MSI-X capability goes to the accelerator, never to the device (9);
//! - BARs and Command ([`VfioFunction::write_command`], [`VfioFunction::sync_bars`]):
//!   `set_bar` and source-masking suspend/resume (9);
//! - MMIO exits ([`VfioFunction::mmio_read`], [`VfioFunction::mmio_write`]):
//!   the accelerator first (10).
//!
//! Everything else is plain VFIO: config space forwarded to the VFIO
//! config region, BARs emulated (see [`super::bars`]) and mmapped into the
//! guest as KVM memslots where VFIO allows, trapped and forwarded to the
//! VFIO region otherwise, the expansion ROM hidden.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use msix_accel::{AccelConfig, AccelEvent, BarOffset, MsixAccelerator, MsixVm, SharedRouting};
use vfio_bindings::bindings::vfio::{VFIO_PCI_CONFIG_REGION_INDEX, VFIO_REGION_INFO_FLAG_MMAP};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioRegionInfoCap};
use vfio_vectors::kernel::{MsixCapability, VfioMsixSource};
use vfio_vectors::MsixSource;

use super::bars::{Bar, BarKind, Bars, BAR0, COMMAND_MEMORY, ROM_BAR};
use crate::cli::Options;
use crate::layout;

/// Bytes of the MSI-X capability in config space.
const MSIX_CAP_LEN: u64 = msix_model::CAPABILITY_LEN;
/// Config-space offset of Command.
const COMMAND: u64 = 0x04;

/// A BAR region of the device mapped into the VMM (and into the guest as
/// a memslot while the BAR decodes).
#[derive(Debug)]
struct BarMapping {
    host: *mut libc::c_void,
    len: usize,
    slot: u32,
    /// Where KVM maps it now.
    at: Option<u64>,
}

// SAFETY: `host` is an mmap of the device fd that lives as long as the
// function; only KVM and the device access the memory behind it.
unsafe impl Send for BarMapping {}

/// The guest-visible state behind the function's lock.
#[derive(Debug)]
struct State {
    bars: Bars,
    maps: [Option<BarMapping>; 6],
    /// Source masking was suspended at the last memory-decode off.
    masking_suspended: bool,
}

/// One assigned PCI function.
pub struct VfioFunction {
    name: String,
    device: Arc<VfioDevice>,
    vm: Arc<VmFd>,
    /// The MSI-X accelerator of this function.
    accel: Arc<MsixAccelerator>,
    /// The physical MSI-X capability (offset, table and PBA location).
    msix: MsixCapability,
    state: Mutex<State>,
}

impl std::fmt::Debug for VfioFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioFunction")
            .field("name", &self.name)
            .field("msix", &self.msix)
            .finish_non_exhaustive()
    }
}

impl VfioFunction {
    /// Opens the vfio-pci function at `path` in `container`, reads its
    /// BARs, gives them addresses from `next_mmio`/`next_io`, and sets up
    /// its accelerator. `index` numbers the function (memslots, events).
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        index: u32,
        path: &Path,
        container: &Arc<VfioContainer>,
        vm: &Arc<VmFd>,
        hv: &Arc<dyn MsixVm>,
        routes: &SharedRouting,
        events: &Arc<std::sync::mpsc::SyncSender<AccelEvent>>,
        options: &Options,
        next_mmio: &mut u64,
        next_io: &mut u64,
    ) -> Result<VfioFunction, String> {
        let sysfs = if path.components().count() == 1 && !path.has_root() {
            Path::new("/sys/bus/pci/devices").join(path)
        } else {
            path.to_path_buf()
        };
        let name = sysfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let device = Arc::new(
            VfioDevice::new(&sysfs, container.clone(), false)
                .map_err(|e| format!("{name}: opening the VFIO device: {e}"))?,
        );

        // msix-accel (integration.md section 2): the kernel VFIO source owns
        // the MSI-X IRQ index from now on; this VMM never issues its own
        // VFIO_DEVICE_SET_IRQS for MSI-X.
        let source = VfioMsixSource::from_vfio_device(device.clone())
            .map_err(|e| format!("{name}: MSI-X source: {e}"))?;
        let msix = *source.msix_capability();
        if !source.features().maskable {
            eprintln!(
                "reference-vmm: {name}: no source masking: {}",
                source.unmapped_reason().unwrap_or("unknown")
            );
        }

        let mut bars = Bars {
            bar: [Bar::UNUSED; 6],
            command: 0,
        };
        let mut i = 0;
        while i < 6 {
            let size = device.get_region_size(i as u32);
            let register = config_dword(&device, BAR0 + 4 * i as u64);
            bars.bar[i] = Bar::from_register(register, size);
            if matches!(bars.bar[i].kind, BarKind::Memory { is64: true, .. }) && i < 5 {
                bars.bar[i + 1] = Bar {
                    kind: BarKind::Upper,
                    size: 0,
                    address: 0,
                };
                i += 1;
            }
            i += 1;
        }
        bars.assign(next_mmio, next_io)
            .map_err(|e| format!("{name}: {e}"))?;
        bars.command = config_dword(&device, COMMAND) as u16;

        let mut maps: [Option<BarMapping>; 6] = Default::default();
        for (i, map) in maps.iter_mut().enumerate() {
            let msix_bar = i == usize::from(msix.table_bir) || i == usize::from(msix.pba_bir);
            if !msix_bar && matches!(bars.bar[i].kind, BarKind::Memory { .. }) {
                *map = map_region(
                    &device,
                    i as u32,
                    layout::BAR_SLOT_BASE + 6 * index + i as u32,
                );
            }
        }

        // msix-accel (section 3): the guest sees the physical layout (table
        // and PBA where the device has them); (section 7) the memslot for
        // the table's read-only shadow comes from this VMM's slot plan.
        let next_pointer = config_dword(&device, u64::from(msix.cap_offset)) >> 8 & 0xff;
        let mut config = AccelConfig::new(
            source.vector_count(),
            msix.table_bir,
            layout::TABLE_SLOT_BASE + index,
        )
        .with_layout(
            BarOffset::new(msix.table_bir, msix.table_offset),
            BarOffset::new(msix.pba_bir, msix.pba_offset),
        )
        .with_next_pointer(next_pointer as u8)
        .with_device_id(index)
        .with_policy(options.policy)
        .with_source_masking(options.source_masking);
        let table_bar = bars.bar[usize::from(msix.table_bir)].size;
        if table_bar < 4096 {
            config = config.with_table_bar_size(table_bar);
        }
        if let Some((window, batch)) = options.coalescing {
            config = config.with_unmask_coalescing(window, batch);
        }
        // msix-accel (section 6): one accelerator per function; the VM's
        // hypervisor calls and routing table are shared by all of them.
        let accel = MsixAccelerator::new(
            hv.clone(),
            routes.clone(),
            Box::new(source),
            config,
            events.clone(),
        )
        .map_err(|e| format!("{name}: accelerator: {e}"))?;

        Ok(VfioFunction {
            name,
            device,
            vm: vm.clone(),
            accel: Arc::new(accel),
            msix,
            state: Mutex::new(State {
                bars,
                maps,
                masking_suspended: false,
            }),
        })
    }

    /// The function's BDF on the host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The function's accelerator (for the service thread and statistics).
    pub fn accelerator(&self) -> &Arc<MsixAccelerator> {
        &self.accel
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain registers: consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Places the BARs as the device decodes at boot (the firmware's
    /// assignment). Call once, after the fast-path servicer is attached.
    pub fn start(&self) {
        let mut st = self.state();
        self.sync_bars(&mut st);
    }

    fn in_msix_cap(&self, offset: u64) -> bool {
        let cap = u64::from(self.msix.cap_offset);
        (cap..cap + MSIX_CAP_LEN).contains(&offset)
    }

    /// A guest configuration read of 1, 2 or 4 bytes.
    pub fn config_read(&self, offset: u64, data: &mut [u8]) {
        if self.in_msix_cap(offset) {
            // msix-accel (section 9): the capability is the accelerator's.
            self.accel
                .read_capability(offset - u64::from(self.msix.cap_offset), data);
            return;
        }
        let reg = offset & !3;
        let shift = (offset & 3) as usize;
        if (BAR0..BAR0 + 24).contains(&reg) {
            let value = self.state().bars.read(((reg - BAR0) / 4) as usize);
            copy_from_dword(value, shift, data);
        } else if reg == ROM_BAR {
            // No expansion ROM: the guest never runs the device's firmware.
            data.fill(0);
        } else {
            data.fill(0xff);
            self.device
                .region_read(VFIO_PCI_CONFIG_REGION_INDEX, data, offset);
        }
    }

    /// A guest configuration write of 1, 2 or 4 bytes.
    pub fn config_write(&self, offset: u64, data: &[u8]) {
        if self.in_msix_cap(offset) {
            // msix-accel (section 9): Enable and Function Mask go to the
            // accelerator, never to the device. Errors are the host's
            // trouble, also reported as events; the guest's write stands.
            if let Err(e) = self
                .accel
                .write_capability(offset - u64::from(self.msix.cap_offset), data)
            {
                eprintln!("reference-vmm: {}: MSI-X capability write: {e}", self.name);
            }
            return;
        }
        let reg = offset & !3;
        let shift = (offset & 3) as usize;
        if (BAR0..BAR0 + 24).contains(&reg) {
            let mut st = self.state();
            let index = ((reg - BAR0) / 4) as usize;
            let value = merge_into_dword(st.bars.read(index), shift, data);
            st.bars.write(index, value);
            self.sync_bars(&mut st);
        } else if reg == ROM_BAR {
        } else if reg == COMMAND && shift < 2 {
            self.write_command(offset, data);
        } else {
            self.device
                .region_write(VFIO_PCI_CONFIG_REGION_INDEX, data, offset);
        }
    }

    /// Command: forwarded to the device (Bus Master Enable among others),
    /// with the decode bits tracked here. Memory decode off is handled
    /// before the device stops decoding, on after it decodes again.
    fn write_command(&self, offset: u64, data: &[u8]) {
        let mut st = self.state();
        let shift = (offset & 3) as usize;
        let command = merge_into_dword(u32::from(st.bars.command), shift, data) as u16;
        let memory_off = st.bars.command & COMMAND_MEMORY != 0 && command & COMMAND_MEMORY == 0;
        if memory_off {
            // vfio-pci zaps the device's mmaps when decode goes off: take
            // the BARs out of the guest (and the accelerator off the
            // physical table, in sync_bars) before that.
            st.bars.command = command;
            self.sync_bars(&mut st);
        }
        self.device
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, data, offset);
        st.bars.command = command;
        if !memory_off {
            self.sync_bars(&mut st);
        }
    }

    /// Makes KVM and the accelerator follow the BARs and Command: each
    /// mmapped BAR is a memslot exactly while it decodes; the accelerator
    /// learns every BAR's base (it keeps those holding the table or PBA).
    fn sync_bars(&self, st: &mut State) {
        let decoding = st.bars.command & COMMAND_MEMORY != 0;
        if !decoding && !st.masking_suspended {
            // msix-accel (section 9): stop masking through the physical
            // table before its mapping goes away.
            if let Err(e) = self.accel.suspend_source_masking() {
                eprintln!("reference-vmm: {}: suspend source masking: {e}", self.name);
            }
            st.masking_suspended = true;
        }
        for i in 0..6 {
            let base = st.bars.memory_base(i);
            if let Some(map) = st.maps[i].as_mut() {
                self.map_bar(map, base);
            }
            if matches!(st.bars.bar[i].kind, BarKind::Memory { .. }) {
                // msix-accel (section 9): where BAR i decodes, or None.
                if let Err(e) = self.accel.set_bar(i as u8, base) {
                    eprintln!("reference-vmm: {}: set_bar({i}): {e}", self.name);
                }
            }
        }
        if decoding && st.masking_suspended {
            // msix-accel (section 9): decoding again: mask at the device again.
            self.accel.resume_source_masking();
            st.masking_suspended = false;
        }
    }

    /// Moves BAR mapping `map` to `base` (None: out of the guest).
    fn map_bar(&self, map: &mut BarMapping, base: Option<u64>) {
        if map.at == base {
            return;
        }
        let region = |gpa: u64, size: u64| kvm_userspace_memory_region {
            slot: map.slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: map.host as u64,
        };
        if let Some(old) = map.at.take() {
            // SAFETY: deleting a slot (size 0) touches no memory.
            if let Err(e) = unsafe { self.vm.set_user_memory_region(region(old, 0)) } {
                eprintln!("reference-vmm: {}: deleting BAR memslot: {e}", self.name);
            }
        }
        if let Some(gpa) = base {
            // SAFETY: `map.host..+len` is an mmap of the device region that
            // lives as long as this function; the slot is deleted (above or
            // by the VM's drop) before it is unmapped.
            match unsafe { self.vm.set_user_memory_region(region(gpa, map.len as u64)) } {
                Ok(()) => map.at = Some(gpa),
                Err(e) => eprintln!(
                    "reference-vmm: {}: BAR memslot at {gpa:#x}: {e} (accesses trap instead)",
                    self.name
                ),
            }
        }
    }

    /// An MMIO exit that may be in one of the function's BARs; false when
    /// the function does not decode `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        // msix-accel (section 10): the table and PBA first.
        if self.accel.mmio_read(addr, data) {
            return true;
        }
        let Some((bar, offset)) = self.state().bars.memory_hit(addr, data.len()) else {
            return false;
        };
        data.fill(0xff);
        self.device.region_read(bar as u32, data, offset);
        true
    }

    /// An MMIO write exit; false when the function does not decode `addr`.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        // msix-accel (section 10): the table and PBA first.
        if self.accel.mmio_write(addr, data) {
            return true;
        }
        let Some((bar, offset)) = self.state().bars.memory_hit(addr, data.len()) else {
            return false;
        };
        // The rest of the table's BAR, or a BAR VFIO does not let us mmap.
        self.device.region_write(bar as u32, data, offset);
        true
    }

    /// A port read in one of the function's I/O BARs.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) -> bool {
        let Some((bar, offset)) = self.state().bars.io_hit(port, data.len()) else {
            return false;
        };
        data.fill(0xff);
        self.device.region_read(bar as u32, data, offset);
        true
    }

    /// A port write in one of the function's I/O BARs.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> bool {
        let Some((bar, offset)) = self.state().bars.io_hit(port, data.len()) else {
            return false;
        };
        self.device.region_write(bar as u32, data, offset);
        true
    }
}

impl Drop for VfioFunction {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        for map in st.maps.iter_mut().flatten() {
            if map.at.take().is_some() {
                let region = kvm_userspace_memory_region {
                    slot: map.slot,
                    ..Default::default()
                };
                // SAFETY: deleting a slot (size 0) touches no memory.
                let _ = unsafe { self.vm.set_user_memory_region(region) };
            }
            // SAFETY: the mapping was created by map_region with this length
            // and KVM no longer maps it.
            unsafe { libc::munmap(map.host, map.len) };
        }
    }
}

/// Maps VFIO region `index` when VFIO allows an mmap of all of it (no
/// sparse areas) and it is whole pages; None (the BAR traps) otherwise.
fn map_region(device: &VfioDevice, index: u32, slot: u32) -> Option<BarMapping> {
    let size = device.get_region_size(index);
    let mmap = device.get_region_flags(index) & VFIO_REGION_INFO_FLAG_MMAP != 0;
    let sparse = device
        .get_region_caps(index)
        .iter()
        .any(|c| matches!(c, VfioRegionInfoCap::SparseMmap(_)));
    if !mmap || sparse || size == 0 || size % 4096 != 0 {
        return None;
    }
    let len = usize::try_from(size).ok()?;
    let offset = libc::off_t::try_from(device.get_region_offset(index)).ok()?;
    // SAFETY: a fresh shared mapping of the device fd at the region's
    // offset; the result is checked before use.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            device.as_raw_fd(),
            offset,
        )
    };
    (host != libc::MAP_FAILED).then_some(BarMapping {
        host,
        len,
        slot,
        at: None,
    })
}

/// The config dword at `offset` as VFIO reports it.
fn config_dword(device: &VfioDevice, offset: u64) -> u32 {
    let mut bytes = [0xff; 4];
    device.region_read(VFIO_PCI_CONFIG_REGION_INDEX, &mut bytes, offset);
    u32::from_le_bytes(bytes)
}

/// `data.len()` bytes of `dword` from byte `shift`.
fn copy_from_dword(dword: u32, shift: usize, data: &mut [u8]) {
    let bytes = dword.to_le_bytes();
    match bytes.get(shift..shift + data.len()) {
        Some(b) => data.copy_from_slice(b),
        None => data.fill(0xff),
    }
}

/// `dword` with `data` written at byte `shift`.
fn merge_into_dword(dword: u32, shift: usize, data: &[u8]) -> u32 {
    let mut bytes = dword.to_le_bytes();
    if let Some(b) = bytes.get_mut(shift..shift + data.len()) {
        b.copy_from_slice(data);
    }
    u32::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_dword_config_accesses_read_and_merge_their_bytes_only() {
        let dword = 0x4433_2211;
        let mut two = [0u8; 2];
        copy_from_dword(dword, 2, &mut two);
        assert_eq!(two, [0x33, 0x44]);
        let mut past = [0u8; 2];
        copy_from_dword(dword, 3, &mut past);
        assert_eq!(past, [0xff, 0xff]);
        assert_eq!(merge_into_dword(dword, 1, &[0xaa]), 0x4433_aa11);
        assert_eq!(
            merge_into_dword(dword, 0, &0x0006u16.to_le_bytes()),
            0x4433_0006
        );
        assert_eq!(
            merge_into_dword(dword, 3, &[1, 2]),
            dword,
            "crossing the dword: ignored"
        );
    }
}
