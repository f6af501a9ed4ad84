//! Leaving absorbed unmasks to the guest's next exit while it cycles its
//! masks (`AccelConfig::unmask_deferral`).
//!
//! Measured on the development host (docs/performance.md), an absorbed
//! unmask costs the guest least when no servicer runs during a burst of
//! mask cycles: each unmask is then applied by the guest's next mask exit,
//! which applies the entry's absorbed unmask before its own access anyway.
//! What costs is the servicer's wake-up on every unmask. So, when an unmask
//! wakes the servicer less than the deferral `D` after the guest's last
//! mask exit, the servicer takes the absorbed unmasks in (each shown
//! unmasked in the shadow: the guest reads back what it wrote from this
//! look on) and, unless a message is held behind one of them, stops
//! watching the unmask eventfds (the device's stable fd is set to no
//! events in its epoll set: further unmasks wake nobody) and arms a timer
//! for `D` after that mask exit. When it fires, and no mask exit came
//! meanwhile for `D`, the servicer watches the unmask eventfds again and
//! applies what is left; otherwise it waits again until `D` after the
//! latest mask exit.
//!
//! The bound: an absorbed unmask that no exit follows is applied at most
//! `D` after the guest's last mask exit (plus the timer's and the
//! scheduler's delay); one the servicer sees later than that is applied at
//! once, and so is one with a message held behind it. During a burst the
//! servicer wakes once per `D` at most, instead of once per unmask.
//! Nothing else changes: every exit still applies the unmasks it depends on
//! first, the PBA is computed from the same state, and the coalescing
//! window of an unmask that needs a route commit starts when the servicer
//! sees it.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

/// A servicer's deferral state for one accelerator.
#[derive(Debug)]
pub(crate) struct Deferral {
    window: Duration,
    timer: Mutex<Option<TimerFd>>,
    muted: AtomicBool,
}

/// What the servicer does with a wake-up on the unmask fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnUnmask {
    /// Apply the unmasks now.
    Apply,
    /// Leave them to the guest's next exit (the fd is muted, the timer
    /// armed).
    Deferred,
}

impl Deferral {
    /// Deferral by `window` (zero: never), with its timer.
    pub(crate) fn new(window: Duration) -> Deferral {
        let timer = if window.is_zero() {
            None
        } else {
            TimerFd::new().ok()
        };
        Deferral {
            window,
            timer: Mutex::new(timer),
            muted: AtomicBool::new(false),
        }
    }

    fn timer(&self) -> std::sync::MutexGuard<'_, Option<TimerFd>> {
        // A timer is a plain handle: no invariant a panic could break.
        self.timer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The timer's fd, when deferring is on.
    pub(crate) fn timer_fd(&self) -> Option<RawFd> {
        self.timer().as_ref().map(|t| t.as_raw_fd())
    }

    /// Deferring is off after all (the timer could not be watched).
    pub(crate) fn disable(&self) {
        *self.timer() = None;
    }

    /// How long to leave unmasks to the guest's exits: until `window`
    /// after the last mask exit, `since_mask` ago. None: apply now (no mask
    /// exit for a whole window: a servicer that woke that late has kept the
    /// unmask waiting long enough).
    fn remaining(&self, since_mask: Option<Duration>) -> Option<Duration> {
        let since = since_mask?;
        (since < self.window).then(|| self.window - since)
    }

    /// The unmask fd woke the servicer, `since_mask` after the guest's last
    /// mask exit: when the guest is cycling its masks, `look` takes the
    /// absorbed unmasks in and says whether a message is held behind one;
    /// if none is, mute the fd and arm the timer.
    pub(crate) fn on_unmask(
        &self,
        ops: &mut EventOps,
        unmask_fd: RawFd,
        since_mask: Option<Duration>,
        look: impl FnOnce() -> bool,
    ) -> OnUnmask {
        let Some(wait) = self.remaining(since_mask) else {
            return OnUnmask::Apply;
        };
        if look() {
            // A held message waits for this unmask: release it now.
            return OnUnmask::Apply;
        }
        let armed = self
            .timer()
            .as_mut()
            .is_some_and(|t| t.reset(wait, None).is_ok());
        if !armed {
            return OnUnmask::Apply;
        }
        if ops
            .modify(Events::new_raw(unmask_fd, EventSet::empty()))
            .is_err()
        {
            // Still watched: the next unmask wakes it again; the timer's
            // end applies what is left either way.
            return OnUnmask::Apply;
        }
        self.muted.store(true, Ordering::SeqCst);
        OnUnmask::Deferred
    }

    /// The timer fired, `since_mask` after the guest's last mask exit.
    /// True when the deferral is over (the unmask fd is watched again and
    /// the servicer applies what is left); false when it was armed again
    /// for `window` after a later mask exit.
    pub(crate) fn on_timer(
        &self,
        ops: &mut EventOps,
        unmask_fd: RawFd,
        since_mask: Option<Duration>,
    ) -> bool {
        {
            let mut timer = self.timer();
            if let Some(t) = timer.as_mut() {
                let _ = t.wait();
                if let Some(wait) = self.remaining(since_mask) {
                    if t.reset(wait, None).is_ok() {
                        return false;
                    }
                }
            }
        }
        if self.muted.swap(false, Ordering::SeqCst) {
            // Level-triggered: an unmask that came meanwhile shows at once.
            // If this failed the fd would stay muted: the caller applies
            // what is there now, and the next exit the rest.
            let _ = ops.modify(Events::new_raw(unmask_fd, EventSet::IN));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unmask_within_the_window_after_a_mask_exit_is_deferred() {
        let d = Deferral::new(Duration::from_micros(100));
        assert_eq!(d.remaining(None), None);
        assert_eq!(
            d.remaining(Some(Duration::from_micros(30))),
            Some(Duration::from_micros(70))
        );
        // A servicer woken a window or more after the last mask exit
        // applies at once: it does not add a window of its own.
        assert_eq!(d.remaining(Some(Duration::from_micros(100))), None);
        assert_eq!(d.remaining(Some(Duration::from_secs(1))), None);
        let off = Deferral::new(Duration::ZERO);
        assert_eq!(off.timer_fd(), None);
        assert_eq!(off.remaining(Some(Duration::ZERO)), None);
    }
}
