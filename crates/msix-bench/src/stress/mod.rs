//! `msix-bench stress`: the bench's storm, Linux mask cycle and pending
//! check under every policy, with and without source masking, round after
//! round, while load runs beside them on purpose ([`load`]).
//!
//! A busy machine (builds, other KVM guests, emulated guests) once made the
//! storm count interrupts "delivered while masked" that a quiet one never
//! did. This mode recreates that machine and repeats the exact checks of the
//! bench ([`crate::bench::check_row`]) in every round, counting the
//! masked-window deliveries as violations (raised after the mask took
//! effect: must be 0) and late ones (raised before it, injected late by the
//! host: legal) apart. It is bounded by rounds; `--duration` only decides
//! how many rounds start, never what a check sees.

pub mod load;
pub mod report;

use std::time::{Duration, Instant};

use msix_accel::Policy;

use crate::bench::{self, check_row, measure_row, Subject};
use crate::Error;
use load::{Load, LoadConfig};
use report::{StressReport, SubjectTotals};

/// Linux mask cycles per policy per round.
pub const CYCLES_PER_ROUND: u64 = 200;
/// Storm length per policy per round, in guest programs of
/// [`bench::workload::STORM_CHUNK`] mask cycles.
pub const STORM_CHUNKS_PER_ROUND: u64 = 4;
/// Rounds when neither `--rounds` nor `--duration` is given.
pub const DEFAULT_ROUNDS: u64 = 3;
/// Largest `--rounds`.
pub const MAX_ROUNDS: u64 = 1_000_000;
/// Largest `--duration`, in seconds (a day).
pub const MAX_DURATION_S: u64 = 86_400;
/// Largest `--hogs`.
pub const MAX_HOGS: usize = 64;
/// How long the loads still starting may go without progress (a churn
/// guest on a loaded machine) before the run fails.
const LOAD_WATCHDOG: Duration = Duration::from_secs(120);

/// What to run, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The most rounds to run (`None`: as many as `duration` allows).
    pub rounds: Option<u64>,
    /// Start rounds until this much time has passed.
    pub duration: Option<Duration>,
    /// Print one JSON document instead of the table.
    pub json: bool,
    /// The load beside the checks.
    pub load: LoadConfig,
}

impl Options {
    /// Parses the stress mode's flags; `Ok(None)` for `--help`.
    pub fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let mut o = Options {
            rounds: None,
            duration: None,
            json: false,
            load: LoadConfig::all(),
        };
        let mut no_load = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-h" | "--help" => return Ok(None),
                "--json" => o.json = true,
                "--no-load" => no_load = true,
                "--rounds" => o.rounds = Some(bounded(it.next(), "--rounds", 1, MAX_ROUNDS)?),
                "--duration" => {
                    let s = bounded(it.next(), "--duration", 1, MAX_DURATION_S)?;
                    o.duration = Some(Duration::from_secs(s));
                }
                "--hogs" => {
                    o.load.hogs = bounded(it.next(), "--hogs", 0, MAX_HOGS as u64)? as usize;
                }
                other => {
                    return Err(format!(
                        "unknown argument {other:?} (see msix-bench stress --help)"
                    ))
                }
            }
        }
        if no_load {
            o.load = LoadConfig::none();
        }
        if o.rounds.is_none() && o.duration.is_none() {
            o.rounds = Some(DEFAULT_ROUNDS);
        }
        Ok(Some(o))
    }
}

fn bounded(value: Option<&String>, flag: &str, min: u64, max: u64) -> Result<u64, String> {
    let v = value.ok_or_else(|| format!("{flag} needs a number"))?;
    v.parse()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{flag}: {v:?} is not a number in {min}..={max}"))
}

/// `msix-bench stress --help` (and `msix-bench help stress`).
pub const HELP: &str = "\
usage: msix-bench stress [--rounds N] [--duration SECONDS] [--hogs N] [--no-load] [--json]

