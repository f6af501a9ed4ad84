//! Peer VMMs' MSI-X handling on the real device: handlers that trap the
//! whole table (every guest access exits) and drive VFIO and KVM the way
//! QEMU and crosvm do, run on the same guest, device and checks as our
//! accelerator, so the cost of a Linux mask cycle can be compared side by
//! side. Facts from the public sources (read, not copied):
//!
//! - [`PeerKind::QemuLike`]: QEMU `hw/vfio/pci.c`. On a guest mask,
//!   `vfio_msix_vector_release` keeps the KVM irqfd and route but points the
//!   VFIO trigger at a userspace eventfd with VFIO_DEVICE_SET_IRQS; a
//!   message arriving there while masked sets the emulated Pending bit
//!   (`vfio_msi_interrupt` -> `msix_notify`). On unmask,
//!   `vfio_msix_vector_do_use` updates the MSI route and commits the routing
//!   table (`kvm_irqchip_commit_routes`: KVM_SET_GSI_ROUTING on every
//!   unmask) and points the trigger back at the irqfd's eventfd; then
//!   `hw/pci/msix.c` (`msix_handle_mask_update`) sends a pending message
//!   once, which with the in-kernel irqchip is a KVM_SIGNAL_MSI.
//! - [`PeerKind::CrosvmLike`]: crosvm `devices/src/pci/vfio_pci.rs`
//!   (`write_bar`: a table write whose mask bit flips returns
//!   `MsixStatus::EntryChanged`, and `msix_vector_update` points the
//!   vector's VFIO trigger with VFIO_DEVICE_SET_IRQS at a userspace event
//!   while masked, at the irqfd while unmasked) and `devices/src/pci/msix.rs`
//!   (`write_msix_table`: the route is added at the first unmask and updated
//!   only when address or data change; on unmask a set Pending bit is sent
//!   by signalling the irqfd, an eventfd write).
//!
//! Both handle the guest's accesses synchronously in the exit (QEMU and
//! crosvm read the userspace eventfd from another thread; here the PBA and
//! the unmask read its count directly), which only flatters them. Bring-up
//! (MSI-X enable wiring every vector to its userspace eventfd, first-use
//! route and irqfd) is simplified: only the mask and unmask paths are
//! measured.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use irqfd_routes::{
    eventfd_drain, eventfd_pending, Gsi, GsiRouting, IrqchipRoutes, Irqfd, MsiRouteTable,
};
use msix_hypervisor::{CountingVm, IoctlCounters, KvmVm, MsixVm};
use msix_model::{Change, MsixModel};
use serde::Serialize;
use testvm::{MmioHandler, TestVm, VmConfig};
use vmm_sys_util::eventfd::EventFd;

use crate::cycle::{CycleTarget, Work};
use crate::device::AssignedDevice;
use crate::handler::Handler;
use crate::nic::Nic;
use crate::rig::{accel_config, MSIX_ENABLE, VCPUS, WATCHDOG};
use crate::vfio_irqs::VfioIrqs;
use crate::Error;
use msix_rig::rig::BAR_GPA;

/// Which peer VMM's handling a [`PeerRig`] follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PeerKind {
    /// QEMU: trigger re-pointed on every mask and unmask, routes committed
    /// on every unmask, a pending message sent with KVM_SIGNAL_MSI.
    QemuLike,
    /// crosvm: trigger re-pointed on every mask and unmask, route updated
    /// only when the message changes, a pending message sent by an eventfd
    /// write.
    CrosvmLike,
}

impl PeerKind {
    /// Both peers, in report order.
    pub const ALL: [PeerKind; 2] = [PeerKind::QemuLike, PeerKind::CrosvmLike];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::QemuLike => "qemu-like",
            PeerKind::CrosvmLike => "crosvm-like",
        }
    }
}

/// One vector: its GSI and irqfd, the irqfd's eventfd (the VFIO trigger
/// while unmasked) and the userspace eventfd (the trigger while masked).
#[derive(Debug)]
struct PeerVector {
    gsi: Gsi,
    irqfd: Irqfd,
    kvm_fd: EventFd,
    user_fd: EventFd,
    /// Route and irqfd set up (at the first unmask).
    in_use: bool,
}

#[derive(Debug)]
struct PeerState {
    msix: MsixModel,
    routing: GsiRouting,
    vfio: Arc<VfioIrqs>,
    hv: Arc<dyn MsixVm>,
    vectors: Vec<PeerVector>,
    enabled: bool,
    /// The first error met while handling a guest access.
    last_error: Option<String>,
}

/// A trapped MSI-X table handled the way a peer VMM handles it, on the
/// device's real VFIO interrupts.
#[derive(Debug)]
pub struct PeerDevice {
    kind: PeerKind,
    table_gpa: u64,
    table_len: u64,
    pba_gpa: u64,
    pba_len: u64,
    state: Mutex<PeerState>,
}

impl PeerState {
    fn vector(&mut self, v: u16) -> Result<&mut PeerVector, Error> {
        self.vectors
            .get_mut(usize::from(v))
            .ok_or_else(|| Error::Check(format!("vector {v} out of range")))
    }

