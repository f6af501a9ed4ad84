//! The bench's results: one [`RowReport`] per row, the ratios, the JSON
//! document (`--json`, schema 2) and the text tables; and [`Row`], one
//! standalone measurement of a row (what `msix-bench stress` and the checks
//! use).

use std::fmt::Write as _;

use serde::Serialize;

use super::sched::RoundSched;
use super::stats::{median, RatioEstimate};
use super::workload::{
    BringUpOrder, BringUpResult, CallCounts, CycleResult, PendingResult, StormResult,
};

/// What a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// An msix-accel policy.
    Ours,
    /// A model of a peer VMM.
    Peer,
    /// A physical floor (no MSI-X semantics).
    Floor,
}

/// A check every bench run makes; the verdict line names each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Every row's guest was built and ran every workload.
    RowsRan,
    /// Exact exits per Linux mask cycle: `fast` 1, `strict` 2, `trap` 3,
    /// the floors 1 and 3.
    ExactExits,
    /// None of ours delivered in the storm while the vector was masked.
    NoneWhileMasked,
    /// None of ours lost the fire made after the storm.
    NoneLost,
    /// Each of ours held 3 fires made while masked in the PBA and
    /// delivered exactly one at unmask.
    PendingOnce,
    /// `fast` brought 2048 vectors up with at most
    /// [`super::run::MAX_FAST_COMMITS_2048`] route commits.
    FastBringUp,
}

impl Check {
    /// Every check, in the verdict's order.
    pub const ALL: [Check; 6] = [
        Check::RowsRan,
        Check::ExactExits,
        Check::NoneWhileMasked,
        Check::NoneLost,
        Check::PendingOnce,
        Check::FastBringUp,
    ];

    /// What the check asserts, as the verdict line says it.
    pub fn name(self) -> &'static str {
        match self {
            Check::RowsRan => "every row ran",
            Check::ExactExits => "exact exits (fast 1, strict 2, trap 3, floors 1 and 3)",
            Check::NoneWhileMasked => "none delivered while masked",
            Check::NoneLost => "none lost",
            Check::PendingOnce => "pending held in the PBA and delivered once",
            Check::FastBringUp => "fast brings up 2048 vectors in at most 64 route commits",
        }
    }
}

/// How one check came out in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CheckOutcome {
    /// The check.
    pub check: Check,
    /// Whether it held; `None` when the run did not measure it (`--quick`
    /// brings up no 2048-vector table).
    pub held: Option<bool>,
    /// How many failures it gave (each one is in [`Report::failures`]).
    pub failures: usize,
}

/// One standalone measurement of a row: a cycle measurement, the storm and
/// the pending check, in a guest of its own (`msix-bench stress` repeats
/// it round after round; [`super::check_row`] checks it).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The row's name (`fast`, `fast+srcmask`, ..., `qemu-like`, ...).
    pub policy: String,
    /// Ours: the mechanism the table was placed under (for `auto`, what
    /// it chose).
    pub policy_in_force: Option<String>,
    /// Ours, a peer model or a floor.
    pub kind: RowKind,
    /// Whether the software source masks vectors itself.
    pub source_masking: bool,
    /// MMIO exits per Linux mask cycle (exact: exits / cycles).
    pub exits_per_cycle: f64,
    /// Storm deliveries while masked that were raised after the mask took
    /// effect (violations).
    pub storm_delivered_while_masked: u64,
    /// Storm deliveries in the masked window raised before the mask took
    /// effect (late, legal).
    pub storm_late_before_mask: u64,
    /// 1 if a fire after the storm was not delivered before the watchdog.
    pub storm_lost: u64,
    /// Interrupts taken while masked in the pending check (three fires).
    pub pending_delivered_while_masked: u64,
    /// Interrupts taken after the unmask in the pending check (exact: 1).
    pub pending_delivered_at_unmask: u64,
    /// The raw cycle measurement.
    pub cycle: CycleResult,
    /// The raw storm measurement (none for a floor).
    pub storm: StormResult,
    /// The raw pending check (none for a floor).
    pub pending: PendingResult,
}

