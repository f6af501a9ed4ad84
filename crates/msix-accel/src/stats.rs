//! Statistics of one accelerator: exits by kind, fast-path events, mask
//! paths, and events by kind.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::EventKind;

macro_rules! stats {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters (atomics), shared by the vCPU threads and the service thread.
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $( pub(crate) $name: AtomicU64, )*
            events: [AtomicU64; EventKind::ALL.len()],
            suppressed: [AtomicU64; EventKind::ALL.len()],
        }

        /// A copy of the counters at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct AccelStats {
            $( $(#[$doc])* pub $name: u64, )*
            /// Events reported, by [`EventKind`] (index: `kind as usize`).
            pub events: [u64; EventKind::ALL.len()],
            /// Events held back by the rate limit (per vector and kind, see
            /// [`crate::EVENT_BURST`]), by [`EventKind`].
            pub suppressed: [u64; EventKind::ALL.len()],
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> AccelStats {
                AccelStats {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                    events: std::array::from_fn(|i| self.events[i].load(Ordering::Relaxed)),
                    suppressed: std::array::from_fn(|i| self.suppressed[i].load(Ordering::Relaxed)),
                }
            }
        }

        impl AccelStats {
            /// The counts accumulated since `earlier`.
            pub fn since(&self, earlier: &AccelStats) -> AccelStats {
                AccelStats {
                    $( $name: self.$name.wrapping_sub(earlier.$name), )*
                    events: std::array::from_fn(|i| self.events[i].wrapping_sub(earlier.events[i])),
                    suppressed: std::array::from_fn(|i| {
                        self.suppressed[i].wrapping_sub(earlier.suppressed[i])
                    }),
                }
            }
        }
    };
}

stats! {
    /// Table reads that exited to userspace.
    table_read_exits,
    /// Table writes of a Vector Control dword with the Mask bit set.
    mask_write_exits,
    /// Table writes of a Vector Control dword with the Mask bit clear.
    unmask_write_exits,
    /// Table writes of address or data dwords.
    message_write_exits,
    /// Other table writes (qwords, sub-dword, misaligned, past the end).
    other_table_write_exits,
    /// PBA reads.
    pba_read_exits,
    /// PBA writes (ignored: the PBA is read-only).
    pba_write_exits,
    /// Unmasks absorbed by an ioeventfd and serviced by the service thread
    /// or drained at the start of a synchronous exit.
    fast_path_unmasks,
    /// Times a [`crate::FastPathSubscriber`] (and so a
    /// [`crate::ServiceThread`]) was dispatched for this device: one per
    /// fd of the device found readable (absorbed unmasks, retired
    /// ioeventfds, the coalescing, deferral and retry timers), whether
    /// the event loop slept until then or found it in a non-blocking look
    /// (a service thread polling for unmasks, an event manager run with a
    /// zero timeout). Not a count of thread wake-ups: one wake-up may
    /// dispatch several fds, and a look while polling dispatches without
    /// one. 0 while none of those fds became readable: device interrupts
    /// never make them so.
    servicer_dispatches,
    /// Service passes after which a [`crate::ServiceThread`] polled for
    /// the next unmask (mask traffic and a non-zero window).
    unmask_poll_windows,
    /// Unmasks a polling service thread found (it was not woken for them).
    unmasks_caught_polling,
    /// Non-blocking looks a service thread made while polling for this
    /// device's unmasks: 0 without mask traffic.
    unmask_poll_iterations,
    /// The polling window now, in nanoseconds (a level, not a count).
    unmask_poll_window_ns,
    /// Times the servicer left absorbed unmasks to the guest's next exit
    /// (see [`crate::AccelConfig::unmask_deferral`]).
    unmask_deferrals,
    /// Deferrals that ended at their limit
    /// ([`crate::UNMASK_DEFERRAL_MAX_WINDOWS`] windows) while the guest's
    /// mask exits still came, rather than a window after the last one.
    unmask_deferral_limits,
    /// Vectors masked at the source (irqfd left attached).
    masks_at_source,
    /// Vectors masked by detaching their irqfd.
    masks_by_irqfd_detach,
    /// Vectors unmasked.
    unmasks,
    /// Unmasks that found a pending interrupt and delivered it.
    pending_deliveries,
    /// Source masks refused at run time (mapping gone) that fell back to irqfd detach.
    source_mask_fallbacks,
    /// Retired unmask ioeventfds undone.
    ioeventfds_retired,
    /// Plans from the guest's exits or the retry timer whose route commit
    /// was deferred because the device had used its commit rate (see
    /// [`crate::COMMIT_BURST`]): the vectors concerned were held for the
    /// retry timer.
    commits_deferred,
    /// The longest the device's lock was held by one step of a placement,
    /// BAR move or removal, in nanoseconds: what a vCPU using the device
    /// may wait for it.
    relocation_lock_max_ns,
    /// The longest memslot call of a placement, BAR move or removal, in
    /// nanoseconds (made without the device's lock; the hypervisor may
    /// still stall vCPUs while it drops the old mapping).
    relocation_slot_max_ns,
    /// Measurements `auto` made of this host (see
    /// [`crate::AccelConfig::auto_recheck`] for their bound).
    auto_measurements,
    /// Measurements after which `auto` chose `fast`.
    auto_chose_fast,
    /// Measurements after which `auto` chose `strict` (a failed or
    /// overrun measurement included).
    auto_chose_strict,
    /// The last measurement's median wake round trip, in nanoseconds (a
    /// level; 0: none completed).
    auto_wake_ns,
    /// The last measurement's median in-thread apply, in nanoseconds (a
    /// level; 0: none completed).
    auto_inline_ns,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Raises `counter` to `value` if it is lower.
    pub(crate) fn record_max(counter: &AtomicU64, value: u64) {
        counter.fetch_max(value, Ordering::Relaxed);
    }

    pub(crate) fn count_event(&self, kind: EventKind) {
        self.events[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_suppressed(&self, kind: EventKind) {
        self.suppressed[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

impl AccelStats {
    /// Events of `kind` reported.
    pub fn events_of(&self, kind: EventKind) -> u64 {
        self.events[kind as usize]
    }

    /// Events of every kind reported.
    pub fn total_events(&self) -> u64 {
        self.events.iter().sum()
    }

    /// Events of `kind` held back by the rate limit.
    pub fn suppressed_of(&self, kind: EventKind) -> u64 {
        self.suppressed[kind as usize]
    }

    /// Events of every kind held back by the rate limit.
    pub fn total_suppressed(&self) -> u64 {
        self.suppressed.iter().sum()
    }
}
