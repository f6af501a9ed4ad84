//! [`Watchdog`]: bounds a wait by the progress it sees, not by wall time
//! alone.
//!
//! A wait on a guest or a host thread fails only after a whole watchdog
//! period in which what it watches made no progress at all. A loaded
//! machine makes progress slow, so the wait takes longer but does not fail;
//! a guest or thread that is stuck makes none, and the wait fails one
//! period after it stopped. The counter watched must be finite over the
//! wait (exits of a finite program, deliveries towards a count, entries
//! left to undo), so that a wait always ends.
//!
//! One more thing counts as the machine being slow rather than the test
//! being stuck: a thread of this process in an uninterruptible kernel wait
//! (state `D`), such as a KVM_IRQFD deassign flushing the host-wide irqfd
//! cleanup workqueue that every guest on the host feeds, or a routing
//! commit waiting for an SRCU grace period. On a loaded host one such call
//! was seen to take over 10 s. When a period ends without progress, the
//! process's threads are looked at (only then: a wait that progresses never
//! reads /proc); if one is in such a wait, the period is extended, up to
//! [`MAX_KERNEL_PERIODS`] periods in a row; the failure then names the
//! threads and where in the kernel they waited. A deadlock on our own locks
//! sleeps interruptibly (futex) and is not extended.

use std::time::{Duration, Instant};

/// Periods in a row a wait is extended because a thread of this process
/// was in an uninterruptible kernel wait (without progress otherwise).
pub const MAX_KERNEL_PERIODS: u32 = 12;

/// The longest a timed wait sleeps before checking in again
/// ([`Watchdog::remaining`]): how late, at most, the end of a period is
/// seen.
const CHECK_IN_EVERY: Duration = Duration::from_millis(10);

/// Threads of this process in an uninterruptible kernel wait (state `D`),
/// each as `name (in kernel function)`.
fn kernel_waits() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    tasks
        .flatten()
        .filter_map(|task| {
            let stat = read(task.path().join("stat"));
            // The name (field 2) may hold spaces; the state follows its ')'.
            let state = stat.get(stat.rfind(')')? + 2..)?.chars().next()?;
            (state == 'D').then(|| {
                format!(
                    "{} (in {})",
                    read(task.path().join("comm")).trim(),
                    read(task.path().join("wchan")).trim()
                )
            })
        })
        .collect()
}

/// A watchdog that restarts its period whenever the progress counter it is
/// given changes.
///
/// ```
/// use std::time::Duration;
/// use testvm::Watchdog;
///
/// let mut done = 0u64;
/// let mut watchdog = Watchdog::new(Duration::from_secs(10), done);
/// while done < 3 {
///     done += 1; // the work, observed through its counter
///     watchdog.check(done).expect("progress keeps the watchdog quiet");
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Watchdog {
    period: Duration,
    started: Instant,
    period_start: Instant,
    last_change: Instant,
    first: u64,
    last: u64,
    changes: u64,
    /// The threads last seen in a kernel wait, for the failure.
    kernel_last: Option<String>,
    /// Periods in a row extended for a kernel wait.
    kernel_periods: u32,
    /// Lists the threads in kernel waits ([`kernel_waits`]; a stand-in in
    /// unit tests).
    sampler: fn() -> Vec<String>,
}

/// A watchdog that fired: what it saw of the wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stalled {
    /// How long the counter stood still (at least one period, more when
    /// periods were extended for kernel waits).
    pub quiet: Duration,
    /// How long the whole wait lasted.
    pub waited: Duration,
    /// How many times the counter changed during the wait.
    pub changes: u64,
    /// Periods in a row that were extended because a thread of this
    /// process was in an uninterruptible kernel wait.
    pub kernel_periods: u32,
    /// The threads last seen in such a wait, and where.
    pub kernel_waits: Option<String>,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no progress in {} ms ({} ms waited in all, progress seen {} times",
            self.quiet.as_millis(),
            self.waited.as_millis(),
            self.changes
        )?;
        match &self.kernel_waits {
            Some(threads) => write!(
                f,
                ", extended {} periods for threads in kernel waits, last {threads})",
                self.kernel_periods
            ),
            None => write!(f, ")"),
        }
    }
}

impl Watchdog {
    /// A watchdog of `period`, starting now with the counter at `progress`.
    pub fn new(period: Duration, progress: u64) -> Watchdog {
        Watchdog::with_sampler(period, progress, kernel_waits)
    }

    fn with_sampler(period: Duration, progress: u64, sampler: fn() -> Vec<String>) -> Watchdog {
        let now = Instant::now();
        Watchdog {
            period,
            started: now,
            period_start: now,
            last_change: now,
            first: progress,
            last: progress,
            changes: 0,
            kernel_last: None,
            kernel_periods: 0,
            sampler,
        }
    }

