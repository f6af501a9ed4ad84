//! `auto`: choosing `fast` or `strict` for a device by measuring this host.
//!
//! An absorbed unmask (`fast`) costs the guest no exit, but a servicer has
//! to wake up to apply it: on a host where that cross-thread wake-up is
//! dear (a loaded or nested host, see docs/performance.md) the Linux cycle
//! costs more than `strict`'s second exit. The only way to know is to
//! measure, so at placement time `auto` times, with no guest involved:
//!
//! - the **wake round trip**: [`AUTO_ROUNDS`] times, this thread writes an
//!   eventfd, a probe thread blocked on it wakes, applies (takes the
//!   device's lock, as a servicer does) and writes a reply eventfd this
//!   thread blocks on: what handing an unmask to another thread costs;
//! - the **in-thread apply**: the same write, read and apply done by this
//!   thread alone, as a vCPU serving its own unmask exit does.
//!
//! The medians decide: `fast` when the wake round trip costs at most
//! [`AUTO_EXIT_WEIGHT`] in-thread applies, else `strict`. The weight stands
//! for the exit the guest-free measurement cannot make (an exit's return
//! to userspace and re-entry are two more crossings of the kind an
//! in-thread apply makes); docs/performance.md compares the choice with
//! the bench's rows on this host. Both mechanisms are exact, so a wrong
//! choice costs time, never correctness; a measurement that fails or
//! overruns [`AUTO_BUDGET`] chooses `strict`.
//!
//! Bounds: one measurement makes at most 2 x [`AUTO_ROUNDS`] round trips
//! and stops at [`AUTO_BUDGET`], whatever the host; it runs at a placement
//! (place, BAR move, decode on) at most once per
//! [`crate::AccelConfig::auto_recheck`] (placements in between reuse the
//! last choice), so in `t` a device measures at most `1 + t / recheck`
//! times, and never while its lock is held.

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvm_msix::Policy;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Round trips of each kind one measurement makes.
pub const AUTO_ROUNDS: usize = 64;

/// The longest one measurement may take; past it `strict` is chosen.
pub const AUTO_BUDGET: Duration = Duration::from_millis(200);

/// How many in-thread applies a wake round trip may cost for `fast` to be
/// chosen.
pub const AUTO_EXIT_WEIGHT: u64 = 3;

/// Default of [`crate::AccelConfig::auto_recheck`].
pub const DEFAULT_AUTO_RECHECK: Duration = Duration::from_secs(60);

/// One measurement's medians, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Calibration {
    pub(crate) wake_ns: u64,
    pub(crate) inline_ns: u64,
}

impl Calibration {
    /// The cheaper exact mechanism by this measurement.
    pub(crate) fn verdict(&self) -> Policy {
        if self.wake_ns <= AUTO_EXIT_WEIGHT.saturating_mul(self.inline_ns) {
            Policy::Fast
        } else {
            Policy::Strict
        }
    }
}

/// What `auto` last chose for a device, and when it measured.
#[derive(Debug, Default)]
pub(crate) struct AutoState {
    pub(crate) measured: Option<Instant>,
    pub(crate) choice: Option<Policy>,
}

impl AutoState {
    /// Whether a placement now should measure again.
    pub(crate) fn due(&self, now: Instant, recheck: Duration) -> bool {
        self.measured
            .is_none_or(|at| now.saturating_duration_since(at) >= recheck)
    }
}

/// Waits until `fd` is readable or `deadline` passes; false on timeout or
/// failure.
fn wait_readable(fd: &EventFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `pfd` is one valid pollfd that lives across the call.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 {
            return fd.read().is_ok();
        }
        if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return false;
        }
    }
}

fn median(samples: &mut [u64]) -> u64 {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(u64::MAX)
}

/// Measures the wake round trip and the in-thread apply (module docs);
/// None when an eventfd or the probe thread cannot be had, or the budget
/// ran out.
pub(crate) fn measure(apply: &(dyn Fn() + Sync)) -> Option<Calibration> {
    let deadline = Instant::now() + AUTO_BUDGET;
    let request = EventFd::new(EFD_NONBLOCK).ok()?;
    let reply = EventFd::new(EFD_NONBLOCK).ok()?;
    let stop = AtomicBool::new(false);
    let mut wake = Vec::with_capacity(AUTO_ROUNDS);
    let completed = std::thread::scope(|scope| {
        let probe = std::thread::Builder::new()
            .name("msix-auto-probe".into())
            .spawn_scoped(scope, || {
                while wait_readable(&request, deadline) && !stop.load(Ordering::SeqCst) {
                    apply();
                    if reply.write(1).is_err() {
                        return;
                    }
                }
            });
        if probe.is_err() {
            return false;
        }
        let mut ok = true;
        for _ in 0..AUTO_ROUNDS {
            let start = Instant::now();
            if request.write(1).is_err() || !wait_readable(&reply, deadline) {
                ok = false;
                break;
            }
            wake.push(start.elapsed().as_nanos() as u64);
        }
        stop.store(true, Ordering::SeqCst);
        // Wakes the probe so it sees `stop` (else it leaves at the deadline).
        let _ = request.write(1);
        ok
    });
    if !completed {
        return None;
    }
    let mut inline = Vec::with_capacity(AUTO_ROUNDS);
    for _ in 0..AUTO_ROUNDS {
        let start = Instant::now();
        request.write(1).ok()?;
        request.read().ok()?;
        apply();
        inline.push(start.elapsed().as_nanos() as u64);
        if Instant::now() > deadline {
            return None;
        }
    }
    Some(Calibration {
        wake_ns: median(&mut wake),
        inline_ns: median(&mut inline),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measurement_completes_with_both_medians_and_applies_each_round() {
        let applied = std::sync::atomic::AtomicUsize::new(0);
        let apply = || {
            applied.fetch_add(1, Ordering::Relaxed);
        };
        // Under heavy load the budget may run out: then None, which chooses
        // strict; a completed one applied 2 x AUTO_ROUNDS times.
        if let Some(c) = measure(&apply) {
            assert!(c.wake_ns > 0 && c.inline_ns > 0, "{c:?}");
            assert_eq!(applied.load(Ordering::Relaxed), 2 * AUTO_ROUNDS);
        } else {
            assert!(applied.load(Ordering::Relaxed) <= 2 * AUTO_ROUNDS);
        }
    }

    #[test]
    fn the_verdict_weighs_the_wake_against_the_in_thread_apply() {
        let c = |wake_ns, inline_ns| Calibration { wake_ns, inline_ns };
        assert_eq!(c(3000, 1000).verdict(), Policy::Fast);
        assert_eq!(c(3001, 1000).verdict(), Policy::Strict);
        assert_eq!(c(u64::MAX, u64::MAX).verdict(), Policy::Fast);
    }

    #[test]
    fn a_recheck_is_due_first_and_then_once_per_interval() {
        let now = Instant::now();
        let mut s = AutoState::default();
        assert!(s.due(now, DEFAULT_AUTO_RECHECK));
        s.measured = Some(now);
        assert!(!s.due(now, DEFAULT_AUTO_RECHECK));
        assert!(s.due(now + DEFAULT_AUTO_RECHECK, DEFAULT_AUTO_RECHECK));
        assert!(s.due(now, Duration::ZERO));
    }
}
