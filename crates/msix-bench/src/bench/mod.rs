//! The side-by-side benchmark (`msix-bench` with no subcommand): our three
//! policies with and without source-side masking, models of the peer VMMs
//! ([`peer`]) and the physical floors ([`floor`]), run on the same
//! workloads ([`workload`]) in one run in real KVM guests with the software
//! source, measured in interleaved rounds ([`rounds`], [`stats`]) and
//! reported as tables, JSON ([`report`]) and an SVG chart ([`plot`]).

pub mod floor;
pub mod floor_servicer;
pub mod idle;
pub mod ours;
pub mod peer;
pub mod plot;
pub mod report;
pub mod rounds;
pub mod run;
pub mod sched;
pub mod stats;
pub mod workload;

use std::time::Duration;

use msix_accel::Policy;

pub use run::run;

use crate::Error;
use floor::{FloorKind, FloorRig};
use msix_peers::{PeerModel, PeerRig};
use msix_rig::rig::RigConfig;
use report::{Check, Row, RowKind};
use workload::{PendingResult, StormResult, Target};

/// Largest `--cycles`: Linux mask cycles per row over the whole run, about
/// ten seconds per row of the slowest one on a nested host (some 80 µs a
/// cycle), so that a typo cannot start a run of hours.
pub const MAX_CYCLES: u64 = 100_000;
/// Largest `--rounds`.
pub const MAX_ROUNDS: u64 = 2_000;
/// The seed of the round order and of the bootstrap: fixed, so that the
/// same measurements always give the same output.
pub const SEED: u64 = 15;
/// The polling rows' [`msix_accel::AccelConfig::unmask_polling`]: the
/// default maximum of KVM's halt polling (`halt_poll_ns`).
pub const POLL_MAX: Duration = Duration::from_micros(200);
/// The deferring row's [`msix_accel::AccelConfig::unmask_deferral`].
pub const DEFERRAL: Duration = Duration::from_millis(1);

/// What to run, from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// CI mode: fewer rounds, a shorter storm, bring-up of 64 entries only.
    pub quick: bool,
    /// Print one JSON document instead of the tables.
    pub json: bool,
    /// Write an SVG chart here.
    pub plot: Option<String>,
    /// Linux mask cycles per row in all, split evenly over the rounds.
    pub cycles: u64,
    /// Rounds (every row measured once per round, interleaved).
    pub rounds: u64,
    /// Latency samples of each kind per row per round.
    pub latency_per_round: u64,
    /// Storm length per row, in guest programs of
    /// [`workload::STORM_CHUNK`] mask cycles.
    pub storm_chunks: u64,
    /// Bring-up table sizes (each in both of Linux's orders).
    pub bring_up: Vec<u16>,
    /// The rows to run, by name (`floor-1exit` is always added, as the
    /// reference of the ratios); None: every row.
    pub rows: Option<Vec<String>>,
}

impl Options {
    /// The full run (the README's main job).
    pub fn full() -> Options {
        Options {
            quick: false,
            json: false,
            plot: None,
            cycles: 32_000,
            rounds: 800,
            latency_per_round: 1,
            storm_chunks: 16,
            bring_up: vec![64, 512, 2048],
            rows: None,
        }
    }

    /// The `--quick` run: the same method with fewer rounds.
    pub fn quick() -> Options {
        Options {
            quick: true,
            cycles: 1_600,
            rounds: 40,
            latency_per_round: 1,
            storm_chunks: 2,
            bring_up: vec![64],
            ..Options::full()
        }
    }

    /// Linux mask cycles per row per round (at least 1).
    pub fn cycles_per_round(&self) -> u64 {
        (self.cycles / self.rounds.max(1)).max(1)
    }

