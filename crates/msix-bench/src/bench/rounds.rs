//! Interleaved, repeated measurement: in each round every row runs one
//! batch of Linux mask cycles and a few latency samples, the rows in an
//! order shuffled per round from a fixed seed (A C B ... B A C ...), so
//! that drift and neighbours on a shared host hit every row alike, and no
//! row always follows the same one. Each round gives every row one sample
//! of its guest time per cycle; [`super::stats`] turns them into medians,
//! intervals and paired ratios.

use super::sched::{RoundSched, RowThreads};
use super::stats::Rng;
use super::workload::{
    cycle_batch, pending_latency, readback_latency, unmasked_latency, CycleResult, Target,
};
use crate::Error;
use msix_rig::clock::Calibration;

/// How much each round measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundPlan {
    /// Rounds.
    pub rounds: u64,
    /// Linux mask cycles per row per round (one guest program).
    pub cycles_per_round: u64,
    /// Latency samples of each kind per row per round.
    pub latency_per_round: u64,
    /// Seed of the per-round order.
    pub seed: u64,
}

/// What the rounds measured for one row.
#[derive(Clone, Debug, Default)]
pub struct RowSamples {
    /// Guest TSC nanoseconds per cycle, one value per round.
    pub guest_ns: Vec<f64>,
    /// Process CPU nanoseconds per cycle, one value per round.
    pub host_cpu_ns: Vec<f64>,
    /// Every round's cycles together (exact counts).
    pub total: CycleResult,
    /// Unmasked deliveries (source signal to guest handler), nanoseconds.
    pub unmasked_ns: Vec<f64>,
    /// Pending deliveries at unmask, nanoseconds.
    pub pending_ns: Vec<f64>,
    /// Pending samples whose fire was delivered while masked (so nothing
    /// was pending at the unmask).
    pub pending_missing: u64,
    /// Unmask write to the first read of Vector Control that shows it,
    /// nanoseconds.
    pub readback_ns: Vec<f64>,
    /// Uncertainty of each calibration used, nanoseconds.
    pub calibration_ns: Vec<f64>,
    /// What the scheduler did during each round's batch.
    pub sched: Vec<RoundSched>,
}

/// A row to measure in the rounds.
#[derive(Clone, Copy)]
pub struct RoundRow<'a> {
    /// Its guest and device.
    pub target: &'a dyn Target,
    /// Whether it holds a masked vector's message (not a floor), so that a
    /// pending delivery at unmask can be timed.
    pub holds_pending: bool,
    /// Its vCPU and servicer threads.
    pub threads: &'a RowThreads,
}

impl std::fmt::Debug for RoundRow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoundRow")
            .field("holds_pending", &self.holds_pending)
            .finish_non_exhaustive()
    }
}

/// One row's share of a round.
fn measure_once(
    row: RoundRow<'_>,
    plan: &RoundPlan,
    samples: &mut RowSamples,
) -> Result<(), Error> {
    let t = row.target;
    let placed = t.servicer_placement();
    let before = row.threads.snapshot();
    let batch = cycle_batch(t, plan.cycles_per_round)?;
    let mut sched = before.per_cycle(&row.threads.snapshot(), batch.cycles);
    if let (Some([s0, o0]), Some([s1, o1])) = (placed, t.servicer_placement()) {
        let (same, other) = (s1 - s0, o1 - o0);
        sched.servicer_same_cpu = same as f64 / (same + other).max(1) as f64;
    }
    samples.sched.push(sched);
    let per = |v: u64| v as f64 / batch.cycles.max(1) as f64;
    samples.guest_ns.push(per(batch.guest_ns));
    samples.host_cpu_ns.push(per(batch.host_cpu_ns));
    samples.total.add(&batch);
    if plan.latency_per_round == 0 {
        return Ok(());
    }
    let calibration = Calibration::measure(t.vm())?;
    samples
        .calibration_ns
        .push(calibration.uncertainty_ns as f64);
    for _ in 0..plan.latency_per_round {
        samples
            .unmasked_ns
            .push(unmasked_latency(t, &calibration)? as f64);
    }
    for _ in 0..plan.latency_per_round * u64::from(row.holds_pending) {
        match pending_latency(t)? {
            Some(ns) => samples.pending_ns.push(ns as f64),
            None => samples.pending_missing += 1,
        }
        samples.readback_ns.push(readback_latency(t)? as f64);
    }
    Ok(())
}

/// Runs `plan` over `targets` (a row that fails is dropped from later
/// rounds and its error returned in its place); `tick` is called after
/// each round.
pub fn measure(
    targets: &[Option<RoundRow<'_>>],
    plan: &RoundPlan,
    mut tick: impl FnMut(u64),
) -> Vec<Result<RowSamples, Error>> {
    let mut rows: Vec<Result<RowSamples, Error>> =
        targets.iter().map(|_| Ok(RowSamples::default())).collect();
    let mut rng = Rng::new(plan.seed);
    let mut order: Vec<usize> = (0..targets.len()).collect();
    for round in 0..plan.rounds {
        rng.shuffle(&mut order);
        for &i in &order {
            let (Some(t), Ok(samples)) = (targets[i], rows[i].as_mut()) else {
                continue;
            };
            if let Err(e) = measure_once(t, plan, samples) {
                rows[i] = Err(e);
            }
        }
        tick(round + 1);
    }
    rows
}