Runs, round after round, the bench's storm (vector 0 fired at full rate
while the guest cycles its mask, 100 masked windows), Linux mask cycle (200
cycles: exact exit count) and pending check (3 fires while masked: 0 then
exactly 1) under every policy (fast, strict, trap), each with and without
source masking, in a fresh real KVM guest per policy and round, while load
runs beside them on purpose:
  - CPU hogs: spinning threads, one per CPU by default;
  - a second KVM guest whose thread creates and destroys guests, irqfds and
    routes in a loop (64-vector bring-up, mask and unmask all, fire all);
  - cargo-like file I/O: 1 MiB files written, fsynced, read back, unlinked.

Prints one line per round and a table per policy, the deliveries inside a
masked window as violations (raised after the mask took effect: must be 0)
and late ones (raised before it and injected late by the host: legal)
apart, and last `N passed, N failed` (one run = one policy in one round).

OPTIONS:
    --rounds N          rounds to run, 1..=1000000 (default 3; with
                        --duration, the most to run)
    --duration SECONDS  start rounds until SECONDS (1..=86400) have passed;
                        decides only how many rounds run, every check is
                        per round
    --hogs N            CPU hogs, 0..=64 (default: one per CPU)
    --no-load           no load at all (to compare)
    --json              print one JSON document (docs/performance.md)
    -h, --help          this text

EXIT STATUS:
    0 every check of every round held; 1 a check failed (or a round or the
    load could not run); 2 bad usage or /dev/kvm missing or not accessible.
";

/// Every subject the stress runs: our policies, with and without source
/// masking.
pub fn subjects() -> Vec<Subject> {
    Policy::ALL
        .into_iter()
        .flat_map(|policy| {
            [false, true]
                .into_iter()
                .map(move |maskable| Subject::Ours { policy, maskable })
        })
        .collect()
}

/// Runs the stress from the command line (arguments after `stress`);
/// returns the process exit code.
pub fn run_cli(args: &[String]) -> i32 {
    let options = match Options::parse(args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return 0;
        }
        Err(e) => {
            eprintln!("msix-bench stress: {e}");
            return 2;
        }
    };
    if let Err(e) = msix_rig::sys::check_kvm() {
        eprintln!("msix-bench stress: {e}");
        return 2;
    }
    let report = match run(&options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("msix-bench stress: {e}");
            return 1;
        }
    };
    if options.json {
        if !crate::json::print_json("msix-bench stress", &report) {
            return 1;
        }
    } else {
        print!("{}", report.table());
    }
    for f in &report.failures {
        eprintln!("msix-bench stress: FAILED: {f}");
    }
    i32::from(report.failed > 0 || !report.load.errors.is_empty())
}

