//! The side-by-side benchmark (`msix-bench` with no subcommand): our three
//! policies with and without source-side masking, and models of the peer
//! VMMs ([`peer`]), run on the same workloads ([`workload`]) in one run in a
//! real KVM guest with the software source, reported as a table, JSON
//! ([`report`]) and an SVG chart ([`plot`]).

pub mod peer;
pub mod plot;
pub mod report;
pub mod sys;
pub mod workload;

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use msix_accel::Policy;

use crate::rig::{Rig, RigConfig};
use crate::Error;
use peer::{PeerModel, PeerRig};
use report::{Host, Report, Row, RowKind};
use workload::Target;

/// Largest `--cycles`: up to about ten seconds of Linux mask cycles per row
/// on a nested host (some 80 µs per `trap` cycle), so that a typo cannot
/// start a run of hours.
pub const MAX_CYCLES: u64 = 100_000;

/// What to run, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// CI mode: fewer cycles, a shorter storm, bring-up of 64 entries only.
    pub quick: bool,
    /// Print one JSON document instead of the tables.
    pub json: bool,
    /// Write an SVG bar chart here.
    pub plot: Option<String>,
    /// Linux mask cycles per row.
    pub cycles: u64,
    /// Storm length per row, in guest programs of
    /// [`workload::STORM_CHUNK`] mask cycles.
    pub storm_chunks: u64,
    /// Bring-up table sizes.
    pub bring_up: Vec<u16>,
}

impl Options {
    /// The full run (the README's main job).
    pub fn full() -> Options {
        Options {
            quick: false,
            json: false,
            plot: None,
            cycles: 2000,
            storm_chunks: 16,
            bring_up: vec![64, 512, 2048],
        }
    }

    /// The `--quick` run.
    pub fn quick() -> Options {
        Options {
            quick: true,
            cycles: 200,
            storm_chunks: 2,
            bring_up: vec![64],
            ..Options::full()
        }
    }

    /// Parses the bench's flags (not the subcommand).
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = if quick {
            Options::quick()
        } else {
            Options::full()
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => {}
                "--json" => o.json = true,
                "--plot" => {
                    let file = it.next().ok_or("--plot needs a FILE.svg")?;
                    o.plot = Some(file.clone());
                }
                "--cycles" => {
                    let n = it.next().ok_or("--cycles needs a number")?;
                    o.cycles = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_CYCLES).contains(n))
                        .ok_or_else(|| {
                            format!("--cycles: {n:?} is not a number in 1..={MAX_CYCLES}")
                        })?;
                }
                other => return Err(format!("unknown argument {other:?} (see --help)")),
            }
        }
        Ok(o)
    }
}

/// `msix-bench --help`.
pub const HELP: &str = "\
msix-bench: the msix-accel side-by-side MSI-X benchmark, scenario runner and stress mode

USAGE:
    msix-bench [--quick] [--json] [--plot FILE.svg] [--cycles N]
    msix-bench scenario [--policy fast|strict|trap] [--json] FILE...
    msix-bench stress [--rounds N] [--duration SECONDS] [--hogs N] [--no-load] [--json]
    msix-bench help [scenario|stress]
    msix-bench --help | --version

With no subcommand, runs the benchmark in a real KVM guest (software MSI-X
source) and prints one side-by-side table measured in one run:
  rows      fast, strict, trap (each also +srcmask: the source masks vectors)
            and models of peer VMMs: qemu-like, cloud-hypervisor-like,
            dragonball-like (see docs/performance.md)
  cycle     Linux mask cycle on entry 0 (mask, flush read, unmask): exits,
            KVM ioctls, guest TSC time and process CPU time per cycle
  storm     vector 0 fired at full rate while the guest cycles its mask:
            deliveries/s, deliveries while masked, lost after the storm;
            plus a pending check (3 fires while masked: exact is 0 then 1)
  bring-up  the guest programs and unmasks 64, 512, 2048 entries:
            KVM_SET_GSI_ROUTING calls and wall time
  ratios    each peer model against fast (x.xx×)

