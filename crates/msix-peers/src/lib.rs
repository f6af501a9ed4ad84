//! Models of what peer VMMs do with a VFIO device's MSI-X table, run as
//! alternative MMIO handlers over the same test guest, KVM routing, irqfds
//! and software source as our accelerator, so that they execute exactly the
//! same guest programs.
//!
//! Each model follows the public source of its VMM (read, not copied; the
//! files and functions are named in each model's module and in
//! `docs/performance.md`): its own table state and the conditions under
//! which it acts, and the calls it then makes: KVM ioctls through the
//! counted hypervisor, and `VFIO_DEVICE_SET_IRQS` through the software
//! source ([`SoftwareSource::repoint`] for a trigger re-point, enable and
//! disable for the device's MSI-X), counted as `set_irqs`.
//!
//! - [`PeerModel::QemuLike`] ([`qemu`]): trigger re-pointed to a userspace
//!   eventfd on mask and back on unmask, route committed on every unmask,
//!   a masked vector's fire handled by the main loop, PBA served from the
//!   device mapping without an exit until a masked vector fires.
//! - [`PeerModel::CloudHypervisorLike`] ([`cloud_hypervisor`]): per-vector
//!   mask not acted on, route committed on every unmask, Function Mask
//!   enforced by deassigning every irqfd, PBA read from the device.
//! - [`PeerModel::DragonballLike`] ([`dragonball`]): irqfd deassigned on
//!   mask and assigned on unmask, the whole routing table rewritten on every
//!   address/data write, every irqfd assigned and deassigned at enable.
//! - [`PeerModel::CrosvmLike`] ([`crosvm`]): trigger re-pointed on mask and
//!   unmask, route updated only when the message changes.
//!
//! Where the real VMM handles an eventfd in another thread (QEMU's main
//! loop, crosvm's VFIO worker), so does the model ([`worker`]); all of a
//! device's work runs under one lock, as QEMU's under its big lock.

pub mod cloud_hypervisor;
mod conformance;
pub mod crosvm;
pub mod dragonball;
pub mod qemu;
pub mod table;
pub mod worker;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use irqfd_routes::{eventfd_pending, Gsi, GsiRouting, IrqchipRoutes, Irqfd, MsiRouteTable};
use kvm_msix::TableShadow;
use msix_hypervisor::{CountingVm, KvmVm, MsixVm};
use serde::Serialize;
use testvm::{MmioHandler, TestVm, VmConfig};
use vfio_vectors::software::SoftwareSource;
use vfio_vectors::MsixSource;
use vmm_sys_util::eventfd::EventFd;

use msix_rig::clock::ClockedMmio;
use msix_rig::rig::{BAR_GPA, TABLE_MEMSLOT};
use msix_rig::Error;
use table::RawTable;
use worker::Worker;

/// Which peer VMM's MSI-X handling a [`PeerDevice`] models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PeerModel {
    /// QEMU (`hw/vfio/pci.c`, `hw/pci/msix.c`).
    QemuLike,
    /// cloud-hypervisor (`pci/src/msix.rs`, `pci/src/vfio.rs`,
    /// `vmm/src/interrupt.rs`).
    CloudHypervisorLike,
    /// Dragonball (`dbs-pci` `msix.rs`, `dbs-interrupt` `kvm/msi_irq.rs`).
    DragonballLike,
    /// crosvm (`devices/src/pci/vfio_pci.rs`, `devices/src/pci/msix.rs`).
    CrosvmLike,
}

impl PeerModel {
    /// Every peer model, in report order.
    pub const ALL: [PeerModel; 4] = [
        PeerModel::QemuLike,
        PeerModel::CloudHypervisorLike,
        PeerModel::DragonballLike,
        PeerModel::CrosvmLike,
    ];

    /// The name used in reports (`qemu-like`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PeerModel::QemuLike => "qemu-like",
            PeerModel::CloudHypervisorLike => "cloud-hypervisor-like",
            PeerModel::DragonballLike => "dragonball-like",
            PeerModel::CrosvmLike => "crosvm-like",
        }
    }

    /// Whether a masked vector's messages go to a userspace eventfd that a
    /// thread of the VMM handles.
    fn has_worker(self) -> bool {
        matches!(self, PeerModel::QemuLike | PeerModel::CrosvmLike)
    }
}

