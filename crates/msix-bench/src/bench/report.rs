//! The bench's results: one [`Row`] per policy or peer model, the JSON
//! document (`--json`), the side-by-side table and the ratio table.

use std::fmt::Write as _;

use serde::Serialize;

use super::workload::{BringUpResult, CycleResult, PendingResult, StormResult};

/// Whether a row is one of our policies or a model of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RowKind {
    /// An msix-accel policy.
    Ours,
    /// A model of a peer VMM.
    Peer,
}

/// Every number measured for one policy or peer model. Field names are the
/// JSON contract documented in `docs/performance.md`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// `fast`, `strict`, `trap` (with `+srcmask` when the source masks),
    /// `qemu-like`, `cloud-hypervisor-like` or `dragonball-like`.
    pub policy: String,
    /// Ours or a peer model.
    pub kind: RowKind,
    /// Whether the software source masks vectors itself.
    pub source_masking: bool,
    /// MMIO exits per Linux mask cycle (exact: exits / cycles).
    pub exits_per_cycle: f64,
    /// KVM ioctls per cycle.
    pub ioctls_per_cycle: f64,
    /// KVM_SET_GSI_ROUTING per cycle.
    pub set_gsi_routing_per_cycle: f64,
    /// KVM_IRQFD assign + deassign per cycle.
    pub irqfd_per_cycle: f64,
    /// Guest-visible time per cycle (guest TSC), nanoseconds.
    pub guest_ns_per_cycle: f64,
    /// Process CPU time per cycle (user + system, every thread), nanoseconds.
    pub host_cpu_ns_per_cycle: f64,
    /// Interrupts taken per second during the storm.
    pub storm_deliveries_per_sec: f64,
    /// Interrupts taken while the guest believed the vector masked.
    pub storm_delivered_while_masked: u64,
    /// Storm deliveries inside the masked window that were raised before
    /// the mask took effect (pending in the local APIC when it returned).
    pub storm_late_before_mask: u64,
    /// 1 if a fire after the storm was not delivered before the watchdog.
    pub storm_lost: u64,
    /// Interrupts taken while masked in the pending check (three fires).
    pub pending_delivered_while_masked: u64,
    /// Interrupts taken after the unmask in the pending check (exact: 1).
    pub pending_delivered_at_unmask: u64,
    /// The raw cycle measurement.
    pub cycle: CycleResult,
    /// The raw storm measurement.
    pub storm: StormResult,
    /// Bring-up per table size.
    pub bring_up: Vec<BringUpResult>,
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
        let per = |v: u64| v as f64 / cycle.cycles.max(1) as f64;
        Row {
            policy,
            kind,
            source_masking,
            exits_per_cycle: per(cycle.exits),
            ioctls_per_cycle: per(cycle.ioctls),
            set_gsi_routing_per_cycle: per(cycle.set_gsi_routing),
            irqfd_per_cycle: per(cycle.irqfd),
            guest_ns_per_cycle: per(cycle.guest_ns),
            host_cpu_ns_per_cycle: per(cycle.host_cpu_ns),
            storm_deliveries_per_sec: storm.deliveries_per_sec,
            storm_delivered_while_masked: storm.delivered_while_masked,
            storm_late_before_mask: storm.late_before_mask,
            storm_lost: storm.lost,
            pending_delivered_while_masked: pending.delivered_while_masked,
            pending_delivered_at_unmask: pending.delivered_at_unmask,
            cycle,
            storm,
            bring_up: Vec::new(),
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
    /// Schema version of this document.
    pub schema: u32,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Linux mask cycles per row.
    pub cycles: u64,
    /// Mask cycles of the storm per row.
    pub storm_cycles: u64,
    /// Bring-up table sizes.
    pub bring_up_sizes: Vec<u16>,
    /// The host.
    pub host: Host,
    /// One row per policy or peer model.
    pub rows: Vec<Row>,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
    /// Checks that failed (empty on success).
    pub failures: Vec<String>,
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else if value == 0.0 {
        "=".to_string()
    } else {
        "∞ (vs 0)".to_string()
    }
}

impl Report {
    /// The side-by-side, bring-up and ratio tables.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Linux mask cycle ({} cycles) and storm ({} mask cycles, vector 0 at full rate) per policy",
            self.cycles, self.storm_cycles
        );
        let _ = writeln!(
            s,
            "{:<22} {:>7} {:>7} {:>6} {:>6} {:>9} {:>9} {:>10} {:>7} {:>5} {:>8}",
            "policy",
            "exits",
            "ioctls",
            "routes",
            "irqfd",
            "guest ns",
            "host ns",
            "storm/s",
            "masked",
            "lost",
            "pending"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<22} {:>7.2} {:>7.2} {:>6.2} {:>6.2} {:>9.0} {:>9.0} {:>10.0} {:>7} {:>5} {:>8}",
                r.policy,
                r.exits_per_cycle,
                r.ioctls_per_cycle,
                r.set_gsi_routing_per_cycle,
                r.irqfd_per_cycle,
                r.guest_ns_per_cycle,
                r.host_cpu_ns_per_cycle,
                r.storm_deliveries_per_sec,
                r.storm_delivered_while_masked,
                r.storm_lost,
                format!(
                    "{}/{}",
                    r.pending_delivered_while_masked, r.pending_delivered_at_unmask
                ),
            );
        }
        let _ = writeln!(
            s,
            "(per cycle: exits, ioctls, KVM_SET_GSI_ROUTING, KVM_IRQFD, guest TSC ns, process CPU ns; \
             masked = storm deliveries while masked that were raised after the mask took effect (late ones, raised before it, are in the JSON); pending = 3 fires while masked: delivered masked/at unmask, exact is 0/1)"
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Bring-up: program + unmask every entry (KVM_SET_GSI_ROUTING calls / wall ms)"
        );
        let _ = write!(s, "{:<22}", "policy");
        for n in &self.bring_up_sizes {
            let _ = write!(s, " {:>20}", format!("{n} vectors"));
        }
        let _ = writeln!(s);
        for r in &self.rows {
            let _ = write!(s, "{:<22}", r.policy);
            for b in &r.bring_up {
                let _ = write!(
                    s,
                    " {:>20}",
                    format!("{} / {:.1} ms", b.set_gsi_routing, b.wall_ms)
                );
            }
            let _ = writeln!(s);
        }
        for base in ["fast", "fast+srcmask"] {
            let Some(fast) = self.rows.iter().find(|r| r.policy == base) else {
                continue;
            };
            let _ = writeln!(s);
            let _ = writeln!(s, "Peers against {base} (same run, per Linux mask cycle)");
            let _ = writeln!(
                s,
                "{:<22} {:>10} {:>10} {:>10} {:>10}",
                "model", "exits", "ioctls", "guest", "host CPU"
            );
            for r in self.rows.iter().filter(|r| r.kind == RowKind::Peer) {
                let _ = writeln!(
                    s,
                    "{:<22} {:>10} {:>10} {:>10} {:>10}",
                    r.policy,
                    ratio(r.exits_per_cycle, fast.exits_per_cycle),
                    ratio(r.ioctls_per_cycle, fast.ioctls_per_cycle),
                    ratio(r.guest_ns_per_cycle, fast.guest_ns_per_cycle),
                    ratio(r.host_cpu_ns_per_cycle, fast.host_cpu_ns_per_cycle),
                );
            }
        }
        s
    }
}
