//! Kernel VFIO backend: the MSI-X vectors of a device bound to vfio-pci.
//!
//! [`VfioMsixSource`] owns one non-blocking eventfd per vector, created up
//! front and stable for the source's life, and wires them to the device with
//! raw `VFIO_DEVICE_SET_IRQS` calls (vfio-ioctls has no per-vector update and
//! drops errnos). When the host lets userspace map the MSI-X table
//! (`VFIO_REGION_INFO_CAP_MSIX_MAPPABLE` on the table's BAR, and that BAR is
//! mmap-able), the source also masks vectors *at the device* by flipping the
//! Mask bit of the physical Vector Control, and reads the device's own
//! Pending Bit Array.
//!
//! # Host behaviour this backend is built around
//! - vfio-pci has no per-vector MASK/UNMASK action for MSI-X
//!   (`ACTION_MASK` on the MSI-X index fails with ENOTTY), hence the mmap.
//! - The host caches each vector's Vector Control and rewrites it when the
//!   vector is (re)wired by SET_IRQS and when MSI-X is enabled: our masks
//!   are lost then. The source keeps the requested mask of every vector in
//!   userspace and re-applies all of them after every SET_IRQS it issues,
//!   inside the same `&mut self` call, so callers never observe the reset.
//!   Between the kernel's rewrite and the re-apply (a few microseconds) a
//!   masked vector can signal its eventfd; the accelerator, which owns the
//!   guest-visible mask and pending state, must tolerate that.
//! - Region pread/pwrite cannot reach the table (reads return all ones,
//!   writes are dropped); the PBA is readable with pread, which is the
//!   fallback of [`MsixSource::pending`] when the table is not mapped.
//! - With MSI-X disabled the host masks every entry; vectors beyond the
//!   enabled count are never unmasked by us.
//!
//! # Fallback contract
//! When the table cannot be mapped (no MSIX_MAPPABLE capability, no MMAP
//! flag, mmap failure) or after [`VfioMsixSource::unmap_table`],
//! `features().maskable` is false and `mask`/`unmask` return
//! [`Error::MaskUnsupported`]; the accelerator then masks by detaching the
//! irqfd, and the eventfd count is the pending state.

mod device;
mod irq_set;
mod msix_cap;
mod region;
mod table;

pub use self::msix_cap::MsixCapability;
pub use self::region::RegionInfo;

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_NORESIZE, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_ioctls::VfioDevice;
use vmm_sys_util::eventfd::EventFd;

use self::device::{irq_info, open_vfio_device, set_irqs, DeviceHandle};
use self::irq_set::IrqSetBuf;
use self::region::{region_info, region_read, region_write};
use self::table::MsixTableMap;
use crate::{Error, MsixSource, Result, SourceFeatures};

const MSIX_INDEX: u32 = VFIO_PCI_MSIX_IRQ_INDEX;
/// Bytes of PCI config space we parse (the capability list lives in it).
const CONFIG_BYTES: usize = 256;