impl Row {
    /// A row from its measurements.
    pub fn new(
        policy: String,
        kind: RowKind,
        source_masking: bool,
        cycle: CycleResult,
        storm: StormResult,
        pending: PendingResult,
    ) -> Row {
        Row {
            policy,
            kind,
            source_masking,
            exits_per_cycle: cycle.exits as f64 / cycle.cycles.max(1) as f64,
            storm_delivered_while_masked: storm.delivered_while_masked,
            storm_late_before_mask: storm.late_before_mask,
            storm_lost: storm.lost,
            pending_delivered_while_masked: pending.delivered_while_masked,
            pending_delivered_at_unmask: pending.delivered_at_unmask,
            cycle,
            storm,
            pending,
            policy_in_force: None,
        }
    }
}

/// Calls per Linux mask cycle, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CallsPerCycle {
    /// KVM_SET_GSI_ROUTING.
    pub set_gsi_routing: f64,
    /// KVM_IRQFD assign.
    pub irqfd_assign: f64,
    /// KVM_IRQFD deassign.
    pub irqfd_deassign: f64,
    /// KVM_IOEVENTFD assign and deassign.
    pub ioeventfd: f64,
    /// KVM_SET_USER_MEMORY_REGION.
    pub set_user_memory_region: f64,
    /// KVM_SIGNAL_MSI.
    pub signal_msi: f64,
    /// VFIO_DEVICE_SET_IRQS-like (peer models).
    pub set_irqs: f64,
    /// Every KVM ioctl (not counting SET_IRQS).
    pub kvm_total: f64,
}

impl CallsPerCycle {
    /// `calls` over `cycles`.
    pub fn new(calls: &CallCounts, cycles: u64) -> CallsPerCycle {
        let per = |v: u64| v as f64 / cycles.max(1) as f64;
        CallsPerCycle {
            set_gsi_routing: per(calls.set_gsi_routing),
            irqfd_assign: per(calls.irqfd_assign),
            irqfd_deassign: per(calls.irqfd_deassign),
            ioeventfd: per(calls.ioeventfd),
            set_user_memory_region: per(calls.set_user_memory_region),
            signal_msi: per(calls.signal_msi),
            set_irqs: per(calls.set_irqs),
            kvm_total: per(calls.kvm()),
        }
    }

    fn other_kvm(&self) -> f64 {
        self.ioeventfd + self.set_user_memory_region + self.signal_msi
    }
}

/// Percentiles of one kind of delivery latency.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median, nanoseconds.
    pub p50_ns: f64,
    /// 99th percentile (nearest rank), nanoseconds.
    pub p99_ns: f64,
    /// Samples.
    pub samples: usize,
}

/// A row's delivery latencies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencyReport {
    /// Source signal to guest handler, entry unmasked, guest idle.
    pub unmasked: Option<Percentiles>,
    /// Guest unmask write to guest handler of the message held while masked.
    pub pending_at_unmask: Option<Percentiles>,
    /// Pending samples whose fire was delivered while masked instead.
    pub pending_delivered_while_masked: u64,
    /// Guest unmask write to its first read of Vector Control that shows
    /// the unmask (under `fast`, the servicer's wake-up to shadow update).
    pub unmask_read_back: Option<Percentiles>,
}

