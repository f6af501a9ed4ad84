//! One run of the bench: every row built and brought up, the interleaved
//! rounds, the semantic checks (storm, pending), the bring-ups in Linux's
//! two orders, then the statistics, the checks and the report.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use msix_accel::Policy;

use super::floor::FloorKind;
use super::idle;
use super::report::{
    Check, CheckOutcome, Host, LatencyReport, Percentiles, RatioReport, Report, RowReport,
    SchedReport,
};
use super::rounds::{self, RoundPlan, RoundRow, RowSamples};
use super::sched::{self, RowThreads};
use super::stats::{self, median, median_ci95, paired_ratio, RatioEstimate, Rng};
use super::workload::{self, BringUpOrder, BringUpResult, PendingResult, StormResult, Target};
use super::{check_exits, check_semantics, Options, Subject, SEED};
use crate::Error;
use msix_rig::sys;

/// Pairs of our rows whose ratio the run reports (row, against).
pub const OURS_PAIRS: [(&str, &str); 13] = [
    ("auto+srcmask", "fast+srcmask"),
    ("auto+srcmask", "strict+srcmask"),
    ("crosvm-like", "auto+srcmask"),
    ("fast+srcmask+poll", "fast+srcmask"),
    ("fast+srcmask+batch", "fast+srcmask"),
    ("fast+srcmask+defer", "fast+srcmask"),
    ("fast+srcmask+defer", "strict+srcmask"),
    ("crosvm-like", "fast+srcmask+defer"),
    ("fast+srcmask", "strict+srcmask"),
    ("fast+srcmask+poll", "strict+srcmask"),
    ("fast+srcmask+batch", "strict+srcmask"),
    ("crosvm-like", "fast+srcmask+poll"),
    ("crosvm-like", "fast+srcmask+batch"),
];

/// The most route commits `fast` may spend bringing up 2048 vectors.
pub const MAX_FAST_COMMITS_2048: u64 = 64;

fn host(tsc_khz: u32) -> Host {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    Host {
        kernel,
        cpus,
        tsc_khz,
    }
}

fn percentiles(xs: &[f64]) -> Option<Percentiles> {
    Some(Percentiles {
        p50_ns: stats::percentile(xs, 0.5)?,
        p99_ns: stats::percentile(xs, 0.99)?,
        samples: xs.len(),
    })
}

fn ratio(num: &RowSamples, den: &RowSamples, name: &str, against: &str) -> RatioEstimate {
    let mut rng = Rng::from_text(SEED, &format!("{name}/{against}"));
    paired_ratio(&num.guest_ns, &den.guest_ns, &mut rng)
}

/// Builds a row's guest with an 8-entry device, entry 0 live, warmed up;
/// with the threads its construction started (its vCPU, its servicer).
fn build_row(subject: Subject) -> Result<(Box<dyn Target>, RowThreads), Error> {
    let before = sched::tasks();
    let target = subject.build(8)?;
    workload::bring_up_entry0(target.as_ref())?;
    workload::warm_up(target.as_ref())?;
    // Listed after the warm-up: a new thread names itself once it runs.
    let threads = RowThreads::from_tasks(&sched::new_tasks(&before, &sched::tasks()));
    Ok((target, threads))
}

/// Brings up `vectors` entries in `order` in a fresh guest.
fn bring_up(subject: Subject, vectors: u16, order: BringUpOrder) -> Result<BringUpResult, Error> {
    let target = subject.build(vectors)?;
    workload::bring_up(target.as_ref(), vectors, order)
}

/// The run's progress on stderr: a bar on a terminal; otherwise (output
/// redirected, where the bar hides itself) one line per stage and per
/// tenth of the rounds, so that a log shows where a run of minutes is.
struct Progress {
    bar: ProgressBar,
    start: Instant,
}

impl Progress {
    fn new(steps: u64, start: Instant) -> Progress {
        let bar = ProgressBar::new(steps);
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Progress { bar, start }
    }