/// MSI-X vectors of a vfio-pci device, with source-side masking through the
/// physical MSI-X table when the host allows mapping it.
///
/// Construction:
/// - [`VfioMsixSource::open`]: from a sysfs path or BDF; sets up a VFIO
///   container and group itself (legacy type1 container). For tests and
///   tools that own the device.
/// - [`VfioMsixSource::from_vfio_device`]: shares a VMM's
///   `Arc<VfioDevice>` (vfio-ioctls), keeping it alive.
/// - [`VfioMsixSource::from_device_fd`]: any VFIO device fd (container,
///   iommufd cdev, or another VFIO library); the fd is duplicated, so the
///   VMM keeps its own. The device must stay bound while the source lives.
///
/// The VMM must not issue its own SET_IRQS on the MSI-X index while a
/// source is enabled: the source's enabled count and re-applied masks would
/// no longer match the device. Dropping the source disables MSI-X if it is
/// enabled.
///
/// Memory decode: the table mapping is only usable while the device decodes
/// memory; an access with decode disabled (or during a reset) raises SIGBUS.
/// Call [`VfioMsixSource::unmap_table`] before disabling memory decode or
/// resetting the function, and [`VfioMsixSource::map_table`] afterwards.
///
/// ```no_run
/// use std::path::Path;
/// use vfio_vectors::kernel::VfioMsixSource;
/// use vfio_vectors::MsixSource;
///
/// let mut source = VfioMsixSource::open(Path::new("0000:01:00.0"))?;
/// let n = source.vector_count();
/// source.enable(n)?;
/// // Each trigger(v) is also the KVM irqfd of vector v.
/// let _irqfd = source.trigger(0)?;
/// if source.features().maskable {
///     source.mask(0)?; // Vector Control bit 0, through the table mmap
///     let _latched = source.pending(0)?; // the device's own PBA bit
///     source.unmask(0)?; // a latched message is delivered once
/// }
/// source.disable()?;
/// # Ok::<(), vfio_vectors::Error>(())
/// ```
pub struct VfioMsixSource {
    device: DeviceHandle,
    /// sysfs path when known (diagnostics only).
    sysfs_path: Option<PathBuf>,
    irq_flags: u32,
    vector_count: u16,
    triggers: Vec<EventFd>,
    enabled: u16,
    /// The mask each vector should have, as the caller last requested.
    masked: Vec<bool>,
    msix: MsixCapability,
    table_region: RegionInfo,
    pba_region: RegionInfo,
    table: Option<MsixTableMap>,
    /// Why the table is not mapped (None while it is).
    unmapped_reason: Option<String>,
}

impl fmt::Debug for VfioMsixSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfioMsixSource")
            .field("device_fd", &self.device.raw_fd())
            .field("sysfs_path", &self.sysfs_path)
            .field("irq_flags", &self.irq_flags)
            .field("vector_count", &self.vector_count)
            .field("enabled", &self.enabled)
            .field("msix", &self.msix)
            .field("table_mapped", &self.table.is_some())
            .field("unmapped_reason", &self.unmapped_reason)
            .finish_non_exhaustive()
    }
}

impl VfioMsixSource {
    /// Opens the vfio-pci device at `sysfs_path_or_bdf`
    /// (`/sys/bus/pci/devices/0000:00:02.0` or `0000:00:02.0`): creates a
    /// VFIO container (type1 IOMMU, no DMA mappings, no KVM device), adds
    /// the device's group, gets the device fd, then sets up the source as
    /// [`VfioMsixSource::from_vfio_device`] does.
    ///
    /// Fails with [`Error::Vfio`] when VFIO refuses (device not bound to
    /// vfio-pci, group not viable, /dev/vfio missing), [`Error::NoMsix`]
    /// when the device has no MSI-X.
    pub fn open(sysfs_path_or_bdf: &Path) -> Result<Self> {
        let (path, device) = open_vfio_device(sysfs_path_or_bdf)?;
        let mut source = Self::from_vfio_device(device)?;
        source.sysfs_path = Some(path);
        Ok(source)
    }

    /// Sets up the source on a VMM's vfio-ioctls device. The source holds a
    /// clone of the `Arc` and issues its ioctls on the device fd.
    pub fn from_vfio_device(device: Arc<VfioDevice>) -> Result<Self> {
        Self::from_handle(DeviceHandle::Vfio(device))
    }

    /// Sets up the source on an already open VFIO device fd, which is
    /// duplicated (`F_DUPFD_CLOEXEC`): the caller keeps ownership of `fd`.
    pub fn from_device_fd(fd: BorrowedFd<'_>) -> Result<Self> {
        let owned = fd
            .try_clone_to_owned()
            .map_err(|e| Error::Vfio(format!("dup of the device fd: {e}")))?;
        Self::from_handle(DeviceHandle::Fd(owned))
    }

