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

use std::time::{Duration, Instant};

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
    first: u64,
    last: u64,
    changes: u64,
}

/// A watchdog that fired: what it saw of the wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stalled {
    /// How long the counter stood still (at least one period).
    pub quiet: Duration,
    /// How long the whole wait lasted.
    pub waited: Duration,
    /// How many times the counter changed during the wait.
    pub changes: u64,
}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no progress in {} ms ({} ms waited in all, progress seen {} times)",
            self.quiet.as_millis(),
            self.waited.as_millis(),
            self.changes
        )
    }
}

impl Watchdog {
    /// A watchdog of `period`, starting now with the counter at `progress`.
    pub fn new(period: Duration, progress: u64) -> Watchdog {
        let now = Instant::now();
        Watchdog {
            period,
            started: now,
            period_start: now,
            first: progress,
            last: progress,
            changes: 0,
        }
    }

    /// Checks in with the counter's value now: a change restarts the
    /// period; a whole period without one is an error.
    pub fn check(&mut self, progress: u64) -> Result<(), Stalled> {
        let now = Instant::now();
        if progress != self.last {
            self.last = progress;
            self.changes += 1;
            self.period_start = now;
            return Ok(());
        }
        let quiet = now.duration_since(self.period_start);
        if quiet >= self.period {
            return Err(Stalled {
                quiet,
                waited: now.duration_since(self.started),
                changes: self.changes,
            });
        }
        Ok(())
    }

    /// Time left in the current period: how long a timed wait may sleep
    /// before checking in again.
    pub fn remaining(&self) -> Duration {
        self.period.saturating_sub(self.period_start.elapsed())
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

    #[test]
    fn progress_restarts_the_period_and_stillness_fires_it() {
        let mut w = Watchdog::new(Duration::ZERO, 7);
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
        assert!(w.remaining() <= Duration::from_secs(3600));
    }
}
