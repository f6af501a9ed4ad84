//! Reporting contained trouble once per occurrence: an event goes to the
//! VMM's sink the first time a (vector, kind) condition is met, and again
//! only after the vector reached the state the model wants. A guest that
//! makes a condition come and go in a loop is held to a rate per (vector,
//! kind) (see `rate.rs`); what is held back is counted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::rate::{TokenBucket, EVENT_BURST, EVENT_INTERVAL};
use crate::stats::Counters;
use crate::{AccelEvent, EventKind, EventSink};

#[derive(Debug)]
pub(crate) struct Reporter {
    device: u32,
    sink: Arc<dyn EventSink>,
    counters: Arc<Counters>,
    /// Conditions reported and not yet cleared.
    open: BTreeSet<(Option<u16>, EventKind)>,
    /// What each (vector, kind) may still report; at most (table size + 1)
    /// x kinds entries.
    budgets: BTreeMap<(Option<u16>, EventKind), TokenBucket>,
}

impl Reporter {
    pub(crate) fn new(device: u32, sink: Arc<dyn EventSink>, counters: Arc<Counters>) -> Self {
        Reporter {
            device,
            sink,
            counters,
            open: BTreeSet::new(),
            budgets: BTreeMap::new(),
        }
    }

    /// Reports `kind` for `vector` unless that condition is already open,
    /// or the pair has used its rate (then it is only counted as
    /// suppressed; the condition still counts as open until cleared).
    pub(crate) fn report(
        &mut self,
        vector: Option<u16>,
        kind: EventKind,
        errno: Option<i32>,
        detail: String,
    ) {
        if !self.open.insert((vector, kind)) {
            return;
        }
        let budget = self
            .budgets
            .entry((vector, kind))
            .or_insert_with(|| TokenBucket::new(EVENT_BURST, EVENT_INTERVAL));
        if !budget.take() {
            self.counters.count_suppressed(kind);
            return;
        }
        self.counters.count_event(kind);
        self.sink.event(AccelEvent {
            device: self.device,
            vector,
            kind,
            errno,
            detail,
        });
    }

    /// The vector is where the model wants it: its conditions are over.
    pub(crate) fn clear_vector(&mut self, vector: u16) {
        self.open.retain(|(v, _)| *v != Some(vector));
    }

    /// A device-wide condition is over.
    pub(crate) fn clear(&mut self, kind: EventKind) {
        self.open.remove(&(None, kind));
    }
}