    fn from_handle(device: DeviceHandle) -> Result<Self> {
        let fd = device.raw_fd();
        let irq = irq_info(fd, MSIX_INDEX)?;
        if irq.count == 0 {
            return Err(Error::NoMsix);
        }
        let config_region = region_info(fd, VFIO_PCI_CONFIG_REGION_INDEX)?;
        let mut config = vec![0u8; CONFIG_BYTES];
        region_read(fd, &config_region, 0, &mut config)?;
        let msix = MsixCapability::find(&config)?.ok_or(Error::NoMsix)?;
        let table_region = region_info(fd, u32::from(msix.table_bir))?;
        let pba_region = if msix.pba_bir == msix.table_bir {
            table_region.clone()
        } else {
            region_info(fd, u32::from(msix.pba_bir))?
        };
        // The kernel's count is authoritative (it sized its vector array
        // from Table Size). A table or PBA outside its BAR only disables
        // source-side masking (see `try_map_table`): the vectors still work.
        let vector_count = u16::try_from(irq.count.min(2048)).unwrap_or(2048);
        let triggers = (0..vector_count)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(Error::EventFd))
            .collect::<Result<Vec<_>>>()?;
        let mut source = VfioMsixSource {
            device,
            sysfs_path: None,
            irq_flags: irq.flags,
            vector_count,
            triggers,
            enabled: 0,
            masked: vec![false; usize::from(vector_count)],
            msix,
            table_region,
            pba_region,
            table: None,
            unmapped_reason: None,
        };
        source.map_table();
        Ok(source)
    }

    /// The MSI-X capability of the device (table and PBA location).
    pub fn msix_capability(&self) -> &MsixCapability {
        &self.msix
    }

    /// `VFIO_IRQ_INFO_*` flags of the MSI-X index as the kernel reported.
    pub fn irq_flags(&self) -> u32 {
        self.irq_flags
    }

    /// The device fd the source issues its ioctls on.
    pub fn device_fd(&self) -> RawFd {
        self.device.raw_fd()
    }

    /// The vfio-ioctls device, when the source was built from one (or
    /// opened it).
    pub fn vfio_device(&self) -> Option<&Arc<VfioDevice>> {
        match &self.device {
            DeviceHandle::Vfio(device) => Some(device),
            DeviceHandle::Fd(_) => None,
        }
    }

    /// Whether the physical table is mapped (source-side masking works).
    pub fn table_mapped(&self) -> bool {
        self.table.is_some()
    }

    /// Why the table is not mapped, when it is not.
    pub fn unmapped_reason(&self) -> Option<&str> {
        self.unmapped_reason.as_deref()
    }

    /// Maps the page range of the table's BAR that covers the MSI-X table
    /// (and the PBA when it is in the same BAR), enabling source-side
    /// masking, and re-applies the requested masks of enabled vectors.
    /// Returns whether the table is mapped; a host without MSIX_MAPPABLE,
    /// a BAR without MMAP or a failing mmap leave it unmapped (see
    /// [`VfioMsixSource::unmapped_reason`]). Call it after
    /// [`VfioMsixSource::unmap_table`] once the device decodes memory again.
    pub fn map_table(&mut self) -> bool {
        if self.table.is_some() {
            return true;
        }
        let mapped = MsixTableMap::map(
            self.device.raw_fd(),
            &self.msix,
            &self.table_region,
            &self.pba_region,
            self.vector_count,
        );
        match mapped {
            Ok(table) => {
                self.table = Some(table);
                self.unmapped_reason = None;
                self.reapply_masks();
                true
            }
            Err(reason) => {
                self.unmapped_reason = Some(reason);
                false
            }
        }
    }

    /// Drops the table mapping: masks and unmasks then fail with
    /// [`Error::MaskUnsupported`] and `features().maskable` is false, so the
    /// accelerator falls back to irqfd detach. Call it before the device is
    /// reset or its memory decode is disabled (accessing the mapping then
    /// would raise SIGBUS). Masks already written to the device stay until
    /// the host rewrites Vector Control (next SET_IRQS or MSI-X enable) or
    /// the reset clears them: the caller should treat every vector it had
    /// masked as masked by irqfd detach from now on. The requested masks
    /// are kept and re-applied by [`VfioMsixSource::map_table`].
    pub fn unmap_table(&mut self) {
        if self.table.take().is_some() {
            self.unmapped_reason = Some("unmapped by the VMM (unmap_table)".to_string());
        }
    }

    /// Re-wires one enabled vector to its own eventfd with a single
    /// VFIO_DEVICE_SET_IRQS (start = `vector`, count 1), as a VMM does after
    /// a host affinity change and as peers do on every mask toggle; then
    /// re-applies the masks. A pending message is delivered to the eventfd.
    pub fn reassign(&mut self, vector: u16) -> Result<()> {
        if vector >= self.enabled {
            return Err(Error::VectorOutOfRange {
                vector,
                count: self.enabled,
            });
        }
        let fd = self.triggers[usize::from(vector)].as_raw_fd();
        let result = self.set_irqs(&IrqSetBuf::eventfds(MSIX_INDEX, u32::from(vector), &[fd]));
        self.reapply_masks();
        result
    }

    /// Asks the kernel to signal `vector`'s trigger eventfd itself
    /// (SET_IRQS ACTION_TRIGGER | DATA_BOOL): a loopback that proves the
    /// eventfd is wired to the vector without involving the device.
    pub fn signal_loopback(&self, vector: u16) -> Result<()> {
        if vector >= self.enabled {
            return Err(Error::VectorOutOfRange {
                vector,
                count: self.enabled,
            });
        }
        self.set_irqs(&IrqSetBuf::bools(MSIX_INDEX, u32::from(vector), &[true]))
    }

    /// Grows the enabled set to `count` by disabling MSI-X and re-enabling
    /// it with all `count` vectors: what [`MsixSource::grow`] does on a
    /// NORESIZE device, callable on any device. Messages the device raises
    /// while MSI-X is disabled are lost (the function drops them; the
    /// host frees its IRQs), and the host masks every entry at disable and
    /// unmasks the wired ones at enable: the requested masks are re-applied
    /// right after, the accelerator re-delivers nothing on its own.
    pub fn grow_by_reenable(&mut self, count: u16) -> Result<()> {
        self.check_count(count)?;
        if count <= self.enabled {
            return Ok(());
        }
        self.enable_fresh(count)
    }

    /// Reads `buf.len()` bytes at `offset` of VFIO region `index` (BARs
    /// 0..=5, config space 7) with pread.
    pub fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let region = region_info(self.device.raw_fd(), index)?;
        region_read(self.device.raw_fd(), &region, offset, buf)
    }

    /// Writes `buf` at `offset` of VFIO region `index` with pwrite.
    pub fn region_write(&self, index: u32, offset: u64, buf: &[u8]) -> Result<()> {
        let region = region_info(self.device.raw_fd(), index)?;
        region_write(self.device.raw_fd(), &region, offset, buf)
    }

    /// VFIO_DEVICE_GET_REGION_INFO of region `index`, with capability IDs.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        region_info(self.device.raw_fd(), index)
    }

    fn check_vector(&self, vector: u16) -> Result<()> {
        if vector >= self.vector_count {
            return Err(Error::VectorOutOfRange {
                vector,
                count: self.vector_count,
            });
        }
        Ok(())
    }

    fn check_count(&self, count: u16) -> Result<()> {
        if count == 0 || count > self.vector_count {
            return Err(Error::InvalidCount {
                count,
                max: self.vector_count,
            });
        }
        Ok(())
    }

    fn set_irqs(&self, buf: &IrqSetBuf) -> Result<()> {
        set_irqs(self.device.raw_fd(), buf)
    }

    /// Disables (when enabled) and enables MSI-X with vectors `0..count`.
    fn enable_fresh(&mut self, count: u16) -> Result<()> {
        if self.enabled > 0 {
            self.disable()?;
        }
        let fds: Vec<RawFd> = self.triggers[..usize::from(count)]
            .iter()
            .map(AsRawFd::as_raw_fd)
            .collect();
        self.set_irqs(&IrqSetBuf::eventfds(MSIX_INDEX, 0, &fds))?;
        self.enabled = count;
        self.reapply_masks();
        Ok(())
    }

    /// Writes the Mask bit of every enabled vector the caller has masked.
    /// Unmasked vectors are left as the host set them: the host may hold a
    /// vector masked for its own reasons, and writing 0 would override it.
    fn reapply_masks(&mut self) {
        let Some(table) = self.table.as_mut() else {
            return;
        };
        for vector in 0..self.enabled {
            if self.masked[usize::from(vector)] {
                table.set_masked(vector, true);
            }
        }
    }

    fn set_mask(&mut self, vector: u16, masked: bool) -> Result<()> {
        self.check_vector(vector)?;
        let Some(table) = self.table.as_mut() else {
            return Err(Error::MaskUnsupported { vector });
        };
        self.masked[usize::from(vector)] = masked;
        // A vector that is not enabled has no host IRQ behind its entry;
        // its mask is applied when it gets enabled.
        if vector < self.enabled {
            table.set_masked(vector, masked);
        }
        Ok(())
    }

    /// The Vector Control dword of `vector` as the device holds it now
    /// (None when the table is not mapped). For diagnostics and tests.
    pub fn vector_control(&self, vector: u16) -> Option<u32> {
        self.table.as_ref()?.vector_control(vector)
    }
}

