//! Where `auto` meets the accelerator: measuring at a placement when due,
//! counting and reporting the choice, and capping placements by it (the
//! measurement itself is `auto_policy.rs`).

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::Instant;

use kvm_msix::Policy;

use crate::auto_policy::measure;
use crate::stats::Counters;
use crate::{EventKind, MsixAccelerator};

impl MsixAccelerator {
    /// The highest mechanism placements may use now: `auto`'s last choice
    /// (`strict` before its first measurement, which a serviced placement
    /// makes first), `fast` under any other policy (the placement's own
    /// policy caps it further).
    pub(crate) fn auto_choice(&self) -> Policy {
        if self.config.policy != Policy::Auto {
            return Policy::Fast;
        }
        self.auto
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .choice
            .unwrap_or(Policy::Strict)
    }

    /// Under `auto`, with a servicer (without one the placement is
    /// `strict` anyway): measures this host if the last measurement is
    /// [`crate::AccelConfig::auto_recheck`] old or there is none, then
    /// records, counts and reports the choice. Called by a placement
    /// before it takes the device's lock (the probe takes it too), with
    /// the BAR bases' lock held, which serialises measurements.
    pub(crate) fn auto_recheck(&self) {
        if self.config.policy != Policy::Auto || !self.serviced() {
            return;
        }
        let due = {
            let state = self.auto.lock().unwrap_or_else(PoisonError::into_inner);
            state.due(Instant::now(), self.config.auto_recheck)
        };
        if !due {
            return;
        }
        // What a servicer does per unmask before any hypervisor call: take
        // the device's lock and look at the model (nothing is changed).
        let apply = || {
            std::hint::black_box(self.lock().model.message_control());
        };
        let measured = measure(&apply);
        let mut state = self.auto.lock().unwrap_or_else(PoisonError::into_inner);
        state.measured = Some(Instant::now());
        let verdict = measured.map_or(Policy::Strict, |c| c.verdict());
        let choice = match self.config.auto_pinned.unwrap_or(verdict) {
            Policy::Fast => Policy::Fast,
            _ => Policy::Strict,
        };
        let c = &self.counters;
        Counters::bump(&c.auto_measurements);
        Counters::bump(if choice == Policy::Fast {
            &c.auto_chose_fast
        } else {
            &c.auto_chose_strict
        });
        if let Some(m) = measured {
            c.auto_wake_ns.store(m.wake_ns, Ordering::Relaxed);
            c.auto_inline_ns.store(m.inline_ns, Ordering::Relaxed);
        }
        let changed = state.choice != Some(choice);
        state.choice = Some(choice);
        drop(state);
        if changed {
            let why = match (measured, self.config.auto_pinned) {
                (_, Some(_)) => "pinned by AccelConfig::auto_pinned".to_string(),
                (Some(m), None) => format!(
                    "wake round trip {} ns against in-thread apply {} ns (weight {})",
                    m.wake_ns,
                    m.inline_ns,
                    crate::AUTO_EXIT_WEIGHT
                ),
                (None, None) => "the measurement failed or overran its budget".to_string(),
            };
            let mut device = self.lock();
            device.reporter.report(
                None,
                EventKind::PolicyChosen,
                None,
                format!("auto chose {choice}: {why}"),
            );
            // Not a condition that persists: the next change reports again
            // (within the event rate).
            device.reporter.clear(EventKind::PolicyChosen);
        }
    }
}