    /// A stage begins: a line when the bar is hidden.
    fn stage(&self, what: &str) {
        if self.bar.is_hidden() {
            eprintln!(
                "msix-bench: {:>6.1} s: {what}",
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    /// What the bar shows now.
    fn doing(&self, what: String) {
        self.bar.set_message(what);
    }

    fn step(&self) {
        self.bar.inc(1);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Runs every row and workload; failures are collected in the report.
pub fn run(options: &Options) -> Report {
    let start = Instant::now();
    let mut failures: Vec<(Check, String)> = Vec::new();
    if let Err(e) = sys::raise_nofile_limit() {
        // Only the largest tables need it; they report their own error.
        eprintln!("msix-bench: could not raise RLIMIT_NOFILE: {e}");
    }
    let load_start = sched::load_average();
    let subjects = Subject::selected(options);
    let with_semantics: Vec<Subject> = subjects
        .iter()
        .copied()
        .filter(|s| !matches!(s, Subject::Floor(_)))
        .collect();
    let plan = RoundPlan {
        rounds: options.rounds,
        cycles_per_round: options.cycles_per_round(),
        latency_per_round: options.latency_per_round,
        seed: SEED,
    };
    let bring_up_steps = with_semantics.len() * options.bring_up.len() * BringUpOrder::ALL.len();
    let steps =
        subjects.len() as u64 + plan.rounds + with_semantics.len() as u64 + bring_up_steps as u64;
    let bar = Progress::new(steps, start);

    // Every row's guest, alive for the whole of the rounds.
    bar.stage(&format!("booting {} rows' guests", subjects.len()));
    let mut targets: Vec<Option<Box<dyn Target>>> = Vec::new();
    let mut threads: Vec<RowThreads> = Vec::new();
    for s in &subjects {
        bar.doing(format!("{}: boot", s.name()));
        match build_row(*s) {
            Ok((t, th)) => {
                targets.push(Some(t));
                threads.push(th);
            }
            Err(e) => {
                failures.push((Check::RowsRan, format!("{}: {e}", s.name())));
                targets.push(None);
                threads.push(RowThreads::default());
            }
        }
        bar.step();
    }
    let tsc_khz = targets
        .iter()
        .flatten()
        .map(|t| t.vm().tsc_khz())
        .next()
        .unwrap_or(0);

    let refs: Vec<Option<RoundRow<'_>>> = subjects
        .iter()
        .zip(&targets)
        .zip(&threads)
        .map(|((s, t), threads)| {
            t.as_deref().map(|target| RoundRow {
                target,
                holds_pending: !matches!(s, Subject::Floor(_)),
                threads,
            })
        })
        .collect();
    bar.stage(&format!(
        "rounds: {} × {} Linux mask cycles per row",
        plan.rounds, plan.cycles_per_round
    ));
    let tenth = plan.rounds.div_ceil(10).max(1);
    let measured = rounds::measure(&refs, &plan, |round| {
        bar.doing(format!("round {round}/{}", plan.rounds));
        bar.step();
        if round % tenth == 0 && round < plan.rounds {
            bar.stage(&format!("rounds: {round}/{} done", plan.rounds));
        }
    });
    let mut samples: Vec<Option<RowSamples>> = Vec::new();
    for ((s, t), m) in subjects.iter().zip(&targets).zip(measured) {
        match (t, m) {
            (Some(t), Ok(m)) => {
                if let Some(f) = check_exits(*s, t.policy_in_force(), m.total.cycles, m.total.exits)
                {
                    failures.push((Check::ExactExits, f));
                }
                samples.push(Some(m));
            }
            (Some(_), Err(e)) => {
                failures.push((Check::RowsRan, format!("{}: rounds: {e}", s.name())));
                samples.push(None);
            }
            (None, _) => samples.push(None),
        }
    }

    // The servicers over an idle guest, right after the last mask traffic.
    let interval = if options.quick {
        idle::IDLE_QUICK
    } else {
        idle::IDLE_FULL
    };
    bar.stage(&format!(
        "idle: every guest for {} s",
        interval.as_secs_f64()
    ));
    let named: Vec<(String, &RowThreads)> = subjects
        .iter()
        .zip(&targets)
        .zip(&threads)
        .filter(|((_, t), _)| t.is_some())
        .map(|((s, _), th)| (s.name(), th))
        .collect();
    let idle = idle::measure(&named, interval);

    // The semantic checks, in the same guests (after the rounds: the storm
    // watches the masked window, which costs ioctls per exit).
    bar.stage(&format!(
        "storm and pending checks: {} rows",
        with_semantics.len()
    ));
    let mut semantics: Vec<Option<(StormResult, PendingResult)>> = Vec::new();
    for (s, t) in subjects.iter().zip(&targets) {
        let t = match (s, t) {
            (Subject::Floor(_), _) | (_, None) => {
                semantics.push(None);
                continue;
            }
            (_, Some(t)) => t,
        };
        bar.doing(format!("{}: storm, pending", s.name()));
        let result = workload::storm(t.as_ref(), options.storm_chunks, 200)
            .and_then(|storm| Ok((storm, workload::pending(t.as_ref())?)));
        match result {
            Ok((storm, pending)) => {
                failures.extend(check_semantics(*s, &storm, &pending));
                semantics.push(Some((storm, pending)));
            }
            Err(e) => {
                failures.push((
                    Check::RowsRan,
                    format!("{}: storm and pending: {e}", s.name()),
                ));
                semantics.push(None);
            }
        }
        bar.step();
    }
    drop(refs);
    let in_force: Vec<Option<String>> = targets
        .iter()
        .map(|t| {
            t.as_deref()
                .and_then(|t| t.policy_in_force())
                .map(|p| p.to_string())
        })
        .collect();
    let auto_medians: Vec<Option<[u64; 2]>> = targets
        .iter()
        .map(|t| t.as_deref().and_then(|t| t.auto_medians()))
        .collect();
    drop(targets);

    let sizes: Vec<String> = options.bring_up.iter().map(u16::to_string).collect();
    bar.stage(&format!(
        "bring-up of {} vectors in Linux's two orders: {} rows",
        sizes.join(", "),
        with_semantics.len()
    ));
    let mut bring_ups: Vec<Vec<BringUpResult>> = vec![Vec::new(); subjects.len()];
    for (i, s) in subjects.iter().enumerate() {
        if matches!(s, Subject::Floor(_)) {
            continue;
        }
        for &n in &options.bring_up {
            for order in BringUpOrder::ALL {
                bar.doing(format!("{}: bring-up of {n}, {}", s.name(), order.name()));
                match bring_up(*s, n, order) {
                    Ok(b) => {
                        let fast = matches!(
                            s,
                            Subject::Ours {
                                policy: Policy::Fast,
                                ..
                            } | Subject::Polling { .. }
                                | Subject::Batch { .. }
                                | Subject::Deferring
                        );
                        if fast && n == 2048 && b.route_commits > MAX_FAST_COMMITS_2048 {
                            failures.push((Check::FastBringUp, format!(
                                "{}: bringing up 2048 vectors in {} order took {} route commits, expected at most {MAX_FAST_COMMITS_2048}",
                                s.name(),
                                order.name(),
                                b.route_commits
                            )));
                        }
                        bring_ups[i].push(b);
                    }
                    Err(e) => failures.push((
                        Check::RowsRan,
                        format!(
                            "{}: bring-up of {n} in {} order: {e}",
                            s.name(),
                            order.name()
                        ),
                    )),
                }
                bar.step();
            }
        }
    }
    let load_end = sched::load_average();
    bar.stage("statistics");
    bar.finish();

    let floor = subjects
        .iter()
        .position(|s| *s == Subject::Floor(FloorKind::OneExit))
        .and_then(|i| samples[i].as_ref());
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let mut calibrations = Vec::new();
    for (i, s) in subjects.iter().enumerate() {
        let Some(m) = samples[i].as_ref() else {
            continue;
        };
        calibrations.extend_from_slice(&m.calibration_ns);
        let name = s.name();
        let (guest_median, guest_ci) = median_ci95(
            &m.guest_ns,
            &mut Rng::from_text(SEED, &format!("{name}/guest")),
        );
        let (host_median, host_ci) = median_ci95(
            &m.host_cpu_ns,
            &mut Rng::from_text(SEED, &format!("{name}/host")),
        );
        let vs_floor = match (s, floor) {
            (Subject::Peer(_), _) | (_, None) => None,
            (_, Some(f)) => Some(ratio(m, f, &name, "floor-1exit")),
        };
        if let Some(r) = vs_floor.filter(|_| !matches!(s, Subject::Floor(FloorKind::OneExit))) {
            ratios.push(RatioReport::new(&name, "floor-1exit", r));
        }
        let (storm, pending) = semantics[i].map_or((None, None), |(s, p)| (Some(s), Some(p)));
        rows.push(RowReport {
            name,
            kind: s.kind(),
            default: s.is_default(),
            policy_in_force: in_force[i].clone(),
            auto_medians_ns: auto_medians[i],
            source_masking: s.source_masking(),
            exits_per_cycle: m.total.exits as f64 / m.total.cycles.max(1) as f64,
            ioctls_per_cycle: super::report::CallsPerCycle::new(&m.total.calls, m.total.cycles),
            guest_ns_median: guest_median,
            guest_ns_ci95: guest_ci,
            host_cpu_ns_median: host_median,
            host_cpu_ns_ci95: host_ci,
            vs_floor: vs_floor.map(|r| r.ratio),
            vs_floor_ci95: vs_floor.map(|r| r.ci95),
            latency: LatencyReport {
                unmasked: percentiles(&m.unmasked_ns),
                pending_at_unmask: percentiles(&m.pending_ns),
                pending_delivered_while_masked: m.pending_missing,
                unmask_read_back: percentiles(&m.readback_ns),
            },
            storm,
            pending,
            bring_up: std::mem::take(&mut bring_ups[i]),
            sched: SchedReport::new(&m.sched),
            rounds_guest_ns: m.guest_ns.clone(),
            rounds_host_cpu_ns: m.host_cpu_ns.clone(),
            rounds_sched: m.sched.clone(),
        });
    }
    for base in ["fast", "fast+srcmask"] {
        let Some(b) = subjects
            .iter()
            .position(|s| s.name() == base)
            .and_then(|i| samples[i].as_ref())
        else {
            continue;
        };
        for (s, m) in subjects.iter().zip(&samples) {
            if let (Subject::Peer(_), Some(m)) = (s, m) {
                let name = s.name();
                ratios.push(RatioReport::new(&name, base, ratio(m, b, &name, base)));
            }
        }
    }

    // Our rows against each other: the polling servicer against the
    // sleeping one, and both against the 2-exit policy.
    for (name, against) in OURS_PAIRS {
        let find = |n: &str| {
            subjects
                .iter()
                .position(|s| s.name() == n)
                .and_then(|i| samples[i].as_ref())
        };
        if let (Some(m), Some(b)) = (find(name), find(against)) {
            ratios.push(RatioReport::new(name, against, ratio(m, b, name, against)));
        }
    }

    // Only a run that brings up 2048 vectors checks fast's route commits.
    let checks = Check::ALL
        .iter()
        .map(|&check| {
            let n = failures.iter().filter(|(c, _)| *c == check).count();
            let measured = check != Check::FastBringUp || options.bring_up.contains(&2048);
            CheckOutcome {
                check,
                held: (measured || n > 0).then_some(n == 0),
                failures: n,
            }
        })
        .collect();
    Report {
        schema: 2,
        quick: options.quick,
        rounds: plan.rounds,
        cycles_per_round: plan.cycles_per_round,
        cycles: plan.rounds * plan.cycles_per_round,
        latency_per_round: plan.latency_per_round,
        seed: SEED,
        storm_cycles: options.storm_chunks * workload::STORM_CHUNK,
        bring_up_sizes: options.bring_up.clone(),
        host: host(tsc_khz),
        load_average_start: load_start,
        load_average_end: load_end,
        calibration_uncertainty_ns: median(&calibrations),
        rows,
        ratios,
        idle,
        wall_s: start.elapsed().as_secs_f64(),
        failures: failures.into_iter().map(|(_, f)| f).collect(),
        checks,
    }
}
