//! Interrupt storms on a software MSI-X source: a thread firing vectors
//! round-robin, at full rate or paced, until stopped or a count is reached.
//!
//! The storm only calls [`SoftwareSource::fire`]; what becomes of each
//! message (signalled, latched, dropped) is the source's business and is
//! summed in the [`StormReport`]. Pacing reads an injected [`Clock`], so a
//! test can check it against a clock it controls instead of the wall clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vfio_vectors::software::{FireOutcome, SoftwareSource};

use crate::Error;

/// Time as a paced storm sees it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the clock started.
    fn elapsed(&self) -> Duration;
    /// Waits `duration`.
    fn sleep(&self, duration: Duration);
}

/// The wall clock (monotonic), started when created.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> SystemClock {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&self, duration: Duration) {
        thread::sleep(duration);
    }
}

/// What a storm fires, how fast, and for how long.
#[derive(Clone, Debug)]
pub struct StormConfig {
    /// Vectors fired round-robin; one may appear several times to weight
    /// it. An empty list fires nothing.
    pub vectors: Vec<u16>,
    /// Fires per second (paced against a deadline in batches of about a
    /// millisecond), or `None` for as fast as possible. `Some(0)` fires
    /// nothing until stopped.
    pub rate_per_sec: Option<u64>,
    /// Stop by itself after this many fires (`None`: only when stopped).
    pub limit: Option<u64>,
    /// The clock that paces the storm and times its report.
    pub clock: Arc<dyn Clock>,
}

impl StormConfig {
    /// Fires `vectors` as fast as possible until stopped, on the wall clock.
    pub fn new(vectors: Vec<u16>) -> StormConfig {
        StormConfig {
            vectors,
            rate_per_sec: None,
            limit: None,
            clock: Arc::new(SystemClock::new()),
        }
    }
}

/// Longest single sleep of a paced storm, so that a stop is seen quickly.
pub const MAX_SLEEP: Duration = Duration::from_millis(5);
/// Fires between two checks of the stop flag of an unpaced storm.
const UNPACED_BATCH: u64 = 256;

/// Fires per batch of a storm paced at `rate` per second: about one
/// millisecond's worth, at least one.
pub fn paced_batch(rate: u64) -> u64 {
    (rate / 1000).max(1)
}

/// Starts a thread firing `vectors` of `source` round-robin until stopped,
/// at `rate_per_sec` fires per second or as fast as possible with `None`
/// (see [`StormConfig`]). Stop it with [`StormHandle::stop`]; dropping the
/// handle stops it too. The storm ends early if a fire fails; the report
/// carries the error.
pub fn storm(
    source: &SoftwareSource,
    vectors: Vec<u16>,
    rate_per_sec: Option<u64>,
) -> Result<StormHandle, Error> {
    start(
        source,
        StormConfig {
            rate_per_sec,
            ..StormConfig::new(vectors)
        },
    )
}

/// Starts a thread firing `vectors` of `source` round-robin as fast as
/// possible until `total` fires are done; join it with
/// [`StormHandle::wait`]. An empty list ends at once with no fire.
pub fn storm_count(
    source: &SoftwareSource,
    vectors: Vec<u16>,
    total: u64,
) -> Result<StormHandle, Error> {
    start(
        source,
        StormConfig {
            limit: Some(total),
            ..StormConfig::new(vectors)
        },
    )
}

/// Starts a storm as `config` says.
pub fn start(source: &SoftwareSource, config: StormConfig) -> Result<StormHandle, Error> {
    for &vector in &config.vectors {
        // Refuse a vector the source does not have before any fire.
        source.stats(vector)?;
    }
    let shared = Arc::new(StormShared {
        fired: config.vectors.iter().map(|_| AtomicU64::new(0)).collect(),
        vectors: config.vectors.clone(),
        stop: AtomicBool::new(false),
        outcomes: Mutex::new(Outcomes::default()),
        failure: Mutex::new(None),
        elapsed: Mutex::new(None),
    });
    let started = config.clock.elapsed();
    let thread = {
        let source = source.clone();
        let shared = Arc::clone(&shared);
        let config = config.clone();
        thread::Builder::new()
            .name("msix-bench-storm".into())
            .spawn(move || shared.run(&source, &config, started))
            .map_err(|e| Error::Check(format!("cannot start the storm thread: {e}")))?
    };
    Ok(StormHandle {
        shared,
        thread: Some(thread),
        clock: config.clock,
        started,
        limit: config.limit,
    })
}

/// What the storm's fires became, summed.
#[derive(Clone, Copy, Debug, Default)]
struct Outcomes {
    signalled: u64,
    latched: u64,
    dropped: u64,
}

impl Outcomes {
    fn count(&mut self, outcome: FireOutcome) {
        match outcome {
            FireOutcome::Signalled => self.signalled += 1,
            FireOutcome::Latched => self.latched += 1,
            FireOutcome::Dropped => self.dropped += 1,
        }
    }
}

