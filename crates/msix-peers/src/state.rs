//! What a model keeps and acts on, under the device's one lock: the table
//! as it stores it, each vector's GSI, irqfd and userspace eventfd, its
//! pending bits, and the calls it makes.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use irqfd_routes::{eventfd_pending, Gsi, GsiRouting, Irqfd, MsiRouteTable};
use msix_hypervisor::MsixVm;
use vfio_vectors::software::SoftwareSource;
use vfio_vectors::MsixSource;
use vmm_sys_util::eventfd::EventFd;

use msix_rig::Error;

use crate::model::PeerModel;
use crate::pba_page::PbaPage;
use crate::table::RawTable;

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
    pub(crate) fn user_fds_pending(&self) -> bool {
        self.vectors
            .iter()
            .any(|v| eventfd_pending(&v.user_fd).unwrap_or(false))
    }
}

pub(crate) fn lock(state: &Mutex<PeerState>) -> MutexGuard<'_, PeerState> {
    // Every update leaves the state consistent between statements.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn record(state: &mut PeerState, result: Result<(), Error>) {
    if let Err(e) = result {
        state.last_error.get_or_insert_with(|| e.to_string());
    }
}
