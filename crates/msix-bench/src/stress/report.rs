//! What `msix-bench stress` found: per policy totals over the rounds, the
//! masked-window deliveries split into violations and late ones, the load
//! that ran, and the failures; as a table or as JSON (`--json`).

use std::fmt::Write as _;

use serde::Serialize;

use super::load::LoadReport;
use crate::bench::report::Row;

/// Totals of one policy (with or without source masking) over every round.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SubjectTotals {
    /// `fast`, `fast+srcmask`, `strict`, ...
    pub policy: String,
    /// Rounds run.
    pub runs: u64,
    /// Rounds with at least one failed check.
    pub failed: u64,
    /// Linux mask cycles run (outside the storm).
    pub cycles: u64,
    /// MMIO exits during those cycles.
    pub exits: u64,
    /// Mask cycles the guest ran during the storms (masked windows).
    pub storm_cycles: u64,
    /// Fires of the source during the storms.
    pub fires: u64,
    /// Interrupts the guest took during the storms.
    pub deliveries: u64,
    /// Storm deliveries inside a masked window raised after the mask took
    /// effect: violations, must be 0.
    pub violations: u64,
    /// Storm deliveries inside a masked window that were already pending
    /// in the local APIC when the mask write returned: raised before the
    /// mask took effect, injected late by the host (legal).
    pub late: u64,
    /// Fires after a storm that were not delivered (must be 0).
    pub lost: u64,
    /// Pending checks (3 fires while masked) that did not give 0 deliveries
    /// while masked and exactly 1 at the unmask.
    pub pending_wrong: u64,
}

impl SubjectTotals {
    /// A policy with nothing run yet.
    pub fn new(policy: String) -> SubjectTotals {
        SubjectTotals {
            policy,
            ..SubjectTotals::default()
        }
    }

    /// Adds one round's measurement.
    pub fn add(&mut self, row: &Row) {
        self.cycles += row.cycle.cycles;
        self.exits += row.cycle.exits;
        self.storm_cycles += row.storm.cycles;
        self.fires += row.storm.fires;
        self.deliveries += row.storm.deliveries;
        self.violations += row.storm.delivered_while_masked;
        self.late += row.storm.late_before_mask;
        self.lost += row.storm.lost;
        if row.pending_delivered_while_masked != 0 || row.pending_delivered_at_unmask != 1 {
            self.pending_wrong += 1;
        }
    }
}

/// The whole stress run: what `--json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct StressReport {
    /// Schema version of this document.
    pub schema: u32,
    /// Rounds run (each runs every policy once).
    pub rounds: u64,
    /// `--rounds` as given or defaulted (the most rounds to run).
    pub rounds_requested: u64,
    /// `--duration` in seconds, if given: rounds start until it has passed.
    pub duration_s: Option<u64>,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Linux mask cycles per policy per round.
    pub cycles_per_round: u64,
    /// Storm mask cycles per policy per round.
    pub storm_cycles_per_round: u64,
    /// Per policy totals.
    pub policies: Vec<SubjectTotals>,
    /// Runs (policy × round) whose checks all held.
    pub passed: u64,
    /// Runs with a failed check (or that could not run).
    pub failed: u64,
    /// All masked-window violations (must be 0).
    pub violations: u64,
    /// All late masked-window deliveries (legal).
    pub late: u64,
    /// The load that ran beside the checks.
    pub load: LoadReport,
    /// `round R: what failed`, for each failure.
    pub failures: Vec<String>,
}

impl StressReport {
    /// The human-readable summary; its last line is `N passed, N failed`.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:>5} {:>6} {:>8} {:>6} {:>8} {:>9} {:>10} {:>10} {:>5} {:>5} {:>7}",
            "policy",
            "runs",
            "failed",
            "cycles",
            "exits",
            "windows",
            "fires",
            "delivered",
            "violations",
            "late",
            "lost",
            "pending"
        );
        for p in &self.policies {
            let _ = writeln!(
                s,
                "{:<16} {:>5} {:>6} {:>8} {:>6.2} {:>8} {:>9} {:>10} {:>10} {:>5} {:>5} {:>7}",
                p.policy,
                p.runs,
                p.failed,
                p.cycles,
                p.exits as f64 / p.cycles.max(1) as f64,
                p.storm_cycles,
                p.fires,
                p.deliveries,
                p.violations,
                p.late,
                p.lost,
                if p.pending_wrong == 0 { "ok" } else { "WRONG" }
            );
        }
        let _ = writeln!(
            s,
            "(exits per Linux mask cycle; windows = masked windows the guest opened during the storms)"
        );
        let l = &self.load;
        let _ = writeln!(
            s,
            "load: {}; {} hog batches, {} churn guests ({} KVM ioctls at bring-up, {} fires), {} files written+fsynced+read+unlinked",
            l.described, l.hog_batches, l.churn_guests, l.churn_ioctls, l.churn_fires, l.io_files
        );
        for e in &l.errors {
            let _ = writeln!(s, "load error: {e}");
        }
        let _ = writeln!(s, "rounds: {} in {:.1} s", self.rounds, self.wall_s);
        let _ = writeln!(
            s,
            "deliveries inside a masked window: {} violations (raised after the mask took effect; must be 0), {} late (raised before it, injected late by the host)",
            self.violations, self.late
        );
        let _ = writeln!(s, "{} passed, {} failed", self.passed, self.failed);
        s
    }
}
