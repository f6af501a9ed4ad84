//! Retrying held vectors without the guest: a back-off timer.
//!
//! A vector whose delivery failed for a cause outside the guest (no GSI
//! free, a routing commit or an irqfd assignment refused, a source that
//! failed) holds its interrupts and is marked for a retry. Every exit
//! retries it, but a driver in steady state may never exit again for that
//! device: the retry must not wait for the guest. So whenever a plan leaves
//! vectors marked, this timer is armed, first after [`RETRY_FIRST`], then
//! doubling up to [`RETRY_MAX`] while the cause persists; the servicer
//! watches its fd and calls [`crate::MsixAccelerator::retry_held`]. A cause
//! that clears anywhere (GSIs freed by another device, the hypervisor
//! accepting a commit again) is thus picked up within [`RETRY_MAX`] of
//! clearing, and a retry that succeeds delivers what the vector held, once.
//! Once no vector waits, the timer stands down and the back-off restarts.
//! Retired unmask ioeventfds KVM refused to undo (stuck) keep it armed the
//! same way: each expiry queues them for the servicer again.
//!
//! What a retry costs is bounded: one plan over the marked vectors (at most
//! the table's size), so at most one `KVM_SET_GSI_ROUTING` per
//! [`RETRY_MAX`] per device while a cause persists. A vector whose message
//! the hypervisor refused is not marked: only the guest can change that.

use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Duration;

use vmm_sys_util::timerfd::TimerFd;

/// The first retry comes this long after a failure.
pub const RETRY_FIRST: Duration = Duration::from_millis(1);

/// The longest a marked vector waits between two retries.
pub const RETRY_MAX: Duration = Duration::from_millis(64);

/// The retry timer of one device.
#[derive(Debug)]
pub(crate) struct RetryTimer {
    /// None when the host refused a timer: retries then wait for exits.
    timer: Option<TimerFd>,
    next: Duration,
    armed: bool,
}

impl RetryTimer {
    pub(crate) fn new() -> Self {
        let timer = TimerFd::new().ok().filter(|t| {
            let fd = t.as_raw_fd();
            // SAFETY: fcntl on a timerfd this struct owns, changing only its
            // file status flags (non-blocking: a servicer woken for an
            // expiry that a later stand-down cleared must not block).
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
            }
        });
        RetryTimer {
            timer,
            next: RETRY_FIRST,
            armed: false,
        }
    }

    /// The fd a servicer watches (readable when a retry is due).
    pub(crate) fn fd(&self) -> Option<RawFd> {
        self.timer.as_ref().map(|t| t.as_raw_fd())
    }

    /// After a plan ran: arms the timer when vectors wait for a retry (and
    /// it is not armed yet), else stands it down.
    pub(crate) fn update(&mut self, waiting: bool) {
        let Some(timer) = self.timer.as_mut() else {
            return;
        };
        if !waiting {
            if self.armed {
                // A timer that cannot be cleared only fires once more for
                // nothing: the retry then finds no vector to retry.
                let _ = timer.clear();
            }
            self.armed = false;
            self.next = RETRY_FIRST;
            return;
        }
        if self.armed {
            return;
        }
        if timer.reset(self.next, None).is_ok() {
            self.armed = true;
            self.next = (self.next * 2).min(RETRY_MAX);
        }
    }

    /// The timer fired (or the servicer was woken for it): consumes the
    /// expiry; the retry that follows arms it again if needed.
    pub(crate) fn fired(&mut self) {
        if let Some(timer) = self.timer.as_mut() {
            // Non-blocking: nothing to consume is fine.
            let _ = timer.wait();
        }
        self.armed = false;
    }
}
