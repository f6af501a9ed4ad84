//! Unmasks the ioeventfds absorbed, and when to apply them.
//!
//! Under `fast` a guest's unmask never exits: its ioeventfd signals the
//! entry's unmask eventfd, and the accelerator applies it later. Applying
//! one costs nothing much when the hypervisor already holds the entry's
//! route (the steady state: a driver masking and unmasking), but the first
//! unmask after a message change needs a `KVM_SET_GSI_ROUTING` of the whole
//! table. Linux brings vectors up one after another (message under mask,
//! then unmask), so applying each at once makes bring-up quadratic. Such
//! unmasks therefore wait to share one commit:
//!
//! - an unmask whose route the hypervisor holds is applied as soon as the
//!   servicer sees it (no added latency);
//! - one that needs a commit waits until the first of: an exit whose access
//!   depends on its entry (a write to that entry, a PBA access, Message
//!   Control, a snapshot, a BAR move: anything whose result the pending
//!   unmask would change), [`crate::AccelConfig::unmask_batch`] of them
//!   waiting, or the coalescing window
//!   ([`crate::AccelConfig::unmask_coalescing`]) after the servicer saw it.
//!   Every commit then takes all of them.
//!
//! While one waits, the guest reads Vector Control = 0 (the shadow shows
//! the unmask from the servicer's first look on: the guest wrote it), but
//! the model and the hypervisor still hold the entry masked, so its
//! interrupts are held as pending (the PBA shows them) and delivered once
//! when it is applied: later, never lost, never while masked.

use std::ops::RangeInclusive;

use crate::device::Device;
use crate::stats::Counters;
use crate::EventKind;

/// Which absorbed unmasks a caller needs applied now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// All of them (the caller's result depends on every entry): a VMM
    /// call or the end of a coalescing window.
    All,
    /// All of them, for a guest's access (a PBA read or write): as `All`,
    /// but held to the device's commit rate like any exit.
    GuestAll,
    /// Those of these entries (an exit's access touches them); the others
    /// are applied too when any of these needs a commit or the batch is full.
    Entries(RangeInclusive<u16>),
    /// Those that need no commit; the others wait (the servicer's wake-up).
    Cheap,
}

impl Device {
    /// Takes the unmasks the ioeventfds absorbed since the last look into
    /// `absorbed` (their eventfds drained), each shown unmasked in the
    /// shadow.
    fn collect_absorbed(&mut self) {
        let mut ready = Vec::new();
        if let Err(e) = self.placement.unmask_events().ready(&mut ready) {
            self.reporter.report(
                None,
                EventKind::FastPathFailed,
                None,
                format!("reading the unmask eventfds: {e}"),
            );
            return;
        }
        self.reporter.clear(EventKind::FastPathFailed);
        for vector in ready {
            if matches!(self.placement.unmask_events().drain(vector), Ok(true)) {
                Counters::bump(&self.counters.fast_path_unmasks);
                self.absorbed.insert(vector);
                // The guest reads back what it wrote from this look on,
                // before anything this look delivers (a delivery the guest
                // may wait for before its read), whether or not the commit
                // it needs still waits. Until it is applied, nothing syncs
                // its shadow from the model: every access that could
                // applies it first.
                self.show_unmasked(vector);
            }
        }
    }

    /// Takes the absorbed unmasks in (as [`Device::collect_absorbed`]) and
    /// says whether one of them must not be deferred: a message is held
    /// behind it (its entry's pending bit is set, or the source cannot
    /// say), or it needs a route commit (it then waits for the coalescing
    /// window, which only a servicer pass arms; an exit on another entry
    /// would not apply it).
    pub(crate) fn look_at_absorbed(&mut self) -> bool {
        self.collect_absorbed();
        self.absorbed
            .iter()
            .any(|&v| self.needs_commit(v) || self.pending(v).unwrap_or(true))
    }

    /// Whether applying `vector`'s unmask needs a route commit.
    fn needs_commit(&self, vector: u16) -> bool {
        !self.view(vector).route_current
    }

    /// Applies the absorbed unmasks `scope` calls for (one commit at most
    /// for all of them) and gives vectors left to retry their chance.
    /// Returns how many were applied.
    pub(crate) fn service(&mut self, scope: Scope) -> usize {
        if matches!(scope, Scope::All | Scope::GuestAll | Scope::Cheap) {
            // The servicer's look (or a full service) covers what a kick
            // announced; an exit's look leaves it for the servicer.
            self.placement.unmask_events().clear_kick();
        }
        self.collect_absorbed();
        let (cheap, costly): (Vec<u16>, Vec<u16>) =
            self.absorbed.iter().partition(|&&v| !self.needs_commit(v));
        let all = match &scope {
            Scope::All | Scope::GuestAll => true,
            Scope::Entries(range) => {
                costly.iter().any(|v| range.contains(v)) || costly.len() >= self.unmask_batch
            }
            Scope::Cheap => costly.len() >= self.unmask_batch,
        };
        let chosen: Vec<u16> = if all {
            self.absorbed.iter().copied().collect()
        } else {
            cheap
        };
        if chosen.is_empty() {
            // Vectors left to retry still get their chance at every exit.
            if self.vectors.iter().any(|v| v.retry) {
                self.apply_scoped(&scope, &[]);
            }
            return 0;
        }
        let mut changes = Vec::new();
        for &vector in &chosen {
            self.absorbed.remove(&vector);
            let offset = u64::from(vector) * 16 + 12;
            changes.extend(self.model.write_table(offset, &0u32.to_le_bytes()));
        }
        self.apply_scoped(&scope, &changes);
        for &v in &chosen {
            self.sync_shadow(v);
        }
        chosen.len()
    }

    /// A full service ([`Scope::All`]: a VMM call, or the end of a
    /// coalescing window, at most one commit per window) is not held to the
    /// device's commit rate; an exit's or the servicer's first look is.
    fn apply_scoped(&mut self, scope: &Scope, changes: &[msix_model::Change]) {
        if *scope == Scope::All {
            self.apply_host(changes);
        } else {
            self.apply(changes);
        }
    }

    /// Services every unmask the ioeventfds absorbed. Returns how many.
    pub(crate) fn service_unmasks(&mut self) -> usize {
        self.service(Scope::All)
    }

    /// Whether absorbed unmasks wait for a commit.
    pub(crate) fn unmasks_waiting(&self) -> bool {
        !self.absorbed.is_empty()
    }

    /// Under `fast`, an unmask write that exited only because its entry has
    /// no ioeventfd (past the fast budget, or one the hypervisor refused) is
    /// treated as if one had absorbed it, when it needs a route commit: it
    /// waits to share one, and the servicer is woken to end the window.
    /// True when the write was taken that way (the caller leaves the model
    /// alone: the unmask is applied later, as an absorbed one).
    pub(crate) fn defer_unmask_write(&mut self, offset: u64, data: &[u8]) -> bool {
        if !self.placement.effective_policy().absorbs_unmask()
            || offset % 16 != 12
            || data != [0, 0, 0, 0]
        {
            return false;
        }
        let vector = (offset / 16) as u16;
        let masked_entry = self
            .model
            .entry(vector)
            .is_ok_and(|e| e.vector_control & 1 == 1);
        if !masked_entry || self.placement.absorbs_unmask(vector) || !self.needs_commit(vector) {
            return false;
        }
        Counters::bump(&self.counters.fast_path_unmasks);
        self.absorbed.insert(vector);
        self.show_unmasked(vector);
        if self.absorbed.len() >= self.unmask_batch {
            self.service(Scope::All);
        } else {
            self.placement.unmask_events().kick();
        }
        true
    }
}
