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
//! look on) and, unless a message is held behind one of them or one needs
//! a route commit, stops watching the unmask eventfds (the device's stable fd is set to no
//! events in its epoll set: further unmasks wake nobody) and arms a timer
//! for `D` after that mask exit. When it fires, and no mask exit came
//! meanwhile for `D`, the servicer watches the unmask eventfds again and
//! applies what is left; otherwise it waits again until `D` after the
//! latest mask exit.
//!
//! The bound: an absorbed unmask that no exit follows is applied at most
//! `D` after the guest's last mask exit, and at most
//! [`UNMASK_DEFERRAL_MAX_WINDOWS`] x `D` after the deferral began however
//! long the guest's mask traffic lasts (plus the timer's and the
//! scheduler's delay). The servicer does not defer at all when it wakes `D`
//! or more after the last mask exit, nor when one of the unmasks it took in
//! has a message held behind it or needs a route commit: those are applied
//! as without deferral (one that needs a commit after the coalescing
//! window, which starts when the servicer sees it). During a burst the
//! servicer wakes about once per `D` (and once more per limit), instead of
//! once per unmask. Deferrals ended by the limit are counted
//! (`AccelStats::unmask_deferral_limits`).
//! Nothing else changes: every exit still applies the unmasks it depends on
//! first, and the PBA is computed from the same state.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use event_manager::{EventOps, Events};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::timerfd::TimerFd;

/// The longest a deferral lasts, in windows (`AccelConfig::unmask_deferral`),
/// from the servicer's decision to defer, however long the guest's mask
/// exits keep coming: then the servicer watches the unmask eventfds again
/// and applies what is left (so an unmask that needs a route commit, which
/// only an exit on its own entry would apply, is not held for as long as
/// the guest cycles other entries).
pub const UNMASK_DEFERRAL_MAX_WINDOWS: u32 = 4;

/// The longest window a deferral keeps (a longer configured one is taken
/// as this): its limit, [`UNMASK_DEFERRAL_MAX_WINDOWS`] of it, still fits a
/// kernel timer.
const MAX_WINDOW: Duration = Duration::from_secs(1 << 32);

/// Makes `fd` non-blocking: a read of a timer that is not expired (one
/// armed again since epoll saw it fire) then fails at once instead of
/// blocking the servicer. False when it could not be done.
fn nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL and F_SETFL on an fd the caller owns for the call's
    // duration read and set its status flags; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    }
}

/// What the timer's end did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnTimer {
    /// Armed again for `window` after a later mask exit: still deferring.
    Rearmed,
    /// The deferral is over, no mask exit for a window: apply what is left.
    Ended,
    /// The deferral is over at its limit, mask exits still coming: apply
    /// what is left.
    EndedAtLimit,
}

/// A servicer's deferral state for one accelerator.
#[derive(Debug)]
pub(crate) struct Deferral {
    window: Duration,
    timer: Mutex<Option<TimerFd>>,
    muted: AtomicBool,
    /// When the current deferral began (None: not deferring).
    began: Mutex<Option<Instant>>,
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
    /// Deferral by `window` (zero: never), with its timer. A window longer
    /// than [`MAX_WINDOW`] is taken as that (a timer cannot be armed for
    /// more).
    pub(crate) fn new(window: Duration) -> Deferral {
        let window = window.min(MAX_WINDOW);
        let timer = if window.is_zero() {
            None
        } else {
            TimerFd::new().ok().filter(|t| nonblocking(t.as_raw_fd()))
        };
        Deferral {
            window,
            timer: Mutex::new(timer),
            muted: AtomicBool::new(false),
            began: Mutex::new(None),
        }
    }