impl fmt::Display for PeerModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One vector's VMM-side state.
#[derive(Debug)]
pub struct PeerVector {
    /// Its GSI, once the model allocated one.
    pub gsi: Option<Gsi>,
    /// The KVM irqfd on the source's trigger eventfd.
    pub irqfd: Irqfd,
    /// The userspace eventfd a masked vector's trigger points at (QEMU's
    /// `interrupt`, crosvm's `msix_interrupt_evt`).
    pub user_fd: Arc<EventFd>,
    /// QEMU: `msix_vector_use` was called (the vector may be notified).
    pub in_use: bool,
}

/// The device page a PBA read reaches without an exit: mapped read-only
/// while the model lets the guest read the device's PBA directly.
#[derive(Debug)]
pub struct PbaPage {
    hv: Arc<dyn MsixVm>,
    gpa: u64,
    page: TableShadow,
    mapped: bool,
}

impl PbaPage {
    fn new(hv: Arc<dyn MsixVm>, gpa: u64, len: u64) -> Result<PbaPage, Error> {
        let page = TableShadow::new(len).map_err(|e| Error::Check(format!("PBA page: {e}")))?;
        Ok(PbaPage {
            hv,
            gpa,
            page,
            mapped: false,
        })
    }

    /// Maps the page (KVM_SET_USER_MEMORY_REGION) unless mapped.
    pub fn map(&mut self) -> Result<(), Error> {
        if !self.mapped {
            // SAFETY: the pages belong to `self.page`, which lives as long
            // as `self`; `unmap` (also called by Drop) deletes the slot
            // before they are released.
            unsafe {
                self.hv.set_readonly_memory(
                    TABLE_MEMSLOT,
                    self.gpa,
                    self.page.size(),
                    self.page.host_address(),
                )
            }
            .map_err(|e| Error::Check(format!("PBA memslot: {e}")))?;
            self.mapped = true;
        }
        Ok(())
    }

    /// Deletes the slot unless already deleted: reads of the PBA exit.
    pub fn unmap(&mut self) -> Result<(), Error> {
        if self.mapped {
            // SAFETY: size 0 deletes the slot; no mapping is handed to KVM.
            unsafe { self.hv.set_readonly_memory(TABLE_MEMSLOT, self.gpa, 0, 0) }
                .map_err(|e| Error::Check(format!("PBA memslot: {e}")))?;
            self.mapped = false;
        }
        Ok(())
    }
}

impl Drop for PbaPage {
    fn drop(&mut self) {
        let _ = self.unmap();
    }
}

/// Everything a model keeps and acts on, under the device's one lock.
#[derive(Debug)]
pub struct PeerState {
    /// The model.
    pub model: PeerModel,
    /// The table as the model stores it.
    pub table: RawTable,
    /// The VM's calls, counted.
    pub hv: Arc<dyn MsixVm>,
    /// The VM's routing table (GSIs and the routes a commit sends).
    pub routing: GsiRouting,
    /// The device's interrupt source.
    pub source: SoftwareSource,
    /// Per vector state.
    pub vectors: Vec<PeerVector>,
    /// VFIO_DEVICE_SET_IRQS-like calls made.
    pub set_irqs: u64,
    /// Pending bits the VMM keeps itself (QEMU's `msix_pba`, crosvm's
    /// `pba_entries`).
    pub pba: Vec<bool>,
    /// QEMU's `vdev->msix->pending`: masked vectors that fired through
    /// QEMU, for which it emulates the PBA.
    pub vfio_pending: Vec<bool>,
    /// QEMU: the device's PBA page, mapped while not emulated.
    pub pba_page: Option<PbaPage>,
    /// Message Control as the guest last wrote it.
    pub message_control: u16,
    /// The first error met while handling a guest access (a guest cannot
    /// make the device panic; the bench reports it instead).
    pub last_error: Option<String>,
}

impl PeerState {
    /// Vector `v`'s state.
    pub fn vector(&mut self, v: u16) -> Result<&mut PeerVector, Error> {
        self.vectors
            .get_mut(usize::from(v))
            .ok_or_else(|| Error::Check(format!("vector {v} out of range")))
    }