/// Everything measured for one row in one run: the JSON contract documented
/// in `docs/performance.md`.
#[derive(Clone, Debug, Serialize)]
pub struct RowReport {
    /// `fast`, `fast+srcmask`, `strict`, `strict+srcmask`, `trap`,
    /// `trap+srcmask`, `qemu-like`, `cloud-hypervisor-like`,
    /// `dragonball-like`, `crosvm-like`, `floor-1exit` or `floor-trap`.
    pub name: String,
    /// Ours, a peer model or a floor.
    pub kind: RowKind,
    /// The row of `AccelConfig::new`'s default policy with source masking
    /// (only that row carries it, as `true`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// Ours: the mechanism the table was placed under (for `auto+srcmask`,
    /// what it chose on this host).
    pub policy_in_force: Option<String>,
    /// `auto+srcmask`: the medians its measurement weighed, `[wake round
    /// trip, in-thread apply]` in ns (`AccelStats::auto_wake_ns`,
    /// `auto_inline_ns`).
    pub auto_medians_ns: Option<[u64; 2]>,
    /// Whether the software source masks vectors itself.
    pub source_masking: bool,
    /// MMIO exits per Linux mask cycle (exact: exits / cycles).
    pub exits_per_cycle: f64,
    /// Calls per cycle by kind (exact averages).
    pub ioctls_per_cycle: CallsPerCycle,
    /// Median over rounds of the guest time per cycle (guest TSC), ns.
    pub guest_ns_median: f64,
    /// Its 95% interval `[low, high]`.
    pub guest_ns_ci95: [f64; 2],
    /// Median over rounds of the process CPU time per cycle, ns.
    pub host_cpu_ns_median: f64,
    /// Its 95% interval.
    pub host_cpu_ns_ci95: [f64; 2],
    /// Ours and the floors: guest time per cycle over `floor-1exit`'s,
    /// paired by round (median of per-round ratios).
    pub vs_floor: Option<f64>,
    /// Its bootstrap 95% interval.
    pub vs_floor_ci95: Option<[f64; 2]>,
    /// Delivery latencies.
    pub latency: LatencyReport,
    /// The storm (not for floors).
    pub storm: Option<StormResult>,
    /// The pending check (not for floors).
    pub pending: Option<PendingResult>,
    /// Bring-up in both of Linux's orders, per table size (not for floors).
    pub bring_up: Vec<BringUpResult>,
    /// What the scheduler did, medians over rounds.
    pub sched: SchedReport,
    /// Guest ns per cycle of each round, in round order.
    pub rounds_guest_ns: Vec<f64>,
    /// Process CPU ns per cycle of each round, in round order.
    pub rounds_host_cpu_ns: Vec<f64>,
    /// What the scheduler did in each round, in round order.
    pub rounds_sched: Vec<RoundSched>,
}

/// Medians over rounds of what the scheduler did per cycle (see
/// [`RoundSched`]).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SchedReport {
    /// The vCPU thread's CPU time, ns per cycle.
    pub vcpu_run_ns: f64,
    /// Its preemptions per cycle.
    pub vcpu_preempted: f64,
    /// The servicer's CPU time, ns per cycle.
    pub servicer_run_ns: f64,
    /// The servicer's wake-ups per cycle.
    pub servicer_wakes: f64,
    /// Share of the unmasks a floor's servicer saw on the vCPU thread's
    /// CPU (-1: not counted).
    pub servicer_same_cpu: f64,
    /// Idle entries of all CPUs per cycle.
    pub idle_entries: f64,
}

impl SchedReport {
    /// The medians of `rounds`.
    pub fn new(rounds: &[RoundSched]) -> SchedReport {
        let m = |f: fn(&RoundSched) -> f64| {
            let v: Vec<f64> = rounds.iter().map(f).collect();
            median(&v)
        };
        SchedReport {
            vcpu_run_ns: m(|r| r.vcpu_run_ns),
            vcpu_preempted: m(|r| r.vcpu_preempted),
            servicer_run_ns: m(|r| r.servicer_run_ns),
            servicer_wakes: m(|r| r.servicer_wakes),
            servicer_same_cpu: m(|r| r.servicer_same_cpu),
            idle_entries: m(|r| r.idle_entries),
        }
    }
}

/// A ratio of guest time per cycle between two rows of the run.
#[derive(Clone, Debug, Serialize)]
pub struct RatioReport {
    /// The row whose time is divided.
    pub name: String,
    /// The row it is divided by.
    pub against: String,
    /// The ratio and its interval.
    #[serde(flatten)]
    pub estimate: RatioEstimate,
    /// `more` (the row's time is larger), `less`, or `not established`
    /// when the interval contains 1.
    pub order: &'static str,
}

impl RatioReport {
    /// `name / against` from its estimate.
    pub fn new(name: &str, against: &str, estimate: RatioEstimate) -> RatioReport {
        RatioReport {
            name: name.to_string(),
            against: against.to_string(),
            estimate,
            order: match estimate.order() {
                Some(true) => "more",
                Some(false) => "less",
                None => "not established",
            },
        }
    }
}

/// The host the run was measured on.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    /// Kernel release (uname -r).
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Guest TSC frequency KVM reported, kHz.
    pub tsc_khz: u32,
}