OPTIONS:
    --quick         CI run (< 30 s): 200 cycles, 50-cycle storm, bring-up 64 only
    --json          print one JSON document (fields in docs/performance.md)
    --plot FILE     also write an SVG bar chart (guest time and exits per
                    cycle); FILE must be writable, checked before measuring
    --cycles N      Linux mask cycles per row, 1..=100000 (default 2000,
                    quick 200)
    -h, --help      this text
    -V, --version   the version

SUBCOMMANDS:
    scenario FILE...  run scenario files (docs/scenarios.md) in a real guest;
                      `msix-bench help scenario` for its options
    stress            the storm, Linux cycle and pending checks under every
                      policy, round after round, beside CPU hogs, a guest
                      churning irqfds and routes, and file I/O;
                      `msix-bench help stress` for its options
    help [TOPIC]      this text, or the scenario runner's or stress mode's

EXIT STATUS:
    0 success; 1 a run failed or a check failed (fast not at 1 exit per
    cycle, strict 2, trap 3; any of ours delivering while masked, losing an
    interrupt, or not delivering a pending one exactly once); 2 bad usage,
    an unwritable --plot FILE, or /dev/kvm missing or not accessible (one
    line on stderr, before any measurement).
";

/// Runs the bench from the command line (flags after the program name);
/// returns the process exit code.
pub fn run_cli(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return 0;
    }
    let options = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("msix-bench: {e}");
            return 2;
        }
    };
    if let Some(path) = &options.plot {
        // Checked before measuring, not after a run of minutes.
        if let Err(e) = plot::check_writable(path) {
            eprintln!("msix-bench: --plot {path}: {e}");
            return 2;
        }
    }
    if let Err(e) = sys::check_kvm() {
        eprintln!("msix-bench: {e}");
        return 2;
    }
    let report = run(&options);
    if options.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("msix-bench: JSON: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", report.table());
        println!("\nwall time {:.1} s", report.wall_s);
    }
    let mut code = 0;
    if let Some(path) = &options.plot {
        if let Err(e) = plot::write_svg(&report, path) {
            eprintln!("msix-bench: --plot {path}: {e}");
            code = 1;
        }
    }
    for f in &report.failures {
        eprintln!("msix-bench: FAILED: {f}");
    }
    if report.failures.is_empty() {
        code
    } else {
        1
    }
}

/// One row to measure: one of our policies or a peer model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Our accelerator under a policy, with or without source masking.
    Ours {
        /// The policy.
        policy: Policy,
        /// Source-side masking.
        maskable: bool,
    },
    /// A peer model.
    Peer(PeerModel),
}

impl Subject {
    /// Every row, in report order.
    pub fn all() -> Vec<Subject> {
        let mut all = Vec::new();
        for policy in Policy::ALL {
            for maskable in [false, true] {
                all.push(Subject::Ours { policy, maskable });
            }
        }
        all.extend(PeerModel::ALL.map(Subject::Peer));
        all
    }

    /// The row's name in reports.
    pub fn name(&self) -> String {
        match *self {
            Subject::Ours { policy, maskable } if maskable => format!("{policy}+srcmask"),
            Subject::Ours { policy, .. } => policy.to_string(),
            Subject::Peer(model) => model.name().to_string(),
        }
    }

    /// Boots a guest with a `vectors`-entry device handled as this row says.
    pub fn build(&self, vectors: u16) -> Result<Box<dyn Target>, Error> {
        let watchdog = Duration::from_secs(60);
        Ok(match *self {
            Subject::Ours { policy, maskable } => Box::new(Rig::new(RigConfig {
                vectors,
                vcpus: 1,
                policy,
                maskable,
                watchdog,
                ..RigConfig::default()
            })?),
            Subject::Peer(model) => Box::new(PeerRig::new(model, vectors, watchdog)?),
        })
    }
}

/// Measures the cycle, storm and pending workloads of one row.
pub fn measure_row(subject: Subject, options: &Options) -> Result<Row, Error> {
    let target = subject.build(8)?;
    let t = target.as_ref();
    workload::bring_up_entry0(t)?;
    let cycle = workload::cycles(t, options.cycles)?;
    let storm = workload::storm(t, options.storm_chunks, 200)?;
    let pending = workload::pending(t)?;
    let (kind, maskable) = match subject {
        Subject::Ours { maskable, .. } => (RowKind::Ours, maskable),
        Subject::Peer(_) => (RowKind::Peer, false),
    };
    Ok(Row::new(
        subject.name(),
        kind,
        maskable,
        cycle,
        storm,
        pending,
    ))
}

