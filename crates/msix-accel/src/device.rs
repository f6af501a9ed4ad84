//! [`Device`]: everything one accelerator holds under its lock, and the
//! operations every entry point shares (apply a model change, keep the
//! shadow in step, read pending bits). It knows nothing of absorbed
//! unmasks: `absorbed.rs` builds on it, never the other way round.

use std::collections::BTreeSet;
use std::sync::Arc;

use irqfd_routes::{eventfd_pending, RouteState, SharedRouting};
use kvm_msix::{BarRegion, TablePlacement};
use msix_hypervisor::{MsiMessage, MsixVm};
use msix_model::{Change, MsixModel};
use vfio_vectors::MsixSource;

use crate::plan::{plan, Step, VectorView};
use crate::rate::TokenBucket;
use crate::report::Reporter;
use crate::retry::RetryTimer;
use crate::stats::Counters;
use crate::vector::{MaskPath, Vector};
use crate::{EventKind, Result};

#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) model: MsixModel,
    pub(crate) placement: TablePlacement,
    pub(crate) routes: SharedRouting,
    /// The VM, for the one call the executor makes directly: delivering a
    /// held interrupt at its unmask (`KVM_SIGNAL_MSI`).
    pub(crate) vm: Arc<dyn MsixVm>,
    pub(crate) source: Box<dyn MsixSource>,
    pub(crate) vectors: Vec<Vector>,
    pub(crate) source_masking: bool,
    /// Where the PBA decodes (None: its BAR does not). Decoded before the
    /// table, so a PBA on the table's pages reads as PBA.
    pub(crate) pba_gpa: Option<u64>,
    /// Device ID carried by every MSI route (GICv3 ITS); None on x86.
    pub(crate) msi_devid: Option<u32>,
    pub(crate) reporter: Reporter,
    pub(crate) counters: Arc<Counters>,
    /// Unmasks the ioeventfds absorbed (their eventfds drained) that are not
    /// applied yet: each needs a route commit, and they wait to share one
    /// (`absorbed.rs` fills and empties it; this module never looks
    /// at it, so that data flows one way: absorbed -> device).
    pub(crate) absorbed: BTreeSet<u16>,
    /// How many such unmasks wait at most before an exit applies them all.
    pub(crate) unmask_batch: usize,
    /// Retries vectors marked for one without waiting for the guest.
    pub(crate) retry_timer: RetryTimer,
    /// Route commits this device may still make (see `rate.rs`).
    pub(crate) commit_budget: TokenBucket,
}

/// Whether a plan is held to the device's commit rate (see `rate.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Budget {
    /// Guest-driven (an exit, the servicer's look, the retry timer).
    Device,
    /// A call the VMM made.
    Bypass,
}

/// What a run of the executor left behind.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The first failure, for host-API callers that return it.
    pub(crate) first_error: Option<crate::Error>,
}

impl Device {
    /// Decodes a guest physical access into PBA or table, or None when it
    /// is neither's.
    pub(crate) fn decode(&self, gpa: u64) -> Option<BarRegion> {
        if let Some(pba) = self.pba_gpa {
            if gpa >= pba && gpa - pba < self.model.pba_len() {
                return Some(BarRegion::Pba(gpa - pba));
            }
        }
        self.placement.decode(gpa)
    }

    /// The message the hypervisor must route for `vector`: its entry's, with
    /// the device's ID when it has one.
    pub(crate) fn route_message(&self, vector: u16) -> Result<MsiMessage> {
        let m = self.model.entry(vector)?.message();
        Ok(MsiMessage {
            address: m.address,
            data: m.data,
            devid: self.msi_devid,
        })
    }

    /// Where `vector`'s route stands in the VM's table.
    pub(crate) fn route_state(&self, vector: u16) -> RouteState {
        match self.vectors.get(usize::from(vector)).and_then(|v| v.gsi) {
            Some(gsi) => self.routes.state(gsi),
            None => RouteState::None,
        }
    }