/// State shared between a [`StormHandle`] and its thread.
#[derive(Debug)]
struct StormShared {
    vectors: Vec<u16>,
    /// Fires per position in `vectors`.
    fired: Vec<AtomicU64>,
    stop: AtomicBool,
    outcomes: Mutex<Outcomes>,
    failure: Mutex<Option<vfio_vectors::Error>>,
    elapsed: Mutex<Option<Duration>>,
}

impl StormShared {
    fn run(&self, source: &SoftwareSource, config: &StormConfig, started: Duration) {
        let mut outcomes = Outcomes::default();
        let result = self.fire_loop(source, config, started, &mut outcomes);
        *lock(&self.outcomes) = outcomes;
        if let Err(error) = result {
            *lock(&self.failure) = Some(error);
        }
        *lock(&self.elapsed) = Some(config.clock.elapsed().saturating_sub(started));
    }

    fn fire_loop(
        &self,
        source: &SoftwareSource,
        config: &StormConfig,
        started: Duration,
        outcomes: &mut Outcomes,
    ) -> Result<(), vfio_vectors::Error> {
        if self.vectors.is_empty() {
            return Ok(());
        }
        let batch = config.rate_per_sec.map_or(UNPACED_BATCH, paced_batch);
        let mut position = 0;
        let mut total = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            if config.rate_per_sec == Some(0) {
                config.clock.sleep(MAX_SLEEP);
                continue;
            }
            for _ in 0..batch {
                if config.limit.is_some_and(|limit| total >= limit) {
                    return Ok(());
                }
                outcomes.count(source.fire(self.vectors[position])?);
                self.fired[position].fetch_add(1, Ordering::Relaxed);
                total += 1;
                position = (position + 1) % self.vectors.len();
            }
            if let Some(rate) = config.rate_per_sec {
                // Pace against the deadline of the fires done so far, not
                // the batch length, so sleep overshoot does not accumulate
                // and the storm never runs ahead of its rate by more than
                // the batch it just fired.
                let due = started + Duration::from_secs_f64(total as f64 / rate as f64);
                let now = config.clock.elapsed();
                if due > now {
                    config.clock.sleep((due - now).min(MAX_SLEEP));
                }
            }
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Storm bookkeeping holds whole values, written in one assignment.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running storm started by [`storm`], [`storm_count`] or [`start`].
/// Dropping it stops the storm and joins its thread.
#[derive(Debug)]
pub struct StormHandle {
    shared: Arc<StormShared>,
    thread: Option<JoinHandle<()>>,
    clock: Arc<dyn Clock>,
    started: Duration,
    /// The storm's count ([`StormConfig::limit`]).
    limit: Option<u64>,
}

impl StormHandle {
    /// Whether the storm thread has ended (count reached, stopped, or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Fires so far, all vectors together.
    pub fn fired(&self) -> u64 {
        self.shared
            .fired
            .iter()
            .map(|f| f.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits until every vector of the storm has fired at least once (one
    /// full round), or the storm has ended by itself. Each fire restarts
    /// the `watchdog` period, so a loaded machine makes the wait longer,
    /// not failed; a whole period without a fire fails it. What a storm
    /// leaves behind (a pending bit, a delivery) is then the storm's, not
    /// a matter of whether its thread got a CPU before it was stopped.
    pub fn wait_full_round(&self, watchdog: Duration) -> Result<(), Error> {
        let mut dog = testvm::Watchdog::new(watchdog, self.fired());
        loop {
            let round = self
                .shared
                .fired
                .iter()
                .all(|f| f.load(Ordering::Relaxed) > 0);
            if round || self.is_finished() {
                return Ok(());
            }
            if let Err(stalled) = dog.check(self.fired()) {
                return Err(Error::Check(format!(
                    "the storm did not fire each of its vectors {:?} once: {stalled}",
                    self.shared.vectors
                )));
            }
            thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops the storm and reports what it fired.
    pub fn stop(mut self) -> StormReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits until the storm ends by itself (a [`storm_count`] reaching its
    /// count, or a failed fire) and reports what it fired. Every fire of a
    /// storm with a count restarts the `watchdog` period, so a loaded
    /// machine makes the wait longer, not failed; a whole period without a
    /// fire stops the storm and fails the wait. A storm without a count
    /// only ends through [`StormHandle::stop`]: waiting on one fails after
    /// one period.
    pub fn wait(mut self, watchdog: Duration) -> Result<StormReport, Error> {
        let limit = self.limit;
        let progress = |h: &StormHandle| limit.map_or(0, |_| h.fired());
        let mut dog = testvm::Watchdog::new(watchdog, progress(&self));
        while !self.is_finished() {
            if let Err(stalled) = dog.check(progress(&self)) {
                let report = self.stop();
                return Err(Error::Check(format!(
                    "the storm did not end at its watchdog: {stalled}; {} fires of {}",
                    report.total,
                    limit.map_or("no count".into(), |n| n.to_string())
                )));
            }
            thread::sleep(Duration::from_micros(500));
        }
        Ok(self.join())
    }

    fn join(&mut self) -> StormReport {
        // A panicked storm thread still leaves its per-vector counts behind;
        // the report is built from those.
        let panicked = self
            .thread
            .take()
            .is_some_and(|thread| thread.join().is_err());
        let mut per_vector = BTreeMap::new();
        for (vector, fired) in self.shared.vectors.iter().zip(&self.shared.fired) {
            *per_vector.entry(*vector).or_insert(0) += fired.load(Ordering::Relaxed);
        }
        let outcomes = *lock(&self.shared.outcomes);
        let elapsed = lock(&self.shared.elapsed)
            .unwrap_or_else(|| self.clock.elapsed().saturating_sub(self.started));
        StormReport {
            total: per_vector.values().sum(),
            per_vector,
            signalled: outcomes.signalled,
            latched: outcomes.latched,
            dropped: outcomes.dropped,
            elapsed,
            error: lock(&self.shared.failure).take(),
            panicked,
        }
    }
}

impl Drop for StormHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shared.stop.store(true, Ordering::Relaxed);
            self.join();
        }
    }
}

/// What a storm fired.
#[derive(Debug)]
pub struct StormReport {
    /// Fires per vector (a vector listed twice is summed).
    pub per_vector: BTreeMap<u16, u64>,
    /// All fires: the sum of `per_vector`.
    pub total: u64,
    /// Fires that wrote a trigger eventfd.
    pub signalled: u64,
    /// Fires latched in a pending bit.
    pub latched: u64,
    /// Fires dropped by a disabled source or vector.
    pub dropped: u64,
    /// From the start of the storm to its end, on the storm's clock.
    pub elapsed: Duration,
    /// The error that ended the storm early, if any.
    pub error: Option<vfio_vectors::Error>,
    /// The storm thread panicked (outcome counts are then zero).
    pub panicked: bool,
}

impl StormReport {
    /// Average fires per second over the storm.
    pub fn rate_per_sec(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.total as f64 / seconds
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use vfio_vectors::MsixSource;

    const WATCHDOG: Duration = Duration::from_secs(30);

    fn enabled_plain(count: u16) -> SoftwareSource {
        let mut source = SoftwareSource::new(count).unwrap();
        source.enable(count).unwrap();
        source
    }

    /// The eventfd count, consumed; 0 when nothing was signalled.
    fn drain(source: &SoftwareSource, vector: u16) -> u64 {
        irqfd_routes::eventfd_drain(source.trigger(vector).unwrap()).unwrap()
    }

    #[test]
    fn storm_count_fires_exactly_total_round_robin() {
        let source = enabled_plain(4);
        let report = storm_count(&source, vec![0, 1, 2], 1000)
            .unwrap()
            .wait(WATCHDOG)
            .unwrap();
        assert!(report.error.is_none());
        assert!(!report.panicked);
        assert_eq!(report.total, 1000);
        assert_eq!(report.per_vector.get(&0), Some(&334));
        assert_eq!(report.per_vector.get(&1), Some(&333));
        assert_eq!(report.per_vector.get(&2), Some(&333));
        assert_eq!(report.signalled, 1000);
        assert_eq!(drain(&source, 0), 334);
        assert_eq!(source.stats(2).unwrap().signalled, 333);
    }

    #[test]
    fn storm_outcomes_add_up_with_masked_and_not_enabled_vectors() {
        let mut source = SoftwareSource::maskable(4).unwrap();
        source.enable(2).unwrap();
        source.mask(1).unwrap();
        let report = storm_count(&source, vec![0, 1, 3], 300)
            .unwrap()
            .wait(WATCHDOG)
            .unwrap();
        // Vector 3 is not enabled yet: held masked by the host, it latches.
        assert_eq!(report.signalled, 100);
        assert_eq!(report.latched, 200);
        assert_eq!(report.dropped, 0);
        assert_eq!(
            report.signalled + report.latched + report.dropped,
            report.total
        );
        let fired: u64 = [0, 1, 3]
            .iter()
            .map(|&v| source.stats(v).unwrap().fired)
            .sum();
        assert_eq!(fired, report.total);
    }

    #[test]
    fn unpaced_storm_stops_and_counts_add_up() {
        let source = enabled_plain(2);
        let storm = storm(&source, vec![0, 1], None).unwrap();
        // Stop once it has fired, however slowly a loaded machine
        // schedules its thread: only a whole watchdog period without a
        // fire fails.
        let mut dog = testvm::Watchdog::new(WATCHDOG, storm.fired());
        while storm.fired() < 1000 {
            if let Err(stalled) = dog.check(storm.fired()) {
                panic!("the storm stopped firing before 1000 fires: {stalled}");
            }
            thread::sleep(Duration::from_micros(200));
        }
        let report = storm.stop();
        assert!(report.total >= 1000);
        assert_eq!(report.per_vector.values().sum::<u64>(), report.total);
        assert_eq!(drain(&source, 0) + drain(&source, 1), report.total);
    }

    /// A clock that moves only when the storm sleeps, and that checks at
    /// every reading that the fires so far are not ahead of the rate.
    #[derive(Debug)]
    struct SteppedClock {
        now: Mutex<Duration>,
        source: SoftwareSource,
        rate: u64,
        /// (time, fires so far) at every reading.
        readings: Mutex<Vec<(Duration, u64)>>,
    }

    impl Clock for SteppedClock {
        fn elapsed(&self) -> Duration {
            let now = *self.now.lock().unwrap();
            let fired = self.source.stats(0).unwrap().fired;
            self.readings.lock().unwrap().push((now, fired));
            now
        }
        fn sleep(&self, duration: Duration) {
            *self.now.lock().unwrap() += duration;
        }
    }

    #[test]
    fn paced_storm_never_runs_ahead_of_its_deadline_and_fires_its_rate() {
        const RATE: u64 = 100_000;
        const TOTAL: u64 = 20_000;
        let source = enabled_plain(1);
        let clock = Arc::new(SteppedClock {
            now: Mutex::new(Duration::ZERO),
            source: source.clone(),
            rate: RATE,
            readings: Mutex::new(Vec::new()),
        });
        let report = start(
            &source,
            StormConfig {
                vectors: vec![0],
                rate_per_sec: Some(RATE),
                limit: Some(TOTAL),
                clock: clock.clone(),
            },
        )
        .unwrap()
        .wait(WATCHDOG)
        .unwrap();
        assert_eq!(report.total, TOTAL);
        let batch = paced_batch(RATE);
        let readings = clock.readings.lock().unwrap();
        // Start, one reading after each batch, and the end.
        assert_eq!(readings.len() as u64, TOTAL / batch + 2);
        for &(now, fired) in readings.iter() {
            // Fires allowed by `now`: the rate's share plus the one batch
            // fired before the pacing looks at the clock.
            // (Rounded up: the deadlines come from f64 seconds.)
            let allowed =
                (now.as_nanos() * u128::from(clock.rate)).div_ceil(1_000_000_000) as u64 + batch;
            assert!(
                fired <= allowed,
                "{fired} fires at {now:?}: ahead of {RATE}/s by more than one batch"
            );
        }
        // On a clock that sleeps exactly, pacing waits exactly as long as
        // the rate needs and no longer: TOTAL / RATE (to the nanosecond the
        // f64 deadlines allow).
        let expected = Duration::from_nanos(TOTAL * 1_000_000_000 / RATE);
        let off = report.elapsed.abs_diff(expected);
        assert!(
            off <= Duration::from_nanos(1),
            "{:?} for {TOTAL} fires at {RATE}/s",
            report.elapsed
        );
    }

    #[test]
    fn dropping_a_storm_handle_stops_it() {
        let source = enabled_plain(1);
        drop(storm(&source, vec![0], None).unwrap());
        let fired = source.stats(0).unwrap().fired;
        // The thread is joined: the only fire from now on is ours.
        source.fire(0).unwrap();
        assert_eq!(source.stats(0).unwrap().fired, fired + 1);
    }

    #[test]
    fn empty_storm_fires_nothing() {
        let source = enabled_plain(1);
        let report = storm_count(&source, Vec::new(), 10)
            .unwrap()
            .wait(WATCHDOG)
            .unwrap();
        assert_eq!(report.total, 0);
    }

    #[test]
    fn a_storm_on_a_vector_the_source_lacks_is_refused_before_any_fire() {
        let source = enabled_plain(4);
        assert!(matches!(
            storm(&source, vec![0, 4], None),
            Err(Error::Source(vfio_vectors::Error::VectorOutOfRange {
                vector: 4,
                count: 4
            }))
        ));
        assert_eq!(source.stats(0).unwrap().fired, 0);
    }

    #[test]
    fn waiting_on_a_storm_without_a_count_fails_at_the_watchdog() {
        let source = enabled_plain(1);
        let storm = start(
            &source,
            StormConfig {
                rate_per_sec: Some(0),
                ..StormConfig::new(vec![0])
            },
        )
        .unwrap();
        let err = storm.wait(Duration::from_millis(20)).unwrap_err();
        assert!(err.to_string().contains("watchdog"), "{err}");
        assert_eq!(source.stats(0).unwrap().fired, 0, "Some(0) fires nothing");
    }
}