    fn began(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // An instant: no invariant a panic could break.
        self.began.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// after the last mask exit, `since_mask` ago, and no longer than
    /// [`UNMASK_DEFERRAL_MAX_WINDOWS`] windows after the deferral began,
    /// `deferring` ago (None: it begins now). None: apply now (no mask
    /// exit for a whole window, since a servicer that woke that late has
    /// kept the unmask waiting long enough; or the deferral's time is up).
    fn remaining(
        &self,
        since_mask: Option<Duration>,
        deferring: Option<Duration>,
    ) -> Option<Duration> {
        let to_window = self
            .window
            .checked_sub(since_mask?)
            .filter(|d| !d.is_zero())?;
        // Saturating: a VMM may configure any window, Duration::MAX too.
        let limit = self
            .window
            .checked_mul(UNMASK_DEFERRAL_MAX_WINDOWS)
            .unwrap_or(Duration::MAX);
        let to_limit = limit
            .checked_sub(deferring.unwrap_or_default())
            .filter(|d| !d.is_zero())?;
        Some(to_window.min(to_limit))
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
        if self.timer().is_none() {
            // Deferring is off: nothing to look for.
            return OnUnmask::Apply;
        }
        let Some(wait) = self.remaining(since_mask, None) else {
            return OnUnmask::Apply;
        };
        if look() {
            // A held message waits for one of these unmasks, or one needs
            // a commit: apply them as without deferral.
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
            // Still watched: the next unmask wakes it again. Disarm the
            // timer: nothing is deferred.
            if let Some(t) = self.timer().as_mut() {
                let _ = t.clear();
            }
            return OnUnmask::Apply;
        }
        self.muted.store(true, Ordering::SeqCst);
        *self.began() = Some(Instant::now());
        OnUnmask::Deferred
    }

    /// The timer fired, `since_mask` after the guest's last mask exit.
    /// Unless it was armed again (a later mask exit, within the limit), the
    /// deferral is over: the unmask fd is watched again and the servicer
    /// applies what is left.
    pub(crate) fn on_timer(
        &self,
        ops: &mut EventOps,
        unmask_fd: RawFd,
        since_mask: Option<Duration>,
    ) -> OnTimer {
        let mut at_limit = false;
        {
            let mut timer = self.timer();
            if let Some(t) = timer.as_mut() {
                // Non-blocking: fails at once if it was armed again since.
                let _ = t.wait();
                let deferring = self.began().map(|at| at.elapsed());
                match self.remaining(since_mask, deferring) {
                    Some(wait) => {
                        if t.reset(wait, None).is_ok() {
                            return OnTimer::Rearmed;
                        }
                    }
                    None => at_limit = self.remaining(since_mask, None).is_some(),
                }
            }
        }
        *self.began() = None;
        if self.muted.load(Ordering::SeqCst) {
            // Level-triggered: an unmask that came meanwhile shows at once.
            if ops.modify(Events::new_raw(unmask_fd, EventSet::IN)).is_ok() {
                self.muted.store(false, Ordering::SeqCst);
            } else if let Some(t) = self.timer().as_mut() {
                // Still muted: try again a window from now (the caller
                // applies what is there now, exits the rest meanwhile).
                let _ = t.reset(self.window, None);
            }
        }
        if at_limit {
            OnTimer::EndedAtLimit
        } else {
            OnTimer::Ended
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unmask_within_the_window_after_a_mask_exit_is_deferred() {
        let us = Duration::from_micros;
        let d = Deferral::new(us(100));
        assert_eq!(d.remaining(None, None), None);
        assert_eq!(d.remaining(Some(us(30)), None), Some(us(70)));
        // A servicer woken a window or more after the last mask exit
        // applies at once: it does not add a window of its own.
        assert_eq!(d.remaining(Some(us(100)), None), None);
        assert_eq!(d.remaining(Some(Duration::from_secs(1)), None), None);
        let off = Deferral::new(Duration::ZERO);
        assert_eq!(off.timer_fd(), None);
        assert_eq!(off.remaining(Some(Duration::ZERO), None), None);
    }

    #[test]
    fn a_deferral_ends_after_its_limit_however_long_the_mask_exits_last() {
        let us = Duration::from_micros;
        let d = Deferral::new(us(100));
        let limit = us(100) * UNMASK_DEFERRAL_MAX_WINDOWS;
        // Mask exits keep coming (the last one 10 us ago): the timer is
        // armed again for the rest of the window while the limit allows.
        assert_eq!(d.remaining(Some(us(10)), Some(us(50))), Some(us(90)));
        // Near the limit, only what is left of it.
        assert_eq!(
            d.remaining(Some(us(10)), Some(limit - us(20))),
            Some(us(20))
        );
        // At or past the limit: apply now, whatever the mask traffic.
        assert_eq!(d.remaining(Some(us(10)), Some(limit)), None);
        assert_eq!(d.remaining(Some(us(0)), Some(limit * 3)), None);
        // Any configured window, the largest too: no overflow.
        let huge = Deferral::new(Duration::MAX);
        assert_eq!(
            huge.remaining(Some(us(10)), Some(Duration::from_secs(1))),
            Some(MAX_WINDOW - us(10))
        );
        assert_eq!(huge.remaining(Some(us(10)), Some(Duration::MAX)), None);
        // Taken as the longest a timer holds.
        assert_eq!(huge.window, MAX_WINDOW);
    }
}
