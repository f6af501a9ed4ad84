//! [`AccelDebug`]: a read-only look inside one accelerator, for tests and
//! tools. A VMM drives an accelerator without it.

use irqfd_routes::{Gsi, RouteState};
use msix_model::{MsixState, TableEntry};

use crate::vector::MaskPath;
use crate::{MsixAccelerator, Result};

/// What [`MsixAccelerator::debug`] shows. Each call takes the device's lock
/// for its own look.
#[derive(Debug)]
pub struct AccelDebug<'a> {
    accel: &'a MsixAccelerator,
}

fn out_of_range(vector: u16, table_size: u16) -> crate::Error {
    crate::Error::Model(msix_model::Error::VectorOutOfRange { vector, table_size })
}

impl<'a> AccelDebug<'a> {
    pub(crate) fn new(accel: &'a MsixAccelerator) -> Self {
        AccelDebug { accel }
    }

    fn with_vector<T>(
        &self,
        vector: u16,
        f: impl FnOnce(&crate::device::Device, &crate::vector::Vector) -> T,
    ) -> Result<T> {
        let device = self.accel.lock();
        let v = device
            .vectors
            .get(usize::from(vector))
            .ok_or_else(|| out_of_range(vector, device.model.table_size()))?;
        Ok(f(&device, v))
    }

    /// How `vector` is kept from delivering, or that it delivers.
    pub fn mask_path(&self, vector: u16) -> Result<MaskPath> {
        self.with_vector(vector, |_, v| v.mask)
    }

    /// Whether `vector`'s irqfd is attached.
    pub fn irqfd_attached(&self, vector: u16) -> Result<bool> {
        self.with_vector(vector, |_, v| v.irqfd.is_attached())
    }

    /// `vector`'s GSI, if it has one now.
    pub fn gsi(&self, vector: u16) -> Result<Option<Gsi>> {
        self.with_vector(vector, |_, v| v.gsi)
    }

    /// Where `vector`'s route stands in the VM's table.
    pub fn route(&self, vector: u16) -> Result<RouteState> {
        self.with_vector(vector, |d, _| d.route_state(vector))
    }

    /// Whether a failed step left `vector` to be retried at the next exit.
    pub fn retrying(&self, vector: u16) -> Result<bool> {
        self.with_vector(vector, |_, v| v.retry)
    }

    /// Whether `vector` is effectively masked (entry, Function Mask or
    /// MSI-X disabled).
    pub fn is_masked(&self, vector: u16) -> Result<bool> {
        Ok(self.accel.lock().model.is_masked(vector)?)
    }

    /// The table entry of `vector` as the model holds it.
    pub fn entry(&self, vector: u16) -> Result<TableEntry> {
        Ok(self.accel.lock().model.entry(vector)?)
    }

    /// The model's full state (what the guest can observe of the function).
    pub fn model_state(&self) -> MsixState {
        self.accel.lock().model.snapshot()
    }

    /// Whether source masking is in use now.
    pub fn source_masking(&self) -> bool {
        self.accel.lock().source_masking
    }

    /// Unmasks absorbed (their eventfds drained) that wait for a route
    /// commit to share (see `AccelConfig::unmask_coalescing`).
    pub fn unmasks_waiting(&self) -> usize {
        self.accel.lock().absorbed.len()
    }

    /// Unmask ioeventfds retired and not yet undone.
    pub fn retired_pending(&self) -> usize {
        self.accel.lock().placement.retired().pending()
    }

    /// The unmask eventfd `vector` has in the current placement, if any.
    pub fn unmask_fd(&self, vector: u16) -> Option<std::os::unix::io::RawFd> {
        use std::os::unix::io::AsRawFd;
        self.accel
            .lock()
            .placement
            .unmask_events()
            .get(vector)
            .map(|fd| fd.as_raw_fd())
    }

    /// Retired unmask ioeventfds the hypervisor refused to undo (kept, and
    /// tried again at the next placement).
    pub fn retired_stuck(&self) -> usize {
        self.accel.lock().placement.retired().stuck()
    }

    /// Whether a retired unmask ioeventfd is being undone right now.
    pub fn retiring(&self) -> bool {
        self.accel.lock().placement.retired().in_flight()
    }
}