    /// Stages `v`'s current message and sends the whole routing table,
    /// even when nothing changed: neither peer compares before committing.
    fn commit_route(&mut self, v: u16) -> Result<(), Error> {
        let message = self
            .msix
            .entry(v)
            .map_err(|e| Error::Check(format!("entry {v}: {e}")))?
            .message();
        let gsi = self.vector(v)?.gsi;
        self.routing.stage(
            gsi,
            irqfd_routes::MsiMessage::new(message.address, message.data),
        )?;
        self.hv
            .set_gsi_routing(&self.routing.entries())
            .map_err(|e| Error::Check(format!("KVM_SET_GSI_ROUTING: {e}")))?;
        Ok(())
    }

    fn apply(&mut self, kind: PeerKind, changes: &[Change]) -> Result<(), Error> {
        for change in changes {
            match *change {
                Change::Enabled => {
                    // Every entry is masked when MSI-X is enabled: every
                    // vector starts on its userspace eventfd.
                    let fds: Vec<i32> =
                        self.vectors.iter().map(|v| v.user_fd.as_raw_fd()).collect();
                    self.vfio.enable(&fds)?;
                    self.enabled = true;
                }
                Change::Disabled => {
                    self.vfio.disable()?;
                    self.enabled = false;
                    for v in &mut self.vectors {
                        v.irqfd.detach(&v.kvm_fd)?;
                        v.in_use = false;
                    }
                }
                Change::Masked { vector } => {
                    let fd = self.vector(vector)?.user_fd.as_raw_fd();
                    self.vfio.point(vector, fd)?;
                }
                Change::Unmasked { vector } => self.unmask(kind, vector)?,
                Change::MessageChanged { vector, .. } => {
                    // crosvm updates an in-use vector's route on any change;
                    // QEMU picks the message up at the next unmask.
                    if kind == PeerKind::CrosvmLike && self.enabled && self.vector(vector)?.in_use {
                        self.commit_route(vector)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn unmask(&mut self, kind: PeerKind, v: u16) -> Result<(), Error> {
        let first_use = !self.vector(v)?.in_use;
        if kind == PeerKind::QemuLike || first_use {
            self.commit_route(v)?;
        }
        if first_use {
            let vector = self.vector(v)?;
            vector.irqfd.attach(&vector.kvm_fd, vector.gsi)?;
            vector.in_use = true;
        }
        let vector = self.vector(v)?;
        let pending = eventfd_drain(&vector.user_fd)? > 0;
        let kvm_fd = vector.kvm_fd.as_raw_fd();
        match kind {
            PeerKind::QemuLike => {
                self.vfio.point(v, kvm_fd)?;
                if pending {
                    let message = self
                        .msix
                        .entry(v)
                        .map_err(|e| Error::Check(format!("entry {v}: {e}")))?
                        .message();
                    let msi = irqfd_routes::MsiMessage::new(message.address, message.data);
                    self.hv
                        .signal_msi(&msi)
                        .map_err(|e| Error::Check(format!("KVM_SIGNAL_MSI: {e}")))?;
                }
            }
            PeerKind::CrosvmLike => {
                if pending {
                    self.vector(v)?.kvm_fd.write(1).map_err(|e| Error::Device {
                        what: "signal of the irqfd".into(),
                        source: e,
                    })?;
                }
                self.vfio.point(v, kvm_fd)?;
            }
        }
        Ok(())
    }

    /// PBA bits: masked vectors whose userspace eventfd holds a message.
    fn read_pba(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (byte, value) in data.iter_mut().enumerate() {
            for bit in 0..8u64 {
                let Ok(v) = u16::try_from((offset + byte as u64) * 8 + bit) else {
                    continue;
                };
                let Some(vector) = self.vectors.get(usize::from(v)) else {
                    continue;
                };
                let masked = self.msix.is_masked(v).unwrap_or(false);
                if masked && eventfd_pending(&vector.user_fd).unwrap_or(false) {
                    *value |= 1 << bit;
                }
            }
        }
    }
}

impl Drop for PeerState {
    fn drop(&mut self) {
        if self.enabled {
            let _ = self.vfio.disable();
        }
        for v in &mut self.vectors {
            let _ = v.irqfd.detach(&v.kvm_fd);
        }
    }
}

impl PeerDevice {
    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // Every update leaves the state consistent between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MmioHandler for PeerDevice {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            self.lock().msix.read_table(addr - self.table_gpa, data);
            true
        } else if (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr) {
            self.lock().read_pba(addr - self.pba_gpa, data);
            true
        } else {
            false
        }
    }

    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            let mut state = self.lock();
            let changes = state.msix.write_table(addr - self.table_gpa, data);
            if let Err(e) = state.apply(self.kind, &changes) {
                state.last_error.get_or_insert_with(|| e.to_string());
            }
            true
        } else {
            // PBA writes are ignored (read-only); other addresses are not ours.
            (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr)
        }
    }
}

/// A guest with the assigned device handled by a peer: the counterpart of
/// [`super::rig::HwRig`]. Fields drop guest first (it holds the device as
/// its MMIO handler), then the device, which disables MSI-X.
#[derive(Debug)]
pub struct PeerRig {
    /// The guest.
    pub vm: TestVm,
    /// The peer's table handler.
    pub device: Arc<PeerDevice>,
    ioctls: Arc<IoctlCounters>,
    vfio: Arc<VfioIrqs>,
}

impl PeerRig {
    /// Boots a guest and wires `device` to a `kind` handler, with the same
    /// guest-visible layout as our accelerator's.
    pub fn new(device: &AssignedDevice, kind: PeerKind) -> Result<PeerRig, Error> {
        let vm = TestVm::new(VmConfig {
            vcpus: VCPUS,
            watchdog: WATCHDOG,
            ..VmConfig::default()
        })?;
        let layout = accel_config(&device.msix, msix_accel::Policy::Trap, false);
        let msix = MsixModel::new(layout.table_size, layout.table, layout.pba)
            .map_err(|e| Error::Check(format!("MSI-X model: {e}")))?;
        let hv = Arc::new(CountingVm::new(KvmVm::new(vm.vm().clone())));
        let ioctls = hv.counters();
        let routing = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)?;
        let vfio = Arc::new(VfioIrqs::new(device.vfio_device().as_raw_fd())?);
        let vectors = (0..layout.table_size)
            .map(|_| {
                let eventfd =
                    || EventFd::new(libc::EFD_NONBLOCK).map_err(vfio_vectors::Error::EventFd);
                Ok(PeerVector {
                    gsi: routing.allocate()?,
                    irqfd: Irqfd::new(hv.clone()),
                    kvm_fd: eventfd()?,
                    user_fd: eventfd()?,
                    in_use: false,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let table_gpa = BAR_GPA + u64::from(layout.table.offset);
        let pba_gpa = BAR_GPA + u64::from(layout.pba.offset);
        let device = Arc::new(PeerDevice {
            kind,
            table_gpa,
            table_len: msix.table_len(),
            pba_gpa,
            pba_len: msix.pba_len(),
            state: Mutex::new(PeerState {
                msix,
                routing,
                vfio: vfio.clone(),
                hv: hv.clone(),
                vectors,
                enabled: false,
                last_error: None,
            }),
        });
        vm.set_mmio_handler(device.clone());
        Ok(PeerRig {
            vm,
            device,
            ioctls,
            vfio,
        })
    }
}

impl Drop for PeerRig {
    fn drop(&mut self) {
        self.vm.stop_vcpus();
    }
}

impl CycleTarget for PeerRig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn entry(&self, e: u16, offset: u64) -> u64 {
        self.device.table_gpa + u64::from(e) * 16 + offset
    }
    fn work(&self) -> Work {
        Work::from_kvm(self.ioctls.snapshot(), self.vfio.calls(), 0)
    }
    fn settle(&self) -> Result<(), Error> {
        match &self.device.lock().last_error {
            Some(e) => Err(Error::Check(format!("{}: {e}", self.device.kind.name()))),
            None => Ok(()),
        }
    }
}

impl Handler for PeerRig {
    fn source_enabled(&self) -> Option<u16> {
        None
    }

    fn enable_msix(&self) -> Result<(), Error> {
        let mut state = self.device.lock();
        let changes = state.msix.write_message_control(MSIX_ENABLE);
        state.apply(self.device.kind, &changes)
    }
    fn pba_gpa(&self) -> u64 {
        self.device.pba_gpa
    }
    fn check_wired(&self, vector: u16) -> Result<(), String> {
        let state = self.device.lock();
        let v = state
            .vectors
            .get(usize::from(vector))
            .ok_or("vector out of range")?;
        if !v.in_use || !v.irqfd.is_attached() {
            return Err(format!(
                "route set up {}, irqfd attached {}",
                v.in_use,
                v.irqfd.is_attached()
            ));
        }
        Ok(())
    }
    fn check_masked(&self, vector: u16) -> Result<(), String> {
        let state = self.device.lock();
        if !state.msix.is_masked(vector).map_err(|e| e.to_string())? {
            return Err("the model does not hold it masked".into());
        }
        Ok(())
    }
    fn held(&self, _nic: &Nic, vector: u16) -> Result<bool, Error> {
        let state = self.device.lock();
        let v = state
            .vectors
            .get(usize::from(vector))
            .ok_or_else(|| Error::Check(format!("vector {vector} out of range")))?;
        Ok(eventfd_pending(&v.user_fd)?)
    }
    fn held_where(&self) -> &'static str {
        "the userspace eventfd the trigger points at while masked"
    }
    fn still_pending(&self, _nic: &Nic, vector: u16) -> Result<Option<String>, Error> {
        Ok(if self.held(_nic, vector)? {
            Some("its userspace eventfd still holds a message".into())
        } else {
            None
        })
    }
    fn exits_per_cycle(&self) -> u64 {
        // Every access to the trapped table exits: mask, flush read, unmask.
        3
    }
    fn errors(&self) -> Result<(), String> {
        self.settle().map_err(|e| e.to_string())
    }
}