/// What each of our policies must show, exactly; a list of what did not.
pub fn check_row(subject: Subject, row: &Row) -> Vec<String> {
    let Subject::Ours { policy, .. } = subject else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    let exits = match policy {
        Policy::Fast => 1,
        Policy::Strict => 2,
        Policy::Trap => 3,
    };
    if row.cycle.exits != exits * row.cycle.cycles {
        failures.push(format!(
            "{}: {} exits in {} cycles, expected exactly {exits} per cycle",
            row.policy, row.cycle.exits, row.cycle.cycles
        ));
    }
    if row.storm_delivered_while_masked != 0 {
        failures.push(format!(
            "{}: {} interrupts delivered while the guest had the vector masked",
            row.policy, row.storm_delivered_while_masked
        ));
    }
    if row.storm_lost != 0 {
        failures.push(format!(
            "{}: a fire after the storm was not delivered before the watchdog (lost)",
            row.policy
        ));
    }
    if row.pending_delivered_while_masked != 0 || row.pending_delivered_at_unmask != 1 {
        failures.push(format!(
            "{}: 3 fires while masked gave {} deliveries while masked and {} at unmask, expected 0 and 1",
            row.policy, row.pending_delivered_while_masked, row.pending_delivered_at_unmask
        ));
    }
    failures
}

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

/// Runs every row and workload; failures are collected in the report.
pub fn run(options: &Options) -> Report {
    let start = Instant::now();
    let mut failures = Vec::new();
    if let Err(e) = sys::raise_nofile_limit() {
        // Only the largest tables need it; they report their own error.
        eprintln!("msix-bench: could not raise RLIMIT_NOFILE: {e}");
    }
    let subjects = Subject::all();
    let steps = subjects.len() * (1 + options.bring_up.len());
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut rows = Vec::new();
    let mut tsc_khz = 0;
    for subject in &subjects {
        let name = subject.name();
        bar.set_message(format!("{name}: cycle, storm, pending"));
        let mut row = match measure_row(*subject, options) {
            Ok(row) => row,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                bar.inc(1 + options.bring_up.len() as u64);
                continue;
            }
        };
        bar.inc(1);
        failures.extend(check_row(*subject, &row));
        for &n in &options.bring_up {
            bar.set_message(format!("{name}: bring-up of {n} vectors"));
            let result = subject.build(n).and_then(|t| {
                tsc_khz = t.vm().tsc_khz();
                workload::bring_up(t.as_ref(), n)
            });
            match result {
                Ok(b) => row.bring_up.push(b),
                Err(e) => failures.push(format!("{name}: bring-up of {n}: {e}")),
            }
            bar.inc(1);
        }
        rows.push(row);
    }
    bar.finish_and_clear();
    Report {
        schema: 1,
        quick: options.quick,
        cycles: options.cycles,
        storm_cycles: options.storm_chunks * workload::STORM_CHUNK,
        bring_up_sizes: options.bring_up.clone(),
        host: host(tsc_khz),
        rows,
        wall_s: start.elapsed().as_secs_f64(),
        failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cycles_must_be_1_to_the_bound() {
        let max = MAX_CYCLES.to_string();
        assert_eq!(
            Options::parse(&args(&["--cycles", &max])).map(|o| o.cycles),
            Ok(MAX_CYCLES)
        );
        assert_eq!(
            Options::parse(&args(&["--quick", "--cycles", "1"])).map(|o| o.cycles),
            Ok(1)
        );
        let over = (MAX_CYCLES + 1).to_string();
        for bad in ["0", over.as_str(), "99999999999", "-3", "x"] {
            let e = Options::parse(&args(&["--cycles", bad])).unwrap_err();
            assert!(e.contains(&format!("1..={MAX_CYCLES}")), "{bad}: {e}");
        }
        assert!(Options::parse(&args(&["--cycles"])).is_err());
    }

    #[test]
    fn help_states_the_cycles_bound() {
        assert!(HELP.contains(&format!("1..={MAX_CYCLES}")));
    }
}