/// The whole run: what `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Schema version of this document: 2.
    pub schema: u32,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Rounds.
    pub rounds: u64,
    /// Linux mask cycles per row per round.
    pub cycles_per_round: u64,
    /// Linux mask cycles per row in all (rounds × cycles per round).
    pub cycles: u64,
    /// Latency samples of each kind per row per round.
    pub latency_per_round: u64,
    /// Seed of the round order and the bootstrap.
    pub seed: u64,
    /// Mask cycles of the storm per row.
    pub storm_cycles: u64,
    /// Bring-up table sizes.
    pub bring_up_sizes: Vec<u16>,
    /// The host.
    pub host: Host,
    /// Load averages (1, 5, 15 minutes) when the run started.
    pub load_average_start: [f64; 3],
    /// Load averages when the rounds and checks ended.
    pub load_average_end: [f64; 3],
    /// Median half-width of the clock calibrations (how far a host-to-guest
    /// latency can be off), nanoseconds.
    pub calibration_uncertainty_ns: f64,
    /// One row per policy, peer model and floor.
    pub rows: Vec<RowReport>,
    /// Peers against `fast` and `fast+srcmask`, and the floor ratios.
    pub ratios: Vec<RatioReport>,
    /// Each servicer thread over an idle guest after the rounds.
    pub idle: super::idle::IdleReport,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Checks that failed (empty on success).
    pub failures: Vec<String>,
    /// Every check of [`Check::ALL`] and how it came out.
    pub checks: Vec<CheckOutcome>,
}

fn ns(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

fn us(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}", v / 1000.0))
}

/// `1.23× [1.10, 1.40]`.
pub fn ratio_text(r: &RatioEstimate) -> String {
    if r.ratio.is_finite() {
        format!("{:.2}× [{:.2}, {:.2}]", r.ratio, r.ci95[0], r.ci95[1])
    } else {
        "-".into()
    }
}

impl Report {
    /// The row called `name`.
    pub fn row(&self, name: &str) -> Option<&RowReport> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The ratio of `name` against `against`.
    pub fn ratio(&self, name: &str, against: &str) -> Option<&RatioReport> {
        self.ratios
            .iter()
            .find(|r| r.name == name && r.against == against)
    }

    /// The last line of a run: PASS or FAIL, naming the checks that
    /// failed, held and did not run; `other` is a failure outside the
    /// checks (an unwritten chart), which fails the run too.
    pub fn verdict(&self, other: Option<&str>) -> String {
        verdict(&self.checks, other)
    }

    /// The run's parameters in one line, and the host's load.
    pub fn parameters(&self) -> String {
        let [a, b, c] = self.load_average_start;
        let [d, e, f] = self.load_average_end;
        format!(
            "{} run: {} rounds × {} Linux mask cycles per row ({} each), rows in a seeded shuffled order each round (seed {}); medians and 95% intervals over rounds\nhost: {} CPUs; load average {a:.2} {b:.2} {c:.2} at the start, {d:.2} {e:.2} {f:.2} at the end",
            if self.quick { "quick" } else { "full" },
            self.rounds,
            self.cycles_per_round,
            self.cycles,
            self.seed,
            self.host.cpus,
        )
    }