impl MsixSource for VfioMsixSource {
    fn vector_count(&self) -> u16 {
        self.vector_count
    }

    fn features(&self) -> SourceFeatures {
        SourceFeatures {
            maskable: self.table.is_some(),
            dynamic: self.irq_flags & VFIO_IRQ_INFO_NORESIZE == 0,
        }
    }

    fn trigger(&self, vector: u16) -> Result<&EventFd> {
        self.check_vector(vector)?;
        Ok(&self.triggers[usize::from(vector)])
    }

    /// One SET_IRQS (start 0, `count` eventfds). An enabled source is
    /// disabled first: a SET_IRQS on enabled MSI-X would only rewire the
    /// named vectors and keep the others.
    fn enable(&mut self, count: u16) -> Result<()> {
        self.check_count(count)?;
        self.enable_fresh(count)
    }

    fn enabled_count(&self) -> u16 {
        self.enabled
    }

    /// Dynamic devices: one SET_IRQS per added vector while MSI-X stays
    /// enabled; the enabled count advances per vector, so after an error it
    /// tells how far it got. NORESIZE devices: see
    /// [`VfioMsixSource::grow_by_reenable`] for the window this opens.
    fn grow(&mut self, count: u16) -> Result<()> {
        self.check_count(count)?;
        if count <= self.enabled {
            return Ok(());
        }
        if self.enabled == 0 || !self.features().dynamic {
            return self.enable_fresh(count);
        }
        for vector in self.enabled..count {
            let fd = self.triggers[usize::from(vector)].as_raw_fd();
            self.set_irqs(&IrqSetBuf::eventfds(MSIX_INDEX, u32::from(vector), &[fd]))?;
            self.enabled = vector + 1;
            self.reapply_masks();
        }
        Ok(())
    }