    /// The message entry `v` holds.
    pub fn message(&self, v: u16) -> irqfd_routes::MsiMessage {
        let (address, data) = self.table.message(v);
        irqfd_routes::MsiMessage::new(address, data)
    }

    /// `v`'s GSI, allocated now if it has none (no ioctl).
    pub fn gsi(&mut self, v: u16) -> Result<Gsi, Error> {
        if let Some(gsi) = self.vector(v)?.gsi {
            return Ok(gsi);
        }
        let gsi = self.routing.allocate()?;
        self.vector(v)?.gsi = Some(gsi);
        Ok(gsi)
    }

    /// Puts `v`'s current message in the table a commit sends.
    pub fn stage(&mut self, v: u16) -> Result<(), Error> {
        let gsi = self.gsi(v)?;
        let message = self.message(v);
        self.routing.stage(gsi, message)?;
        Ok(())
    }

    /// Leaves `v`'s route out of the table a commit sends.
    pub fn unstage(&mut self, v: u16) -> Result<(), Error> {
        if let Some(gsi) = self.vector(v)?.gsi {
            self.routing.unstage(gsi)?;
        }
        Ok(())
    }

    /// One KVM_SET_GSI_ROUTING of the whole table, changed or not: none of
    /// the peers compares before committing.
    pub fn commit(&self) -> Result<(), Error> {
        self.hv
            .set_gsi_routing(&self.routing.entries())
            .map_err(|e| Error::Check(format!("KVM_SET_GSI_ROUTING: {e}")))
    }

    /// Assigns `v`'s irqfd (KVM_IRQFD) on the source's trigger, unless
    /// assigned.
    pub fn attach(&mut self, v: u16) -> Result<(), Error> {
        let gsi = self.gsi(v)?;
        let source = self.source.clone();
        self.vector(v)?.irqfd.attach(source.trigger(v)?, gsi)?;
        Ok(())
    }

    /// Deassigns `v`'s irqfd, if assigned.
    pub fn detach(&mut self, v: u16) -> Result<(), Error> {
        let source = self.source.clone();
        self.vector(v)?.irqfd.detach(source.trigger(v)?)?;
        Ok(())
    }

    /// One VFIO_DEVICE_SET_IRQS for vector `v`: its trigger re-pointed to
    /// the userspace eventfd (`to_user`) or back to the irqfd's eventfd.
    pub fn set_trigger(&mut self, v: u16, to_user: bool) -> Result<(), Error> {
        let to = if to_user {
            Some(self.vector(v)?.user_fd.clone())
        } else {
            None
        };
        self.source.repoint(v, to)?;
        self.set_irqs += 1;
        Ok(())
    }

    /// VFIO_DEVICE_SET_IRQS enabling the device's MSI-X (`calls` of them).
    pub fn enable_device(&mut self, calls: u64) -> Result<(), Error> {
        let count = self.source.vector_count();
        self.source.enable(count)?;
        self.set_irqs += calls;
        Ok(())
    }

    /// VFIO_DEVICE_SET_IRQS disabling the device's MSI-X.
    pub fn disable_device(&mut self) -> Result<(), Error> {
        self.source.disable()?;
        self.set_irqs += 1;
        Ok(())
    }

    /// Sends `v`'s message from userspace (KVM_SIGNAL_MSI), as QEMU's
    /// `msix_notify` does with the in-kernel irqchip.
    pub fn signal_msi(&self, v: u16) -> Result<(), Error> {
        self.hv
            .signal_msi(&self.message(v))
            .map_err(|e| Error::Check(format!("KVM_SIGNAL_MSI: {e}")))
    }

    /// Writes `v`'s irqfd eventfd (an injection through KVM, as crosvm's
    /// and cloud-hypervisor's `trigger`).
    pub fn signal_irqfd(&self, v: u16) -> Result<(), Error> {
        self.source.trigger(v)?.write(1).map_err(|e| Error::Device {
            what: format!("signal of vector {v}'s irqfd"),
            source: e,
        })
    }

    /// Whether some userspace eventfd still holds a message its thread has
    /// not handled.
    fn user_fds_pending(&self) -> bool {
        self.vectors
            .iter()
            .any(|v| eventfd_pending(&v.user_fd).unwrap_or(false))
    }
}

