//! [`PeerRig`]: a guest with one device handled by a peer model.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use irqfd_routes::{GsiRouting, IrqchipRoutes, Irqfd};
use msix_hypervisor::{CountingVm, KvmVm, MsixVm};
use testvm::{TestVm, VmConfig};
use vfio_vectors::software::SoftwareSource;
use vmm_sys_util::eventfd::EventFd;

use msix_rig::clock::ClockedMmio;
use msix_rig::rig::BAR_GPA;
use msix_rig::Error;

use crate::device::PeerDevice;
use crate::model::PeerModel;
use crate::pba_page::PbaPage;
use crate::state::{lock, PeerState, PeerVector};
use crate::table;
use crate::worker::Worker;
use crate::{crosvm, qemu};

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