    pub(crate) fn view(&self, vector: u16) -> VectorView {
        let masked = self.model.is_masked(vector).unwrap_or(true);
        let delivering = self
            .vectors
            .get(usize::from(vector))
            .is_some_and(|v| v.mask == MaskPath::Unmasked);
        let route_current = match (self.route_state(vector), self.route_message(vector)) {
            (RouteState::Committed(held), Ok(wanted)) => held == wanted,
            _ => false,
        };
        VectorView {
            masked,
            delivering,
            route_current,
        }
    }

    /// Plans and carries out `changes` (plus the vectors left to retry).
    /// Failures are contained and reported; the outcome carries the first.
    /// Vectors still left to retry arm the retry timer (see `retry.rs`).
    pub(crate) fn apply(&mut self, changes: &[Change]) -> Outcome {
        self.apply_with(changes, Budget::Device)
    }

    /// [`Device::apply`] for a call the VMM made (config space, reset,
    /// restore, a full service of absorbed unmasks): not held to the
    /// device's commit rate, and it lets vectors held for the rate deliver.
    pub(crate) fn apply_host(&mut self, changes: &[Change]) -> Outcome {
        self.apply_with(changes, Budget::Bypass)
    }

    fn apply_with(&mut self, changes: &[Change], budget: Budget) -> Outcome {
        let retry: Vec<u16> = self
            .vectors
            .iter()
            .enumerate()
            .filter(|(_, v)| v.retry)
            .map(|(i, _)| i as u16)
            .collect();
        if changes.is_empty() && retry.is_empty() {
            let stuck = self.placement.retired().stuck() > 0;
            self.retry_timer.update(stuck);
            return Outcome::default();
        }
        let mut steps = plan(changes, &retry, |v| self.view(v));
        let deferred = match budget {
            Budget::Device => self.defer_commit_over_budget(&mut steps),
            Budget::Bypass => {
                self.release_throttled(&steps);
                Vec::new()
            }
        };
        let outcome = self.execute(&steps);
        for v in deferred {
            if let Some(vector) = self.vectors.get_mut(usize::from(v)) {
                vector.retry = true;
            }
        }
        let waiting = self.vectors.iter().any(|v| v.retry) || self.placement.retired().stuck() > 0;
        self.retry_timer.update(waiting);
        outcome
    }

    /// The vectors `steps` lets deliver are no longer held for the rate.
    fn release_throttled(&mut self, steps: &[Step]) {
        for step in steps {
            if let Step::Deliver(v) = step {
                if let Some(vector) = self.vectors.get_mut(usize::from(*v)) {
                    vector.throttled = false;
                }
            }
        }
    }