/// A trapped MSI-X table handled the way a peer VMM handles it.
#[derive(Debug)]
pub struct PeerDevice {
    model: PeerModel,
    table_gpa: u64,
    table_len: u64,
    pba_gpa: u64,
    pba_len: u64,
    state: Arc<Mutex<PeerState>>,
}

fn lock(state: &Mutex<PeerState>) -> MutexGuard<'_, PeerState> {
    // Every update leaves the state consistent between statements.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn record(state: &mut PeerState, result: Result<(), Error>) {
    if let Err(e) = result {
        state.last_error.get_or_insert_with(|| e.to_string());
    }
}

impl PeerDevice {
    /// The model this device follows.
    pub fn model(&self) -> PeerModel {
        self.model
    }

    /// A config-space write of Message Control (what the VMM's PCI config
    /// handler forwards).
    pub fn write_message_control(&self, value: u16) -> Result<(), Error> {
        let mut state = lock(&self.state);
        state.message_control = value;
        match self.model {
            PeerModel::QemuLike => qemu::write_message_control(&mut state, value),
            PeerModel::CloudHypervisorLike => {
                cloud_hypervisor::write_message_control(&mut state, value)
            }
            PeerModel::DragonballLike => dragonball::write_message_control(&mut state, value),
            PeerModel::CrosvmLike => crosvm::write_message_control(&mut state, value),
        }
    }

    /// Message Control as the guest reads it from config space: the value
    /// it last wrote (0 at reset, Function Mask included, whatever the
    /// model keeps inside: cloud-hypervisor's state starts function-masked
    /// while the device's register reads clear).
    pub fn message_control(&self) -> u16 {
        lock(&self.state).message_control
    }

    /// Guest physical address of the PBA.
    pub fn pba_gpa(&self) -> u64 {
        self.pba_gpa
    }

    /// VFIO_DEVICE_SET_IRQS-like calls made so far.
    pub fn set_irqs(&self) -> u64 {
        lock(&self.state).set_irqs
    }

    /// The first error met while handling a guest access, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.state).last_error.clone()
    }
}

impl MmioHandler for PeerDevice {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            let state = lock(&self.state);
            let offset = addr - self.table_gpa;
            match self.model {
                PeerModel::DragonballLike => state.table.read_bytes(offset, data),
                _ => state.table.read(offset, data),
            }
            true
        } else if (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr) {
            let mut state = lock(&self.state);
            let offset = addr - self.pba_gpa;
            let result = match self.model {
                PeerModel::QemuLike => qemu::read_pba(&state, offset, data),
                PeerModel::CloudHypervisorLike => cloud_hypervisor::read_pba(&state, offset, data),
                PeerModel::DragonballLike => dragonball::read_pba(&state, offset, data),
                PeerModel::CrosvmLike => crosvm::read_pba(&state, offset, data),
            };
            record(&mut state, result);
            true
        } else {
            false
        }
    }

    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            let mut state = lock(&self.state);
            let offset = addr - self.table_gpa;
            let result = match self.model {
                PeerModel::QemuLike => qemu::write_table(&mut state, offset, data),
                PeerModel::CloudHypervisorLike => {
                    cloud_hypervisor::write_table(&mut state, offset, data)
                }
                PeerModel::DragonballLike => dragonball::write_table(&mut state, offset, data),
                PeerModel::CrosvmLike => crosvm::write_table(&mut state, offset, data),
            };
            record(&mut state, result);
            true
        } else {
            // PBA writes are ignored (read-only); other addresses are not ours.
            (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr)
        }
    }
}

/// A guest with one trapped MSI-X device handled by a peer model: the
/// counterpart of [`msix_rig::rig::Rig`]. Fields drop in order: the model's
/// thread, the device, the guest.
#[derive(Debug)]
pub struct PeerRig {
    worker: Option<Worker>,
    /// The device model.
    pub device: Arc<PeerDevice>,
    /// The device's interrupt source (shared with the device).
    pub source: SoftwareSource,
    /// The VM's hypervisor calls, counted.
    pub hv: Arc<CountingVm<KvmVm>>,
    /// The guest.
    pub vm: TestVm,
    /// Guest physical address of the table.
    pub table_gpa: u64,
}

