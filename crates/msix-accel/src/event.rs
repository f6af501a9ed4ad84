//! Events: what an accelerator tells its VMM about trouble it contained.
//!
//! A guest's malformed message or a failing hypervisor call never becomes a
//! panic or a VM-wide failure: the vector concerned holds its interrupts (or
//! keeps its last good state), the accelerator stays consistent, and the
//! VMM learns what happened through an [`EventSink`] it chooses, once per
//! occurrence (a condition that persists is not reported again until it has
//! cleared).

use std::fmt;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EventKind {
    /// The hypervisor refused the route of the vector's message (a guest
    /// wrote a message it does not accept). The vector holds its interrupts
    /// as pending and delivers them once the guest writes a message the
    /// hypervisor accepts.
    RouteRejected,
    /// No GSI was free for the vector; it holds its interrupts as pending
    /// until one is.
    GsiExhausted,
    /// Committing routes failed for a reason that is not one of this
    /// device's messages (the VM's table itself is refused); the vectors
    /// that needed the commit hold their interrupts and retry.
    CommitFailed,
    /// Masking the vector failed both at the source and by detaching its
    /// irqfd: it may deliver while masked. Retried at every exit.
    MaskFailed,
    /// Unmasking the vector failed (irqfd attach or source unmask): it holds
    /// its interrupts as pending. Retried at every exit.
    UnmaskFailed,
    /// The interrupt source failed to enable, disable or mask.
    SourceFailed,
    /// The table shadow the guest reads could not be updated.
    ShadowFailed,
    /// `fast` or `auto` (the default) was asked for but no servicer
    /// serves this device: the placement runs under `strict` (exact, one
    /// more exit per cycle than `fast`; `auto` does not measure). The
    /// detail names the policy configured.
    FastPathUnserviced,
    /// The placement runs below its policy because the hypervisor refused
    /// the table's memslot (now `trap`) or an unmask ioeventfd (the
    /// remaining entries unmask with an exit).
    PlacementDegraded,
    /// The hypervisor refused to delete the table's memslot: the shadow it
    /// maps stays mapped (leaked) rather than unmapped under the guest.
    MemslotStuck,
    /// Undoing a retired unmask ioeventfd failed (it stays registered at an
    /// address this device no longer decodes).
    TeardownFailed,
    /// Reading the fast path's unmask eventfds failed; absorbed unmasks
    /// wait for the next exit.
    FastPathFailed,
    /// The guest moves the table faster than the unmask ioeventfds its
    /// earlier placements retired are undone: the backlog reached its cap
    /// ([`crate::MsixAccelerator::retired_cap`]), so placements run under
    /// `strict` (no new ioeventfd) until the servicer has caught up and
    /// places the table again under `fast`. Only this device is slowed;
    /// the VMM's fds stay bounded.
    RelocationThrottled,
    /// Under `auto`, a measurement of this host chose the mechanism in
    /// the detail (`fast` or `strict`, with the medians it weighed):
    /// reported at the first measurement and whenever the choice changes.
    /// Not trouble: the VMM's record of what runs.
    PolicyChosen,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: [EventKind; 14] = [
        EventKind::RouteRejected,
        EventKind::GsiExhausted,
        EventKind::CommitFailed,
        EventKind::MaskFailed,
        EventKind::UnmaskFailed,
        EventKind::SourceFailed,
        EventKind::ShadowFailed,
        EventKind::FastPathUnserviced,
        EventKind::PlacementDegraded,
        EventKind::MemslotStuck,
        EventKind::TeardownFailed,
        EventKind::FastPathFailed,
        EventKind::RelocationThrottled,
        EventKind::PolicyChosen,
    ];

    /// Whether the event reports a problem: every kind but `auto`'s record
    /// of its choice ([`EventKind::PolicyChosen`]), which a VMM or a check
    /// that expects no trouble lets through.
    pub fn is_trouble(self) -> bool {
        self != EventKind::PolicyChosen
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccelEvent {
    /// The device (`AccelConfig::device_id`).
    pub device: u32,
    /// The vector concerned, if the event is about one.
    pub vector: Option<u16>,
    /// What happened.
    pub kind: EventKind,
    /// The errno of the failed call, when there is one.
    pub errno: Option<i32>,
    /// The failure in words, for logs.
    pub detail: String,
}

impl fmt::Display for AccelEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {}", self.device)?;
        if let Some(v) = self.vector {
            write!(f, " vector {v}")?;
        }
        write!(f, ": {:?}", self.kind)?;
        if let Some(e) = self.errno {
            write!(f, " (errno {e})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Where a VMM receives events: a channel, a log, its own callback.
///
/// Called with the device's lock held: it must not call back into the
/// accelerator, and should be quick (queue, count, log).
pub trait EventSink: Send + Sync + fmt::Debug {
    /// One event happened.
    fn event(&self, event: AccelEvent);
}

impl EventSink for mpsc::Sender<AccelEvent> {
    fn event(&self, event: AccelEvent) {
        // A VMM that dropped its receiver no longer wants events.
        let _ = self.send(event);
    }
}

impl EventSink for mpsc::SyncSender<AccelEvent> {
    fn event(&self, event: AccelEvent) {
        // Never block a vCPU on a full channel: the counters still count it.
        let _ = self.try_send(event);
    }
}

/// Drops every event (the accelerator's counters still count them).
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoreEvents;

impl EventSink for IgnoreEvents {
    fn event(&self, _event: AccelEvent) {}
}

/// Keeps every event in memory, for tests and tools.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<Vec<AccelEvent>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the events logged so far.
    pub fn take(&self) -> Vec<AccelEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A copy of the events logged so far.
    pub fn events(&self) -> Vec<AccelEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl EventSink for EventLog {
    fn event(&self, event: AccelEvent) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}