    /// When `steps` would commit routes, or let a vector held for the rate
    /// deliver, and the device has used its commit rate (a guest changing
    /// messages in a loop), the routes are not staged: each vector that
    /// needed one (or is held for the rate) is held instead (none may
    /// deliver through a route other than its entry's) and returned, to be
    /// marked for the retry timer, which commits them together once a
    /// token is back. Only this device waits; the VM-wide table and its
    /// call lock see at most the device's rate.
    fn defer_commit_over_budget(&mut self, steps: &mut Vec<Step>) -> Vec<u16> {
        let throttled =
            |d: &Self, v: u16| d.vectors.get(usize::from(v)).is_some_and(|x| x.throttled);
        let releases: Vec<u16> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Deliver(v) if throttled(self, *v) => Some(*v),
                _ => None,
            })
            .collect();
        let commits = steps.contains(&Step::Commit);
        if !commits && releases.is_empty() {
            return Vec::new();
        }
        if self.commit_budget.take() {
            self.release_throttled(steps);
            return Vec::new();
        }
        let mut deferred: Vec<u16> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Stage(v) => Some(*v),
                _ => None,
            })
            .collect();
        deferred.extend(
            releases
                .iter()
                .filter(|v| !deferred.contains(v))
                .copied()
                .collect::<Vec<_>>(),
        );
        steps.retain(|s| match s {
            Step::Stage(_) | Step::Commit => false,
            Step::Deliver(v) => !deferred.contains(v),
            _ => true,
        });
        // Holds go first, as in any plan (before any route change).
        let holds: Vec<Step> = deferred
            .iter()
            .filter(|&&v| !steps.contains(&Step::Hold(v)))
            .map(|&v| Step::Hold(v))
            .collect();
        steps.splice(0..0, holds);
        for &v in &deferred {
            self.vectors[usize::from(v)].throttled = true;
        }
        Counters::bump(&self.counters.commits_deferred);
        deferred
    }

    /// Copies `vector`'s entry from the model into the shadow the guest
    /// reads; a failure is reported (the shadow is plain memory: it does not
    /// fail unless the vector is out of range).
    pub(crate) fn sync_shadow(&mut self, vector: u16) {
        self.store_shadow(vector, 0);
    }

    /// Shows `vector`'s entry in the shadow with Vector Control's mask bit
    /// clear, while the model still holds it masked: an unmask the guest
    /// wrote whose application waits (see `absorbed.rs`). The next
    /// [`Device::sync_shadow`] of the entry (after the unmask is applied,
    /// which every access that could change the entry does first) makes
    /// shadow and model agree again.
    pub(crate) fn show_unmasked(&mut self, vector: u16) {
        self.store_shadow(vector, 1);
    }

    /// Copies `vector`'s entry into the shadow, its Vector Control with the
    /// bits in `clear` cleared.
    fn store_shadow(&mut self, vector: u16, clear: u32) {
        let result = self
            .model
            .entry(vector)
            .map_err(crate::Error::from)
            .and_then(|e| {
                self.placement
                    .shadow()
                    .store_entry(
                        vector,
                        [
                            e.address_lo,
                            e.address_hi,
                            e.data,
                            e.vector_control & !clear,
                        ],
                    )
                    .map_err(crate::Error::from)
            });
        if let Err(e) = result {
            self.reporter
                .report(Some(vector), EventKind::ShadowFailed, None, e.to_string());
        }
    }

    /// Every entry into the shadow.
    pub(crate) fn sync_all_shadows(&mut self) {
        for v in 0..self.model.table_size() {
            self.sync_shadow(v);
        }
    }

    /// Whether `vector` holds an interrupt: the source's latch or the
    /// eventfd's count, read without consuming it. A vector the source has
    /// not enabled yet (the host holds it masked) latches at the source
    /// whatever its path.
    pub(crate) fn pending_at(&self, vector: u16, path: MaskPath) -> Result<bool> {
        Ok(match path {
            MaskPath::Unmasked => false,
            MaskPath::Source => self.source.pending(vector)?,
            MaskPath::IrqfdDetached => {
                eventfd_pending(self.source.trigger(vector)?)?
                    || (vector >= self.source.enabled_count() && self.source.pending(vector)?)
            }
        })
    }

    /// The PBA bit of `vector`: an interrupt held while it is masked, or
    /// while it cannot deliver (route refused, no GSI).
    pub(crate) fn pending(&self, vector: u16) -> Result<bool> {
        let path = self
            .vectors
            .get(usize::from(vector))
            .map(|v| v.mask)
            .ok_or(msix_model::Error::VectorOutOfRange {
                vector,
                table_size: self.model.table_size(),
            })?;
        self.pending_at(vector, path)
    }

    /// Sets the model's pending bits for the vectors a PBA access covers.
    pub(crate) fn refresh_pending(&mut self, offset: u64, len: usize) -> Result<()> {
        let size = u64::from(self.model.table_size());
        let first = (offset / 8) * 64;
        let last = ((offset + len.max(1) as u64 - 1) / 8) * 64 + 63;
        for v in first..=last.min(size.saturating_sub(1)) {
            let p = self.pending(v as u16)?;
            self.model.set_pending(v as u16, p)?;
        }
        Ok(())
    }
}
