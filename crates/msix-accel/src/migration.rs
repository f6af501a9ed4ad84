//! Live migration: [`AccelState`], taken by [`MsixAccelerator::snapshot`]
//! and put back by [`MsixAccelerator::restore`]. The pending interrupts
//! travel in one place, the model's Pending Bit Array, refreshed from the
//! source and the eventfds when the snapshot is taken.

use msix_model::MsixState;
use serde::{Deserialize, Serialize};

use crate::vector::MaskPath;
use crate::{Error, MsixAccelerator, Result};

/// The version [`MsixAccelerator::snapshot`] writes and
/// [`MsixAccelerator::restore`] reads.
pub const ACCEL_STATE_VERSION: u32 = 2;

/// Everything needed to recreate one device's MSI-X state on another VM:
/// the table, Message Control and the Pending Bit Array, whose bits are the
/// interrupts held (masked vectors, or vectors that could not deliver).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelState {
    /// [`ACCEL_STATE_VERSION`] when written by this crate.
    pub version: u32,
    /// The MSI-X model's state; `model.pending` is the one truth for
    /// pending interrupts.
    pub model: MsixState,
}

impl AccelState {
    /// Whether `vector`'s pending bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        self.model
            .pending
            .get(usize::from(vector / 64))
            .is_some_and(|bits| bits & (1 << (vector % 64)) != 0)
    }
}

impl MsixAccelerator {
    /// Captures the state for live migration. Unmasks already absorbed are
    /// serviced first, and the pending bits refreshed from the source, so
    /// the state is the guest's latest.
    pub fn snapshot(&self) -> Result<AccelState> {
        let mut device = self.lock();
        device.service_unmasks();
        for v in 0..device.model.table_size() {
            let pending = device.pending(v)?;
            device.model.set_pending(v, pending)?;
        }
        Ok(AccelState {
            version: ACCEL_STATE_VERSION,
            model: device.model.snapshot(),
        })
    }

    /// Restores a snapshot onto this (freshly created) accelerator: the
    /// model (all-or-nothing: a snapshot of another shape or version is
    /// refused before anything changes), then routes and irqfds exactly as
    /// the effective masks require, then the pending interrupts of held
    /// vectors, which are delivered on their unmask. The routing table is
    /// committed so the hypervisor holds what userspace holds.
    pub fn restore(&self, state: &AccelState) -> Result<()> {
        if state.version != ACCEL_STATE_VERSION {
            return Err(Error::Snapshot(format!(
                "state version {} (this build reads {ACCEL_STATE_VERSION})",
                state.version
            )));
        }
        let mut device = self.lock();
        let changes = device.model.restore(&state.model)?;
        let outcome = device.apply_host(&changes);
        device.sync_all_shadows();
        let mut first = outcome.first_error;
        for v in 0..device.model.table_size() {
            let held = device.vectors[usize::from(v)].mask != MaskPath::Unmasked;
            if state.is_pending(v) && held {
                if let Err(e) = device.make_pending(v) {
                    first.get_or_insert(e);
                }
            }
            device.model.set_pending(v, state.is_pending(v) && held)?;
        }
        if let Err(e) = device.routes.commit() {
            first.get_or_insert(e.into());
        }
        first.map_or(Ok(()), Err)
    }
}

impl crate::device::Device {
    /// Parks an interrupt for a held vector after a restore: in its eventfd
    /// with the irqfd detached, delivered on its unmask.
    pub(crate) fn make_pending(&mut self, vector: u16) -> Result<()> {
        self.hold_on_eventfd(vector, true)
    }
}