    fn disable(&mut self) -> Result<()> {
        if self.enabled == 0 {
            return Ok(());
        }
        self.set_irqs(&IrqSetBuf::disable(MSIX_INDEX))?;
        self.enabled = 0;
        Ok(())
    }

    fn mask(&mut self, vector: u16) -> Result<()> {
        self.set_mask(vector, true)
    }

    fn unmask(&mut self, vector: u16) -> Result<()> {
        self.set_mask(vector, false)
    }

    fn suspend_masking(&mut self) {
        self.unmap_table();
    }

    fn resume_masking(&mut self) -> bool {
        self.map_table()
    }

    /// The device's Pending bit: through the mapping when the PBA is in it,
    /// else with a pread of the PBA dword (vfio-pci lets pread reach the
    /// PBA, unlike the table).
    fn pending(&self, vector: u16) -> Result<bool> {
        self.check_vector(vector)?;
        if let Some(bit) = self.table.as_ref().and_then(|t| t.pending(vector)) {
            return Ok(bit);
        }
        let offset = u64::from(self.msix.pba_offset) + u64::from(vector / 32) * 4;
        let mut dword = [0u8; 4];
        region_read(self.device.raw_fd(), &self.pba_region, offset, &mut dword)?;
        Ok(u32::from_le_bytes(dword) & (1 << (vector % 32)) != 0)
    }
}

impl Drop for VfioMsixSource {
    fn drop(&mut self) {
        // Best effort: leave no host IRQ wired to eventfds about to close.
        let _ = self.disable();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn open_without_vfio_reports_a_vfio_error() {
        if Path::new("/dev/vfio/vfio").exists() {
            return;
        }
        let err = VfioMsixSource::open(Path::new("0000:ff:1f.7")).unwrap_err();
        assert!(matches!(err, Error::Vfio(_)), "{err}");
    }
}