    /// Every table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.parameters());
        let _ = writeln!(s);
        self.cycle_table(&mut s);
        self.sched_table(&mut s);
        self.ratio_table(&mut s);
        self.ours_table(&mut s);
        self.latency_table(&mut s);
        self.semantics_table(&mut s);
        self.bring_up_table(&mut s);
        self.idle.table(&mut s);
        s
    }

    fn cycle_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "Linux mask cycle (mask, flush read, unmask): cost per cycle, lower is better"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>5} {:>6} {:>5} {:>5} {:>5}  {:>24}  {:>24}  {:>8}",
            "name",
            "exits",
            "routes",
            "irqfd",
            "other",
            "irqs",
            "guest ns [95% CI]",
            "vs floor-1exit [95% CI]",
            "host ns"
        );
        for r in &self.rows {
            let c = &r.ioctls_per_cycle;
            let guest = format!(
                "{} [{}, {}]",
                ns(r.guest_ns_median),
                ns(r.guest_ns_ci95[0]),
                ns(r.guest_ns_ci95[1])
            );
            let floor = match (r.vs_floor, r.vs_floor_ci95) {
                _ if r.name == "floor-1exit" => "1 (the floor)".to_string(),
                (Some(ratio), Some(ci95)) => ratio_text(&RatioEstimate { ratio, ci95 }),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "{:<22} {:>5.2} {:>6.2} {:>5.2} {:>5.2} {:>5.2}  {:>24}  {:>24}  {:>8}",
                r.name,
                r.exits_per_cycle,
                c.set_gsi_routing,
                c.irqfd_assign + c.irqfd_deassign,
                c.other_kvm(),
                c.set_irqs,
                guest,
                floor,
                ns(r.host_cpu_ns_median),
            );
        }
        let _ = writeln!(
            s,
            "(per cycle: MMIO exits; KVM_SET_GSI_ROUTING; KVM_IRQFD; other KVM ioctls (ioeventfd, memslot, KVM_SIGNAL_MSI); VFIO_DEVICE_SET_IRQS-like re-points; guest TSC time; process CPU time)"
        );
        for note in self.cost_notes() {
            let _ = writeln!(s, "{note}");
        }
        let _ = writeln!(s);
    }

    /// Why rows cost what they do where the exits column does not show
    /// it, from what this run counted; empty when no row needs a word.
    pub fn cost_notes(&self) -> Vec<String> {
        let rows_where = |keep: &dyn Fn(&RowReport) -> bool| -> String {
            let names: Vec<&str> = self
                .rows
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.name.as_str())
                .collect();
            names.join(", ")
        };
        let mut notes = Vec::new();
        let irqfd = rows_where(&|r| r.ioctls_per_cycle.irqfd_deassign >= 1.0);
        if !irqfd.is_empty() {
            notes.push(format!(
                "why: {irqfd} deassign and re-assign an irqfd each cycle (irqfd column); a deassign waits for the host's irqfd cleanup, whose cost varies with the host's load"
            ));
        }
        let absorbed = rows_where(&|r| r.kind == RowKind::Ours && r.name.starts_with("fast"));
        if !absorbed.is_empty() {
            notes.push(format!(
                "why: {absorbed} take 1 exit, but the unmask the ioeventfd absorbs is applied by the service thread, woken for it (it preempts the vCPU thread on its CPU or runs beside it), or by the guest's next exit: guest time that no column counts (preempt, svc wakes: the next table)"
            ));
        }
        let swapped = rows_where(&|r| r.kind == RowKind::Peer && r.ioctls_per_cycle.set_irqs > 0.0);
        if !swapped.is_empty() {
            notes.push(format!(
                "why: {swapped} re-point the trigger (irqs column) by a pointer swap on the software source; on a real device each is a VFIO_DEVICE_SET_IRQS (docs/hardware.md)"
            ));
        }
        if !notes.is_empty() {
            notes.push(
                "(why each row costs what it does: docs/performance.md, \"What the run shows\")"
                    .into(),
            );
        }
        notes
    }

    fn sched_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "Where the time goes, per Linux mask cycle (medians over rounds)"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "name",
            "guest ns",
            "host ns",
            "vcpu ns",
            "preempt",
            "svc ns",
            "svc wakes",
            "same cpu",
            "idle",
        );
        for r in &self.rows {
            let x = &r.sched;
            let same = if x.servicer_same_cpu >= 0.0 {
                format!("{:.2}", x.servicer_same_cpu)
            } else {
                "-".into()
            };
            let _ = writeln!(
                s,
                "{:<22} {:>9} {:>9} {:>9} {:>9.2} {:>9} {:>9.2} {:>9} {:>9.2}",
                r.name,
                ns(r.guest_ns_median),
                ns(r.host_cpu_ns_median),
                ns(x.vcpu_run_ns),
                x.vcpu_preempted,
                ns(x.servicer_run_ns),
                x.servicer_wakes,
                same,
                x.idle_entries,
            );
        }
        let _ = writeln!(
            s,
            "(guest: guest TSC time; host: process CPU time; vcpu: the vCPU thread's CPU time; preempt: its preemptions; svc: the row's servicer thread's CPU time and wake-ups; same cpu: share of a floor servicer's unmasks seen on the vCPU thread's CPU; idle: idle entries of all CPUs)"
        );
        let _ = writeln!(s);
    }

    fn ratio_table(&self, s: &mut String) {
        let bases = ["fast", "fast+srcmask"];
        let _ = writeln!(
            s,
            "Peers against ours: guest time per cycle, median of per-round ratios [95% CI, block bootstrap over rounds]"
        );
        let _ = writeln!(
            s,
            "{:<22}  {:<42}  {:<42}",
            "peer",
            format!("vs {}", bases[0]),
            format!("vs {}", bases[1])
        );
        let peers: Vec<&RowReport> = self
            .rows
            .iter()
            .filter(|r| r.kind == RowKind::Peer)
            .collect();
        for p in peers {
            let cells: Vec<String> = bases
                .iter()
                .map(|b| match self.ratio(&p.name, b) {
                    Some(r) => format!(
                        "{} {}",
                        ratio_text(&r.estimate),
                        match r.order {
                            "more" => "peer costs more",
                            "less" => "peer costs less",
                            _ => "order not established",
                        }
                    ),
                    None => "-".into(),
                })
                .collect();
            let _ = writeln!(s, "{:<22}  {:<42}  {:<42}", p.name, cells[0], cells[1]);
        }
        let _ = writeln!(s);
    }

    fn ours_table(&self, s: &mut String) {
        let pairs: Vec<&RatioReport> = super::run::OURS_PAIRS
            .iter()
            .filter_map(|(n, a)| self.ratio(n, a))
            .collect();
        if pairs.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "Rows against each other: guest time per cycle, median of per-round ratios [95% CI]"
        );
        for r in pairs {
            let order = match r.order {
                "more" => "costs more",
                "less" => "costs less",
                _ => "order not established",
            };
            let _ = writeln!(
                s,
                "{:<40} {:<24} {order}",
                format!("{} / {}", r.name, r.against),
                ratio_text(&r.estimate)
            );
        }
        let _ = writeln!(s);
    }

    fn latency_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "Delivery latency, µs: unmasked = source signal -> guest handler (host clock against guest TSC, calibration ±{:.1} µs median); pending = guest unmask write -> handler of the message held while masked; read-back = guest unmask write -> its first read of Vector Control showing it",
            self.calibration_uncertainty_ns / 1000.0
        );
        let _ = writeln!(
            s,
            "{:<22} {:>13} {:>13} {:>13} {:>13} {:>14} {:>14}",
            "name",
            "unmasked p50",
            "unmasked p99",
            "pending p50",
            "pending p99",
            "read-back p50",
            "read-back p99"
        );
        for r in &self.rows {
            let l = &r.latency;
            let pending = |f: fn(&Percentiles) -> f64| match l.pending_at_unmask {
                Some(p) => us(Some(f(&p))),
                None if l.pending_delivered_while_masked > 0 => "(delivered".into(),
                None => "-".into(),
            };
            let pending_99 = match l.pending_at_unmask {
                Some(p) => us(Some(p.p99_ns)),
                None if l.pending_delivered_while_masked > 0 => "while masked)".into(),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<22} {:>13} {:>13} {:>13} {:>13} {:>14} {:>14}",
                r.name,
                us(l.unmasked.map(|p| p.p50_ns)),
                us(l.unmasked.map(|p| p.p99_ns)),
                pending(|p| p.p50_ns),
                pending_99,
                us(l.unmask_read_back.map(|p| p.p50_ns)),
                us(l.unmask_read_back.map(|p| p.p99_ns)),
            );
        }
        let _ = writeln!(s);
    }

    fn semantics_table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "Semantics: storm ({} mask cycles, vector 0 fired at full rate) and pending check (3 fires while masked, then a PBA read and an unmask)",
            self.storm_cycles
        );
        let _ = writeln!(
            s,
            "{:<22} {:>8} {:>10} {:>7} {:>6} {:>5}   {:>8} {:>5} {:>9}",
            "name", "fires", "deliveries", "masked", "late", "lost", "held", "PBA", "at unmask"
        );
        for r in &self.rows {
            let (Some(st), Some(p)) = (&r.storm, &r.pending) else {
                continue;
            };
            let _ = writeln!(
                s,
                "{:<22} {:>8} {:>10} {:>7} {:>6} {:>5}   {:>8} {:>5} {:>9}",
                r.name,
                st.fires,
                st.deliveries,
                st.delivered_while_masked,
                st.late_before_mask,
                st.lost,
                if p.delivered_while_masked == 0 {
                    "yes".to_string()
                } else {
                    format!("no ({})", p.delivered_while_masked)
                },
                if p.pba_pending { "set" } else { "clear" },
                p.delivered_at_unmask,
            );
        }
        let _ = writeln!(
            s,
            "(masked = deliveries in the masked window raised after the mask took effect: violations; late = raised before it, injected late by this host; exact pending: held, PBA set, 1 at unmask)"
        );
        let _ = writeln!(s);
    }

    fn bring_up_table(&self, s: &mut String) {
        for order in BringUpOrder::ALL {
            let _ = writeln!(
                s,
                "Bring-up, Linux {} order: route commits / irqfd ioctls / SET_IRQS / ms, then Function Mask set+clear with every entry live (commits / irqfd / ms)",
                match order {
                    BringUpOrder::Early => "early-activation",
                    BringUpOrder::Reservation => "x86 vector-reservation",
                }
            );
            let _ = write!(s, "{:<22}", "name");
            for n in &self.bring_up_sizes {
                let _ = write!(s, " {:>30}", format!("{n} vectors"));
            }
            let _ = writeln!(s);
            for r in &self.rows {
                if r.bring_up.is_empty() {
                    continue;
                }
                let _ = write!(s, "{:<22}", r.name);
                for n in &self.bring_up_sizes {
                    let cell = r
                        .bring_up
                        .iter()
                        .find(|b| b.order == order && b.vectors == *n)
                        .map_or("-".to_string(), |b| {
                            format!(
                                "{}/{}/{}/{:.0} ({}/{}/{:.0})",
                                b.route_commits,
                                b.irqfd_ioctls,
                                b.calls.set_irqs,
                                b.millis,
                                b.function_mask.calls.set_gsi_routing,
                                b.function_mask.calls.irqfd(),
                                b.function_mask.millis
                            )
                        });
                    let _ = write!(s, " {cell:>30}");
                }
                let _ = writeln!(s);
            }
            let _ = writeln!(s);
        }
    }
}

