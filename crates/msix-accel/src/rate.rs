//! Token buckets: how often a guest may make the host work for it.
//!
//! A guest can drive some host work at any rate it likes: toggling an
//! entry between a message the hypervisor refuses and one it accepts costs
//! a `KVM_SET_GSI_ROUTING` (under the VM-wide call lock) and an event per
//! toggle. Buckets bound both per device, so a guest exceeding the rate
//! slows only its own device, and the VMM's event stream stays bounded:
//!
//! - route commits: the table size plus [`COMMIT_BURST`] at once (a
//!   bring-up that commits once per vector, as under `strict`, never
//!   waits), then one per
//!   [`COMMIT_INTERVAL`] (see `Device::apply`: a plan that would commit
//!   without a token holds the vectors concerned and leaves them to the
//!   retry timer, which commits them together once a token is back);
//! - events: [`EVENT_BURST`] per vector and kind, then one per
//!   [`EVENT_INTERVAL`]; those beyond are counted
//!   (`AccelStats::events_suppressed`), not sent.

use std::time::{Duration, Instant};

/// Route commits a device may make at once beyond one per entry of its
/// table.
pub const COMMIT_BURST: u32 = 32;

/// After a burst, a device gets one route commit per this interval (200 a
/// second).
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(5);

/// Events a device may report at once for one vector and kind (or one
/// device-wide kind).
pub const EVENT_BURST: u32 = 4;

/// After a burst, one more event per vector and kind per this interval: a
/// vector reports at most `EVENT_BURST + t / EVENT_INTERVAL` events of one
/// kind in `t`.
pub const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// A bucket of `burst` tokens refilled one per `interval`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    tokens: u32,
    burst: u32,
    interval: Duration,
    /// When the last whole token was added (or the bucket was full).
    refilled: Instant,
}

impl TokenBucket {
    pub(crate) fn new(burst: u32, interval: Duration) -> Self {
        TokenBucket {
            tokens: burst,
            burst,
            interval,
            refilled: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub(crate) fn take(&mut self) -> bool {
        self.refill(Instant::now());
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }

    fn refill(&mut self, now: Instant) {
        if self.tokens >= self.burst {
            self.refilled = now;
            return;
        }
        let elapsed = now.saturating_duration_since(self.refilled);
        let interval = self.interval.as_nanos().max(1);
        let whole = elapsed.as_nanos() / interval;
        if whole == 0 {
            return;
        }
        let added = u32::try_from(whole).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(added).min(self.burst);
        if self.tokens >= self.burst {
            self.refilled = now;
        } else {
            // Keep the fraction of a token already earned.
            self.refilled += self.interval * added;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let mut b = TokenBucket::new(3, Duration::from_secs(3600));
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take(), "empty until an interval has passed");
        b.refilled -= Duration::from_secs(3600 * 2 + 10);
        assert!(b.take() && b.take());
        assert!(!b.take());
        b.refilled -= Duration::from_secs(3600 * 100);
        assert!(b.take() && b.take() && b.take());
        assert!(!b.take(), "never more than the burst");
    }
}