impl PeerRig {
    /// Boots a one-vCPU guest and wires a `vectors`-entry device handled
    /// by `model`.
    pub fn new(model: PeerModel, vectors: u16, watchdog: Duration) -> Result<PeerRig, Error> {
        Self::with_guest(
            model,
            vectors,
            VmConfig {
                vcpus: 1,
                watchdog,
                ..VmConfig::default()
            },
        )
    }

    /// Boots a guest as `guest` says and wires a `vectors`-entry device
    /// handled by `model`.
    pub fn with_guest(model: PeerModel, vectors: u16, guest: VmConfig) -> Result<PeerRig, Error> {
        let vm = TestVm::new(guest)?;
        let hv = Arc::new(CountingVm::new(KvmVm::new(vm.vm().clone())));
        let dyn_hv: Arc<dyn MsixVm> = hv.clone();
        let source = SoftwareSource::new(vectors)?;
        let table_gpa = BAR_GPA;
        // The PBA on the page after the table, as our accelerator lays it out.
        let table_len = u64::from(vectors) * 16;
        let pba_gpa = BAR_GPA + table_len.div_ceil(4096) * 4096;
        let pba_len = u64::from(vectors).div_ceil(64) * 8;
        let routing = GsiRouting::new(dyn_hv.clone(), IrqchipRoutes::X86KernelIrqchip)?;
        let vector_list = (0..vectors)
            .map(|_| {
                Ok(PeerVector {
                    gsi: None,
                    irqfd: Irqfd::new(dyn_hv.clone()),
                    user_fd: Arc::new(
                        EventFd::new(libc::EFD_NONBLOCK).map_err(vfio_vectors::Error::EventFd)?,
                    ),
                    in_use: false,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let pba_page = if model == PeerModel::QemuLike {
            // QEMU disables its PBA region at setup: the guest reads the
            // device's PBA through the BAR mapping, without an exit.
            let mut page = PbaPage::new(dyn_hv.clone(), pba_gpa, pba_len)?;
            page.map()?;
            Some(page)
        } else {
            None
        };
        let count = usize::from(vectors);
        let state = Arc::new(Mutex::new(PeerState {
            model,
            table: table::initial(model, vectors),
            hv: dyn_hv,
            routing,
            source: source.clone(),
            vectors: vector_list,
            set_irqs: 0,
            pba: vec![false; count],
            vfio_pending: vec![false; count],
            pba_page,
            message_control: 0,
            last_error: None,
        }));
        let worker = if model.has_worker() {
            let fds = lock(&state)
                .vectors
                .iter()
                .map(|v| v.user_fd.clone())
                .collect();
            let handler = match model {
                PeerModel::QemuLike => qemu::user_event,
                _ => crosvm::user_event,
            };
            Some(Worker::spawn(state.clone(), fds, handler)?)
        } else {
            None
        };
        let device = Arc::new(PeerDevice {
            model,
            table_gpa,
            table_len,
            pba_gpa,
            pba_len,
            state,
        });
        vm.set_mmio_handler(Arc::new(ClockedMmio::new(device.clone())));
        Ok(PeerRig {
            worker,
            device,
            source,
            hv,
            vm,
            table_gpa,
        })
    }
}

impl Drop for PeerRig {
    fn drop(&mut self) {
        self.vm.stop_vcpus();
    }
}

impl PeerRig {
    /// Waits, bounded by the guest's watchdog, until the model's thread has
    /// handled every message sent to a userspace eventfd, and reports the
    /// first error the model met.
    pub fn settle(&self) -> Result<(), Error> {
        if self.worker.is_some() {
            // The model's thread has handled every message sent to a
            // userspace eventfd (it reads and handles each under the lock).
            let deadline = Instant::now() + self.vm.watchdog();
            while lock(&self.device.state).user_fds_pending() {
                if Instant::now() >= deadline {
                    return Err(Error::Check(format!(
                        "{}: its userspace eventfd thread did not keep up",
                        self.device.model
                    )));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        match self.device.last_error() {
            Some(e) => Err(Error::Check(format!("{}: {e}", self.device.model()))),
            None => Ok(()),
        }
    }
}