    /// Parses the bench's flags (not the subcommand).
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let quick = args.iter().any(|a| a == "--quick");
        let mut o = if quick {
            Options::quick()
        } else {
            Options::full()
        };
        let bounded = |value: Option<&String>, flag: &str, max: u64| {
            let n = value.ok_or(format!("{flag} needs a number"))?;
            n.parse()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("{flag}: {n:?} is not a number in 1..={max}"))
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
                "--cycles" => o.cycles = bounded(it.next(), "--cycles", MAX_CYCLES)?,
                "--rounds" => o.rounds = bounded(it.next(), "--rounds", MAX_ROUNDS)?,
                "--rows" => {
                    let list = it.next().ok_or("--rows needs a list of row names")?;
                    let names: Vec<String> = list.split(',').map(str::to_string).collect();
                    let known: Vec<String> = Subject::all().iter().map(Subject::name).collect();
                    if let Some(bad) = names.iter().find(|n| !known.contains(n)) {
                        return Err(format!(
                            "--rows: no row {bad:?} (rows: {})",
                            known.join(", ")
                        ));
                    }
                    o.rows = Some(names);
                }
                "--bring-up" => {
                    let list = it.next().ok_or("--bring-up needs sizes or none")?;
                    o.bring_up = if list == "none" {
                        Vec::new()
                    } else {
                        list.split(',')
                            .map(|n| {
                                n.parse()
                                    .ok()
                                    .filter(|n| (1..=2048).contains(n))
                                    .ok_or_else(|| {
                                        format!("--bring-up: {n:?} is not a size in 1..=2048")
                                    })
                            })
                            .collect::<Result<_, _>>()?
                    };
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
    msix-bench [--quick] [--json] [--plot FILE.svg] [--rounds N] [--cycles N]
               [--rows NAME,...] [--bring-up SIZES|none]
    msix-bench --vfio BDF [--json]   (a NIC bound to vfio-pci; --vfio --help)
    msix-bench scenario [--policy fast|strict|trap] [--json] FILE...
    msix-bench conformance [--json] FILE...
    msix-bench stress [--rounds N] [--duration SECONDS] [--hogs N] [--no-load] [--json]
    msix-bench help [scenario|conformance|stress]
    msix-bench --help | --version

With no subcommand, runs the benchmark in real KVM guests (software MSI-X
source) and prints side-by-side tables measured in one run:
  rows      fast, strict, trap (each also +srcmask: the source masks
            vectors); fast+srcmask+poll (the service thread polls for
            unmasks after mask traffic) and fast+srcmask+batch (the
            service thread under SCHED_BATCH), fast+srcmask+defer (unmasks
            left to the guest's next exit for up to 1 ms after a mask
            exit), auto+srcmask (the default row: AccelConfig::new's
            policy, which measures this host at placement and runs fast
            or strict; \"default\": true in the JSON); models of peer
            VMMs: qemu-like,
            cloud-hypervisor-like, dragonball-like, crosvm-like; and the
            physical floors floor-1exit (read-only table, unmask absorbed
            by an ioeventfd, a do-nothing handler: 1 exit per cycle),
            floor-trap (everything trapped: 3), and floor-1exit with a
            do-nothing thread on the unmask eventfd, woken by each unmask
            (floor-1exit-wake) or kept awake polling (floor-1exit-spin)
            (see docs/performance.md)
  rounds    every row measured once per round in a shuffled order (fixed
            seed); per row the median over rounds; ratios paired by round;
            95% intervals by a block bootstrap over consecutive rounds, and
            \"order not established\" when a ratio's interval contains 1
  cycle     Linux mask cycle on entry 0 (mask, flush read, unmask): exits,
            KVM ioctls and SET_IRQS re-points by kind, guest TSC time and
            process CPU time per cycle, ours against floor-1exit; per
            row what the scheduler did (vCPU and servicer threads' CPU
            time, wake-ups, preemptions, CPU idle entries) and the load
            average
  latency   source signal -> guest handler (unmasked), and guest unmask ->
            handler of a message held while masked: p50 and p99
  storm     vector 0 fired at full rate while the guest cycles its mask:
            deliveries while masked, late ones, lost after the storm; and
            a pending check (3 fires while masked: held, PBA set, 1 at
            unmask)
  bring-up  64, 512, 2048 entries in Linux's early-activation and x86
            vector-reservation orders: route commits, irqfd ioctls, ms;
            then a Function Mask set and clear
  idle      after the rounds every guest idles 10 s (quick 1 s): no mask
            traffic, no interrupts; each row's servicer thread's CPU time
            and wake-ups over it (0 for one that sleeps until an fd is
            readable)

OPTIONS:
    --quick         CI run (< 60 s): 40 rounds, 1600 cycles per row, a
                    50-cycle storm, bring-up of 64 entries only
    --json          print one JSON document (schema 2, docs/performance.md)
    --plot FILE     also write an SVG chart (guest time per cycle with 95%
                    intervals, exits per cycle); FILE must be writable,
                    checked before measuring
    --rounds N      rounds, 1..=2000 (default 800, quick 40)
    --cycles N      Linux mask cycles per row over the run, 1..=100000,
                    split evenly over the rounds (default 32000, quick 1600)
    --rows LIST     only these rows, comma-separated names (floor-1exit,
                    the ratios' reference, is always run)
    --bring-up LIST bring-up table sizes, comma-separated in 1..=2048, or
                    none (default 64,512,2048, quick 64)
    -h, --help      this text
    -V, --version   the version

SUBCOMMANDS:
    scenario FILE...  run scenario files (docs/scenarios.md) in a real guest;
                      `msix-bench help scenario` for its options
    conformance FILE...
                      the files against our policies and the peer VMM
                      models, as a matrix (docs/conformance.md);
                      `msix-bench help conformance` for its options
    stress            the storm, Linux cycle and pending checks under every
                      policy, round after round, beside CPU hogs, a guest
                      churning irqfds and routes, and file I/O;
                      `msix-bench help stress` for its options
    help [TOPIC]      this text, or a subcommand's (scenario, conformance,
                      stress)

OUTPUT:
    the tables on stdout (--json: one document), then, as the last line,
    the verdict: PASS or FAIL, naming each check that held, failed or did
    not run (on stderr with --json). Progress goes to stderr: a bar on a
    terminal, otherwise one line per stage.

EXIT STATUS:
    0 success; 1 a run failed or a check failed (fast not at 1 exit per
    cycle, strict 2, trap 3, the floors 1 and 3; any of ours delivering
    while masked, losing an interrupt, not holding a pending one in the PBA
    or not delivering it exactly once; fast bringing up 2048 vectors with
    more than 64 route commits); 2 bad usage, an unwritable --plot FILE, or
    /dev/kvm missing or not accessible (one line on stderr, before any
    measurement).
";

/// Runs the bench from the command line (flags after the program name);
/// returns the process exit code.
pub fn run_cli(args: &[String]) -> i32 {
    let options = match crate::cli::prepare(args, HELP, |args| {
        let options = Options::parse(args)?;
        if let Some(path) = &options.plot {
            // Checked before measuring, not after a run of minutes.
            plot::check_writable(path).map_err(|e| format!("--plot {path}: {e}"))?;
        }
        Ok(options)
    }) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let report = run(&options);
    let mut other = None;
    if options.json {
        if !crate::json::print_json("msix-bench", &report) {
            other = Some("the JSON document could not be encoded".to_string());
        }
    } else {
        print!("{}", report.table());
        println!("wall time {:.1} s", report.wall_s);
    }
    if let Some(path) = &options.plot {
        if let Err(e) = plot::write_svg(&report, path) {
            eprintln!("msix-bench: --plot {path}: {e}");
            other = Some(format!("--plot {path} not written"));
        }
    }
    for f in &report.failures {
        eprintln!("msix-bench: FAILED: {f}");
    }
    // The last line, after every failure: on stdout under the tables, on
    // stderr with --json (stdout holds one JSON document only).
    let verdict = report.verdict(other.as_deref());
    if options.json {
        eprintln!("{verdict}");
    } else {
        println!("{verdict}");
    }
    i32::from(!report.failures.is_empty() || other.is_some())
}

/// One row to measure: one of our policies, a peer model or a floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Our accelerator under a policy, with or without source masking.
    Ours {
        /// The policy.
        policy: Policy,
        /// Source-side masking.
        maskable: bool,
    },
    /// Our accelerator under `fast` with its service thread polling for
    /// unmasks after mask traffic ([`POLL_MAX`]), with or without source
    /// masking.
    Polling {
        /// Source-side masking.
        maskable: bool,
    },
    /// Our accelerator under `fast` with its service thread under
    /// `SCHED_BATCH` (a wake-up never preempts the vCPU thread), with or
    /// without source masking.
    Batch {
        /// Source-side masking.
        maskable: bool,
    },
    /// Our accelerator under `fast` with absorbed unmasks left to the
    /// guest's next exit for up to [`DEFERRAL`] after its last mask exit,
    /// with source masking.
    Deferring,
    /// A peer model.
    Peer(PeerModel),
    /// A physical floor.
    Floor(FloorKind),
}

impl Subject {
    /// The rows `options` selects, in report order.
    pub fn selected(options: &Options) -> Vec<Subject> {
        Subject::all()
            .into_iter()
            .filter(|s| match &options.rows {
                None => true,
                Some(names) => {
                    *s == Subject::Floor(FloorKind::OneExit) || names.contains(&s.name())
                }
            })
            .collect()
    }

    /// Every row, in report order: the floors, ours, the peers.
    pub fn all() -> Vec<Subject> {
        let mut all: Vec<Subject> = FloorKind::ALL.map(Subject::Floor).to_vec();
        for policy in Policy::ALL {
            for maskable in [false, true] {
                all.push(Subject::Ours { policy, maskable });
                // The servicer's alternatives, with source masking only
                // (what they change is the same without it; a full run
                // stays within minutes).
                if policy == Policy::Fast && maskable {
                    all.push(Subject::Polling { maskable });
                    all.push(Subject::Batch { maskable });
                    all.push(Subject::Deferring);
                }
            }
        }
        // `auto` with source masking: what it chose is measured beside
        // both mechanisms.
        all.push(Subject::Ours {
            policy: Policy::Auto,
            maskable: true,
        });
        all.extend(PeerModel::ALL.map(Subject::Peer));
        all
    }

    /// Whether this is the row of `AccelConfig::new`'s default policy with
    /// source masking (`"default": true` in the JSON).
    pub fn is_default(&self) -> bool {
        *self
            == Subject::Ours {
                policy: msix_accel::DEFAULT_POLICY,
                maskable: true,
            }
    }

    /// The row's name in reports.
    pub fn name(&self) -> String {
        match *self {
            Subject::Ours { policy, maskable } if maskable => format!("{policy}+srcmask"),
            Subject::Ours { policy, .. } => policy.to_string(),
            Subject::Polling { maskable: true } => "fast+srcmask+poll".to_string(),
            Subject::Polling { maskable: false } => "fast+poll".to_string(),
            Subject::Batch { maskable: true } => "fast+srcmask+batch".to_string(),
            Subject::Batch { maskable: false } => "fast+batch".to_string(),
            Subject::Deferring => "fast+srcmask+defer".to_string(),
            Subject::Peer(model) => model.name().to_string(),
            Subject::Floor(kind) => kind.name().to_string(),
        }
    }

    /// Ours, a peer or a floor.
    pub fn kind(&self) -> RowKind {
        match self {
            Subject::Ours { .. }
            | Subject::Polling { .. }
            | Subject::Batch { .. }
            | Subject::Deferring => RowKind::Ours,
            Subject::Peer(_) => RowKind::Peer,
            Subject::Floor(_) => RowKind::Floor,
        }
    }

    /// Whether the source masks vectors itself.
    pub fn source_masking(&self) -> bool {
        matches!(
            self,
            Subject::Ours { maskable: true, .. }
                | Subject::Polling { maskable: true }
                | Subject::Batch { maskable: true }
                | Subject::Deferring
        )
    }

    /// The exact exits per Linux mask cycle this row must show, if it is
    /// ours or a floor.
    pub fn exact_exits(&self) -> Option<u64> {
        match self {
            // `auto`'s count is that of the mechanism it chose, known once
            // the row is placed (`check_exits_in_force`).
            Subject::Ours {
                policy: Policy::Auto,
                ..
            } => None,
            Subject::Ours { policy, .. } => Some(policy.linux_cycle_exits()),
            Subject::Polling { .. } | Subject::Batch { .. } | Subject::Deferring => Some(1),
            Subject::Floor(kind) => Some(kind.exits_per_cycle()),
            Subject::Peer(_) => None,
        }
    }

    /// Boots a guest with a `vectors`-entry device handled as this row
    /// says (a floor always has 8 entries).
    pub fn build(&self, vectors: u16) -> Result<Box<dyn Target>, Error> {
        let watchdog = Duration::from_secs(60);
        Ok(match *self {
            Subject::Ours { policy, maskable } => Box::new(ours::rig(RigConfig {
                vectors,
                vcpus: 1,
                policy,
                maskable,
                watchdog,
                ..RigConfig::default()
            })?),
            Subject::Polling { maskable } => Box::new(ours::rig(RigConfig {
                vectors,
                vcpus: 1,
                policy: Policy::Fast,
                maskable,
                watchdog,
                unmask_polling: POLL_MAX,
                ..RigConfig::default()
            })?),
            Subject::Batch { maskable } => Box::new(ours::rig(RigConfig {
                vectors,
                vcpus: 1,
                policy: Policy::Fast,
                maskable,
                watchdog,
                service_scheduling: msix_accel::ServiceScheduling::Batch,
                ..RigConfig::default()
            })?),
            Subject::Deferring => Box::new(ours::rig(RigConfig {
                vectors,
                vcpus: 1,
                policy: Policy::Fast,
                maskable: true,
                watchdog,
                unmask_deferral: DEFERRAL,
                ..RigConfig::default()
            })?),
            Subject::Peer(model) => Box::new(PeerRig::new(model, vectors, watchdog)?),
            Subject::Floor(kind) => Box::new(FloorRig::new(kind, watchdog)?),
        })
    }
}

/// Measures the cycle, storm and pending workloads of one row in a guest of
/// its own, without rounds (what `msix-bench stress` repeats). A floor has
/// no storm or pending check (both zero).
pub fn measure_row(subject: Subject, options: &Options) -> Result<Row, Error> {
    let target = subject.build(8)?;
    let t = target.as_ref();
    workload::bring_up_entry0(t)?;
    let cycle = workload::cycles(t, options.cycles)?;
    let in_force = t.policy_in_force();
    let (storm, pending) = match subject {
        Subject::Floor(_) => (StormResult::default(), PendingResult::default()),
        _ => (
            workload::storm(t, options.storm_chunks, 200)?,
            workload::pending(t)?,
        ),
    };
    let mut row = Row::new(
        subject.name(),
        subject.kind(),
        subject.source_masking(),
        cycle,
        storm,
        pending,
    );
    row.policy_in_force = in_force.map(|p| p.to_string());
    Ok(row)
}

/// The exact exit count of `subject` over `cycles` cycles, or what was
/// seen; `auto`'s is that of `in_force`, the mechanism it chose.
pub fn check_exits(
    subject: Subject,
    in_force: Option<Policy>,
    cycles: u64,
    exits: u64,
) -> Option<String> {
    let exact = match subject {
        Subject::Ours {
            policy: Policy::Auto,
            ..
        } => match in_force {
            Some(p) => p.linux_cycle_exits(),
            None => return Some(format!("{}: no policy in force", subject.name())),
        },
        _ => subject.exact_exits()?,
    };
    (exits != exact * cycles).then(|| {
        format!(
            "{}: {exits} exits in {cycles} cycles, expected exactly {exact} per cycle",
            subject.name()
        )
    })
}

/// What the storm and the pending check of one of ours must show: each
/// check that did not hold, with what was seen.
pub fn check_semantics(
    subject: Subject,
    storm: &StormResult,
    pending: &PendingResult,
) -> Vec<(Check, String)> {
    if subject.kind() != RowKind::Ours {
        return Vec::new();
    }
    let name = subject.name();
    let mut failures = Vec::new();
    if storm.delivered_while_masked != 0 {
        failures.push((
            Check::NoneWhileMasked,
            format!(
                "{name}: {} interrupts delivered while the guest had the vector masked",
                storm.delivered_while_masked
            ),
        ));
    }
    if storm.lost != 0 {
        failures.push((
            Check::NoneLost,
            format!("{name}: a fire after the storm was not delivered before the watchdog (lost)"),
        ));
    }
    if pending.delivered_while_masked != 0 || pending.delivered_at_unmask != 1 {
        failures.push((
            Check::PendingOnce,
            format!(
                "{name}: 3 fires while masked gave {} deliveries while masked and {} at unmask, expected 0 and 1",
                pending.delivered_while_masked, pending.delivered_at_unmask
            ),
        ));
    }
    if !pending.pba_pending {
        failures.push((
            Check::PendingOnce,
            format!("{name}: the PBA did not show the message held while masked"),
        ));
    }
    failures
}

/// What each of our policies (and each floor) must show, exactly; a list
/// of what did not.
pub fn check_row(subject: Subject, row: &Row) -> Vec<String> {
    let in_force = row.policy_in_force.as_deref().and_then(|p| p.parse().ok());
    let mut failures: Vec<String> =
        check_exits(subject, in_force, row.cycle.cycles, row.cycle.exits)
            .into_iter()
            .collect();
    failures.extend(
        check_semantics(subject, &row.storm, &row.pending)
            .into_iter()
            .map(|(_, f)| f),
    );
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cycles_and_rounds_must_be_within_their_bounds() {
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
            let e = Options::parse(&args(&["--rounds", bad])).unwrap_err();
            assert!(e.contains(&format!("1..={MAX_ROUNDS}")), "{bad}: {e}");
        }
        assert!(Options::parse(&args(&["--cycles"])).is_err());
        assert!(Options::parse(&args(&["--rounds"])).is_err());
    }

    #[test]
    fn quick_keeps_the_method_with_fewer_rounds() {
        let (q, f) = (Options::quick(), Options::full());
        assert!(q.rounds < f.rounds);
        assert_eq!(q.cycles_per_round(), f.cycles_per_round());
        assert_eq!(q.latency_per_round, f.latency_per_round);
        let o = Options::parse(&args(&["--quick", "--rounds", "7"])).unwrap();
        assert_eq!((o.rounds, o.cycles_per_round()), (7, 1600 / 7));
        let o = Options::parse(&args(&["--rounds", "100", "--cycles", "50"])).unwrap();
        assert_eq!(o.cycles_per_round(), 1, "at least one cycle a round");
    }

    #[test]
    fn help_states_the_bounds_and_defaults() {
        assert!(HELP.contains(&format!("1..={MAX_CYCLES}")));
        assert!(HELP.contains(&format!("1..={MAX_ROUNDS}")));
        let (q, f) = (Options::quick(), Options::full());
        assert!(HELP.contains(&format!("default {}, quick {}", f.rounds, q.rounds)));
        assert!(HELP.contains(&format!("default {}, quick {}", f.cycles, q.cycles)));
    }

    #[test]
    fn every_row_has_a_unique_name_and_the_floors_come_first() {
        let names: Vec<String> = Subject::all().iter().map(Subject::name).collect();
        assert_eq!(
            &names[..4],
            [
                "floor-1exit",
                "floor-trap",
                "floor-1exit-wake",
                "floor-1exit-spin"
            ]
        );
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(names.len(), 4 + 10 + 4);
        let defaults: Vec<&String> = Subject::all()
            .iter()
            .zip(&names)
            .filter(|(s, _)| s.is_default())
            .map(|(_, n)| n)
            .collect();
        assert_eq!(defaults, ["auto+srcmask"]);
        assert_eq!(
            msix_accel::AccelConfig::new(1, 0, 0).policy,
            msix_accel::DEFAULT_POLICY
        );
    }

    #[test]
    fn rows_selects_by_name_and_always_keeps_the_floor() {
        let o = Options::parse(&args(&["--rows", "fast+srcmask,floor-1exit-wake"])).unwrap();
        let names: Vec<String> = Subject::selected(&o).iter().map(Subject::name).collect();
        assert_eq!(names, ["floor-1exit", "floor-1exit-wake", "fast+srcmask"]);
        assert_eq!(
            Subject::selected(&Options::full()).len(),
            Subject::all().len()
        );
        let e = Options::parse(&args(&["--rows", "fast,nope"])).unwrap_err();
        assert!(e.contains("\"nope\""), "{e}");
        assert!(Options::parse(&args(&["--rows"])).is_err());
        let o = Options::parse(&args(&["--bring-up", "none"])).unwrap();
        assert!(o.bring_up.is_empty());
        let o = Options::parse(&args(&["--bring-up", "64,512"])).unwrap();
        assert_eq!(o.bring_up, [64, 512]);
        for bad in ["0", "2049", "x", "64,"] {
            assert!(
                Options::parse(&args(&["--bring-up", bad])).is_err(),
                "{bad}"
            );
        }
    }
}