/// The verdict line over `checks`; see [`Report::verdict`].
pub fn verdict(checks: &[CheckOutcome], other: Option<&str>) -> String {
    let names = |want: Option<bool>| -> Vec<&str> {
        checks
            .iter()
            .filter(|c| c.held == want)
            .map(|c| c.check.name())
            .collect()
    };
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.held == Some(false))
        .map(|c| format!("{} ({} failures)", c.check.name(), c.failures))
        .chain(other.map(str::to_string))
        .collect();
    let held = names(Some(true));
    let mut line = if failed.is_empty() {
        format!(
            "verdict: PASS: {} of {} checks held: {}",
            held.len(),
            checks.len(),
            held.join("; ")
        )
    } else {
        format!(
            "verdict: FAIL: {}; held: {}",
            failed.join("; "),
            if held.is_empty() {
                "none".to_string()
            } else {
                held.join("; ")
            }
        )
    };
    let not_run = names(None);
    if !not_run.is_empty() {
        let _ = write!(line, "; not run: {}", not_run.join("; "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(check: Check, held: Option<bool>, failures: usize) -> CheckOutcome {
        CheckOutcome {
            check,
            held,
            failures,
        }
    }

    #[test]
    fn the_verdict_names_every_check_that_held_failed_or_did_not_run() {
        let mut checks: Vec<CheckOutcome> = Check::ALL
            .iter()
            .map(|&c| outcome(c, Some(true), 0))
            .collect();
        let pass = verdict(&checks, None);
        assert!(
            pass.starts_with("verdict: PASS: 6 of 6 checks held: "),
            "{pass}"
        );
        for c in Check::ALL {
            assert!(pass.contains(c.name()), "{pass} lacks {}", c.name());
        }
        assert!(!pass.contains("not run"), "{pass}");

        checks[1] = outcome(Check::ExactExits, Some(false), 2);
        checks[5] = outcome(Check::FastBringUp, None, 0);
        let fail = verdict(&checks, None);
        assert!(
            fail.starts_with(&format!(
                "verdict: FAIL: {} (2 failures); held: {}",
                Check::ExactExits.name(),
                Check::RowsRan.name()
            )),
            "{fail}"
        );
        assert!(
            fail.ends_with(&format!("; not run: {}", Check::FastBringUp.name())),
            "{fail}"
        );

        let all_held: Vec<CheckOutcome> = Check::ALL
            .iter()
            .map(|&c| outcome(c, Some(true), 0))
            .collect();
        let unwritten = verdict(&all_held, Some("--plot x.svg not written"));
        assert!(
            unwritten.starts_with("verdict: FAIL: --plot x.svg not written; held: "),
            "{unwritten}"
        );
    }
}