    /// Checks in with the counter's value now: a change restarts the
    /// period; a whole period without one is an error, unless a thread of
    /// this process is in an uninterruptible kernel wait when it ends (see
    /// the module's documentation).
    pub fn check(&mut self, progress: u64) -> Result<(), Stalled> {
        let now = Instant::now();
        if progress != self.last {
            self.last = progress;
            self.changes += 1;
            self.last_change = now;
            self.period_start = now;
            self.kernel_periods = 0;
            return Ok(());
        }
        if now.duration_since(self.period_start) < self.period {
            return Ok(());
        }
        // A whole period without progress: only now is it worth reading
        // every thread's state, to tell a host slow in the kernel from a
        // wait that is stuck.
        let waits = (self.sampler)();
        if !waits.is_empty() {
            let seen = waits.join(", ");
            if self.kernel_periods < MAX_KERNEL_PERIODS {
                self.kernel_periods += 1;
                self.kernel_last = Some(seen);
                self.period_start = now;
                return Ok(());
            }
            self.kernel_last = Some(seen);
        }
        Err(Stalled {
            quiet: now.duration_since(self.last_change),
            waited: now.duration_since(self.started),
            changes: self.changes,
            kernel_periods: self.kernel_periods,
            kernel_waits: self.kernel_last.clone(),
        })
    }

    /// How long a timed wait may sleep before checking in again: what is
    /// left of the period, at most 10 ms.
    pub fn remaining(&self) -> Duration {
        self.period
            .saturating_sub(self.period_start.elapsed())
            .min(CHECK_IN_EVERY)
    }

    /// The counter's total change since the watchdog started (for a
    /// counter that only grows).
    pub fn advanced(&self) -> u64 {
        self.last.wrapping_sub(self.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_kernel_waits() -> Vec<String> {
        Vec::new()
    }

    fn a_kernel_wait() -> Vec<String> {
        vec!["testvm-vcpu0 (in __flush_workqueue)".into()]
    }

    #[test]
    fn progress_restarts_the_period_and_stillness_fires_it() {
        let mut w = Watchdog::with_sampler(Duration::ZERO, 7, no_kernel_waits);
        // A zero period: any check without a change fires at once.
        let stalled = w.check(7).unwrap_err();
        assert_eq!(stalled.changes, 0);
        assert!(w.check(8).is_ok(), "a change restarts the period");
        assert!(w.check(6).is_ok(), "any change counts, not only growth");
        let stalled = w.check(6).unwrap_err();
        assert_eq!(stalled.changes, 2);
        assert!(stalled.to_string().contains("progress seen 2 times"));
        assert_eq!(w.advanced(), 6u64.wrapping_sub(7));

        let mut w = Watchdog::new(Duration::from_secs(3600), 0);
        for i in 0..1000 {
            assert!(w.check(i % 2).is_ok());
        }
        assert!(w.remaining() <= CHECK_IN_EVERY);
    }

    static SCANS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn counted_kernel_wait() -> Vec<String> {
        SCANS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        a_kernel_wait()
    }

    #[test]
    fn threads_are_looked_at_only_when_a_period_ends_without_progress() {
        let scans = || SCANS.load(std::sync::atomic::Ordering::SeqCst);
        // A period that cannot end during the test: checks with and
        // without progress never read the threads.
        let mut w = Watchdog::with_sampler(Duration::from_secs(3600), 0, counted_kernel_wait);
        for i in 0..1000 {
            assert!(w.check(i / 2).is_ok());
        }
        assert_eq!(scans(), 0, "no scan while the period runs");
        // A zero period ends at every check without progress: one scan
        // each, which extends it while a thread is in a kernel wait.
        let mut w = Watchdog::with_sampler(Duration::ZERO, 0, counted_kernel_wait);
        assert!(w.check(0).is_ok());
        assert_eq!(scans(), 1);
        assert!(w.check(1).is_ok(), "progress: no scan");
        assert_eq!(scans(), 1);
        assert!(w.check(1).is_ok());
        assert_eq!(scans(), 2);
        assert_eq!(w.kernel_periods, 1, "progress started the count again");
    }

    #[test]
    fn a_kernel_wait_extends_a_bounded_number_of_periods_and_is_named() {
        let mut w = Watchdog::with_sampler(Duration::ZERO, 0, a_kernel_wait);
        for extended in 1..=MAX_KERNEL_PERIODS {
            assert!(w.check(0).is_ok(), "period {extended} extended");
            assert_eq!(w.kernel_periods, extended);
        }
        let stalled = w.check(0).unwrap_err();
        assert_eq!(stalled.kernel_periods, MAX_KERNEL_PERIODS);
        assert!(
            stalled.to_string().contains(&format!(
                "extended {MAX_KERNEL_PERIODS} periods for threads in kernel waits, last testvm-vcpu0 (in __flush_workqueue)"
            )),
            "{stalled}"
        );
        // Progress starts the count of extensions again.
        assert!(w.check(1).is_ok());
        assert_eq!(w.kernel_periods, 0);
    }
}
