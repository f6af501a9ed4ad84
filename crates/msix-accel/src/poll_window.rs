//! How long a servicer keeps polling for the next absorbed unmask before
//! it sleeps: a self-tuning window, as KVM's halt polling tunes a vCPU's.
//!
//! An unmask the ioeventfd absorbs wakes a sleeping servicer. Measured on
//! the development host (docs/performance.md), that wake-up, not the
//! servicer's work, is what the guest pays: the woken thread lands on the
//! vCPU thread's CPU and preempts it (or, with the other CPU idle, costs an
//! inter-processor wake-up). A servicer still polling when the unmask
//! arrives is not woken: the ioeventfd's signal finds no sleeper.
//!
//! After applying unmasks, when the guest made a mask exit since its
//! previous pass (mask traffic), the servicer polls for the current window
//! `W`, then sleeps. How long the next unmask took to come (`waited`, from
//! the end of the pass) tunes `W`:
//!
//! - `waited <= W`: the poll caught it: `W` stays;
//! - `W < waited < max`: a longer poll would have caught it: `W` doubles
//!   (from [`POLL_GROW_START`]), up to `max`;
//! - `waited >= max` and `W > 0`: polling is not paying: `W` halves, to 0
//!   once under [`POLL_GROW_START`].
//!
//! So `W` is 0 until unmasks follow each other within `max`, and falls back
//! to 0 after a few sparse ones. The bound on CPU spent: at most `max` of
//! polling per pass that applied an unmask after a mask exit, so at most
//! `max` times the guest's rate of mask cycles, and none without mask
//! traffic.

use std::time::Duration;

/// The first non-zero window.
pub const POLL_GROW_START: Duration = Duration::from_micros(10);

/// What a measurement did to the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowChange {
    /// Unchanged.
    Kept,
    /// Doubled (or started).
    Grew,
    /// Halved (or stopped).
    Shrank,
}

/// A servicer's polling window for one accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PollWindow {
    window: Duration,
    max: Duration,
}

impl PollWindow {
    /// A window of 0 that may grow up to `max` (zero: never polls).
    pub(crate) fn new(max: Duration) -> PollWindow {
        PollWindow {
            window: Duration::ZERO,
            max,
        }
    }

    /// The current window.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// The next unmask came `waited` after the end of the previous pass.
    pub(crate) fn record(&mut self, waited: Duration) -> WindowChange {
        if waited <= self.window {
            WindowChange::Kept
        } else if waited >= self.max {
            if self.window.is_zero() {
                return WindowChange::Kept;
            }
            let half = self.window / 2;
            self.window = if half < POLL_GROW_START {
                Duration::ZERO
            } else {
                half
            };
            WindowChange::Shrank
        } else {
            self.window = (self.window * 2).max(POLL_GROW_START).min(self.max);
            WindowChange::Grew
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(200);

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn grows_from_the_start_by_doubling_up_to_max_while_unmasks_come_close() {
        let mut w = PollWindow::new(MAX);
        assert_eq!(w.window(), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..6 {
            assert_eq!(w.record(us(199)), WindowChange::Grew);
            seen.push(w.window().as_micros());
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 200]);
        // At the maximum, a poll catches what comes within it.
        assert_eq!(w.record(us(199)), WindowChange::Kept);
        assert_eq!(w.window(), MAX);
    }

    #[test]
    fn a_caught_unmask_keeps_the_window() {
        let mut w = PollWindow::new(MAX);
        w.record(us(30));
        w.record(us(30));
        assert_eq!(w.window(), us(20));
        assert_eq!(w.record(us(20)), WindowChange::Kept);
        assert_eq!(w.record(us(1)), WindowChange::Kept);
        assert_eq!(w.window(), us(20));
    }

    #[test]
    fn sparse_unmasks_shrink_it_to_zero_and_zero_stays_zero() {
        let mut w = PollWindow::new(MAX);
        for _ in 0..5 {
            w.record(us(100));
        }
        assert_eq!(w.window(), us(160));
        let mut seen = Vec::new();
        while w.record(us(5000)) == WindowChange::Shrank {
            seen.push(w.window().as_micros());
        }
        assert_eq!(seen, [80, 40, 20, 10, 0]);
        assert_eq!(w.record(MAX), WindowChange::Kept);
        assert_eq!(w.window(), Duration::ZERO);
    }

    #[test]
    fn a_zero_max_never_polls() {
        let mut w = PollWindow::new(Duration::ZERO);
        for waited in [0, 1, 10, 1000] {
            w.record(us(waited));
            assert_eq!(w.window(), Duration::ZERO);
        }
    }
}