/// Runs the rounds under load. Failed checks are in the report; an error
/// is returned only when the load cannot run.
pub fn run(options: &Options) -> Result<StressReport, Error> {
    let start = Instant::now();
    if let Err(e) = msix_rig::sys::raise_nofile_limit() {
        eprintln!("msix-bench stress: could not raise RLIMIT_NOFILE: {e}");
    }
    let load = Load::start(options.load)?;
    load.wait_running(LOAD_WATCHDOG)?;
    let bench_options = bench::Options {
        cycles: CYCLES_PER_ROUND,
        storm_chunks: STORM_CHUNKS_PER_ROUND,
        ..bench::Options::quick()
    };
    let subjects = subjects();
    let mut totals: Vec<SubjectTotals> = subjects
        .iter()
        .map(|s| SubjectTotals::new(s.name()))
        .collect();
    let mut failures = Vec::new();
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut round = 0u64;
    let more = |round: u64| {
        options.rounds.is_none_or(|r| round < r)
            && options.duration.is_none_or(|d| start.elapsed() < d)
    };
    while more(round) {
        round += 1;
        let round_start = Instant::now();
        let (mut round_failed, mut round_violations, mut round_late) = (0u64, 0u64, 0u64);
        for (subject, total) in subjects.iter().zip(totals.iter_mut()) {
            total.runs += 1;
            let problems = match measure_row(*subject, &bench_options) {
                Ok(row) => {
                    total.add(&row);
                    round_violations += row.storm.delivered_while_masked;
                    round_late += row.storm.late_before_mask;
                    check_row(*subject, &row)
                }
                Err(e) => vec![format!("{}: {e}", subject.name())],
            };
            if problems.is_empty() {
                passed += 1;
            } else {
                failed += 1;
                round_failed += 1;
                total.failed += 1;
                failures.extend(problems.into_iter().map(|p| format!("round {round}: {p}")));
            }
        }
        if !options.json {
            println!(
                "round {round}: {} of {} runs passed; masked-window deliveries: {round_violations} violations, {round_late} late; {:.1} s",
                subjects.len() as u64 - round_failed,
                subjects.len(),
                round_start.elapsed().as_secs_f64()
            );
        }
    }
    let load = load.stop();
    for e in &load.errors {
        failures.push(format!("load: {e}"));
    }
    Ok(StressReport {
        schema: 1,
        rounds: round,
        rounds_requested: options.rounds.unwrap_or(0),
        duration_s: options.duration.map(|d| d.as_secs()),
        wall_s: start.elapsed().as_secs_f64(),
        cycles_per_round: CYCLES_PER_ROUND,
        storm_cycles_per_round: STORM_CHUNKS_PER_ROUND * bench::workload::STORM_CHUNK,
        violations: totals.iter().map(|t| t.violations).sum(),
        late: totals.iter().map(|t| t.late).sum(),
        policies: totals,
        passed,
        failed,
        load,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn rounds_default_and_duration_alone_has_no_round_cap() {
        let o = parse(&[]).unwrap().unwrap();
        assert_eq!(o.rounds, Some(DEFAULT_ROUNDS));
        assert_eq!(o.duration, None);
        assert_eq!(o.load, LoadConfig::all());
        let o = parse(&["--duration", "600"]).unwrap().unwrap();
        assert_eq!(o.rounds, None);
        assert_eq!(o.duration, Some(Duration::from_secs(600)));
        let o = parse(&["--duration", "600", "--rounds", "7"])
            .unwrap()
            .unwrap();
        assert_eq!(o.rounds, Some(7));
    }

    #[test]
    fn bounds_and_unknown_flags_are_refused() {
        for (args, needle) in [
            (&["--rounds", "0"][..], "1..=1000000"),
            (&["--rounds", "1000001"], "1..=1000000"),
            (&["--duration", "0"], "1..=86400"),
            (&["--duration", "99999999999"], "1..=86400"),
            (&["--hogs", "65"], "0..=64"),
            (&["--rounds"], "needs a number"),
            (&["--frob"], "unknown argument"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert_eq!(parse(&["--json", "--help"]), Ok(None));
    }

    #[test]
    fn no_load_and_hogs_choose_the_load() {
        let o = parse(&["--hogs", "0"]).unwrap().unwrap();
        assert_eq!(o.load.hogs, 0);
        assert!(o.load.churn && o.load.io);
        let o = parse(&["--no-load", "--hogs", "3"]).unwrap().unwrap();
        assert_eq!(o.load, LoadConfig::none());
    }

    #[test]
    fn every_policy_runs_with_and_without_source_masking() {
        let names: Vec<String> = subjects().iter().map(Subject::name).collect();
        assert_eq!(
            names,
            [
                "fast",
                "fast+srcmask",
                "strict",
                "strict+srcmask",
                "trap",
                "trap+srcmask"
            ]
        );
    }

    #[test]
    fn help_states_the_bounds_the_parser_enforces() {
        assert!(HELP.contains(&format!("1..={MAX_ROUNDS}")));
        assert!(HELP.contains(&format!("1..={MAX_DURATION_S}")));
        assert!(HELP.contains(&format!("0..={MAX_HOGS}")));
        assert!(HELP.contains(&format!("default {DEFAULT_ROUNDS}")));
    }
}
