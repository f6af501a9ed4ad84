//! The result of `msix-bench --vfio`: the JSON document (`--json`) and the
//! tables (checks by run, Linux mask cycle cost by run).

use std::fmt::Write as _;

use serde::Serialize;

use crate::checks::{Outcome, RunResult, CHECKS};
use crate::cycle::CycleCost;
use crate::device::AssignedDevice;
use crate::nic::PciIds;

/// The device the checks ran on.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceInfo {
    /// PCI address.
    pub bdf: String,
    /// PCI identity.
    pub ids: PciIds,
    /// Family of its trigger (`igb`, `e1000e`), None when unknown.
    pub family: Option<&'static str>,
    /// MSI-X Table Size.
    pub table_size: u16,
    /// Vectors the checks raise (the table size, capped by the trigger).
    pub vectors_checked: u16,
    /// Whether the host lets the source mask vectors at the device.
    pub source_masking_available: bool,
    /// Why it does not, if it does not.
    pub unmapped_reason: Option<String>,
    /// QEMU's e1000e model (its raises are held masked; docs/hardware.md).
    pub qemu_e1000e: bool,
}

impl DeviceInfo {
    /// What the report says about `device`.
    pub fn of(device: &AssignedDevice) -> DeviceInfo {
        DeviceInfo {
            bdf: device.bdf(),
            ids: device.ids,
            family: device.family().map(|f| f.name()),
            table_size: device.msix.table_size,
            vectors_checked: device.vectors(),
            source_masking_available: device.features.maskable,
            unmapped_reason: device.unmapped_reason.clone(),
            qemu_e1000e: device.nic.as_ref().is_some_and(|n| n.is_qemu_e1000e()),
        }
    }
}

/// The host the checks ran on.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    /// Kernel release.
    pub kernel: String,
    /// CPUs available to the process.
    pub cpus: usize,
    /// The host is itself a QEMU guest (DMI says so): times are indicative
    /// only; counts are exact wherever the checks run.
    pub emulated: bool,
}

impl HostInfo {
    /// Reads the facts of this host.
    pub fn read() -> HostInfo {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        HostInfo {
            kernel: read("/proc/sys/kernel/osrelease"),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            emulated: read("/sys/class/dmi/id/sys_vendor") == "QEMU",
        }
    }
}

/// Everything `msix-bench --vfio` measured and checked.
#[derive(Clone, Debug, Serialize)]
pub struct HardwareReport {
    /// Version of this document's layout.
    pub schema: u32,
    /// The device.
    pub device: DeviceInfo,
    /// The host.
    pub host: HostInfo,
    /// One entry per mechanism, without and with source masking, then the
    /// default (`auto` with source masking, `"default": true`).
    pub runs: Vec<RunResult>,
    /// The same checks on the peer handlers (QEMU-like, crosvm-like).
    pub peers: Vec<RunResult>,
    /// Checks of ours passed.
    pub passed: usize,
    /// Checks of ours failed.
    pub failed: usize,
    /// Checks of ours skipped (nothing proven), with their reasons in `runs`.
    pub skipped: usize,
    /// Checks of the peers passed.
    pub peers_passed: usize,
    /// Checks of the peers failed (a broken peer handler makes the
    /// comparison meaningless, so this fails the run too).
    pub peers_failed: usize,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
}

impl HardwareReport {
    /// A report of `runs` (ours) and `peers` on `device`.
    pub fn new(
        device: &AssignedDevice,
        runs: Vec<RunResult>,
        peers: Vec<RunResult>,
        wall_s: f64,
    ) -> HardwareReport {
        let count = |runs: &[RunResult], f: fn(&Outcome) -> bool| {
            runs.iter()
                .flat_map(|r| &r.checks)
                .filter(|c| f(&c.outcome))
                .count()
        };
        let pass = |o: &Outcome| matches!(o, Outcome::Pass);
        let fail = |o: &Outcome| matches!(o, Outcome::Fail(_));
        HardwareReport {
            schema: 1,
            device: DeviceInfo::of(device),
            host: HostInfo::read(),
            passed: count(&runs, pass),
            failed: count(&runs, fail),
            skipped: count(&runs, |o| matches!(o, Outcome::Skipped(_))),
            peers_passed: count(&peers, pass),
            peers_failed: count(&peers, fail),
            runs,
            peers,
            wall_s,
        }
    }

    fn all_runs(&self) -> impl Iterator<Item = &RunResult> {
        self.runs.iter().chain(&self.peers)
    }

    /// One line per check: `PASS|FAIL|SKIP BDF FAMILY RUN: CHECK[: why]`.
    pub fn lines(&self) -> String {
        let mut s = String::new();
        let family = self.device.family.unwrap_or("unknown-family");
        for r in self.all_runs() {
            for c in &r.checks {
                let (tag, why) = match &c.outcome {
                    Outcome::Pass => ("PASS", None),
                    Outcome::Fail(why) => ("FAIL", Some(why)),
                    Outcome::Skipped(why) => ("SKIP", Some(why)),
                };
                let _ = write!(
                    s,
                    "{tag} {} {family} {}: {}",
                    self.device.bdf,
                    r.name(),
                    c.name
                );
                if let Some(why) = why {
                    let _ = write!(s, ": {why}");
                }
                s.push('\n');
            }
        }
        s
    }

    /// The two tables: checks by run, and the cost of a Linux mask cycle.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let d = &self.device;
        let _ = writeln!(
            s,
            "msix-bench --vfio {}: {} {}, MSI-X table size {}, {} vectors checked, source masking {}",
            d.bdf,
            d.family.unwrap_or("unknown family"),
            d.ids,
            d.table_size,
            d.vectors_checked,
            if d.source_masking_available {
                "available".to_string()
            } else {
                format!("unavailable ({})", d.unmapped_reason.as_deref().unwrap_or("?"))
            }
        );
        let _ = writeln!(
            s,
            "host: kernel {}, {} CPUs{}\n",
            self.host.kernel,
            self.host.cpus,
            if self.host.emulated {
                ", itself a QEMU guest (times indicative only; counts exact)"
            } else {
                ""
            }
        );
        let names: Vec<String> = self.all_runs().map(RunResult::label).collect();
        let width = CHECKS.iter().map(|c| c.len()).max().unwrap_or(0);
        let _ = write!(s, "{:width$}", "check");
        for n in &names {
            let _ = write!(s, "  {n:>14}");
        }
        s.push('\n');
        for (i, check) in CHECKS.iter().enumerate() {
            let _ = write!(s, "{check:width$}");
            for r in self.all_runs() {
                let cell = match r.checks.get(i).map(|c| &c.outcome) {
                    Some(Outcome::Pass) => "pass",
                    Some(Outcome::Fail(_)) => "FAIL",
                    Some(Outcome::Skipped(_)) => "skipped",
                    None => "-",
                };
                let _ = write!(s, "  {cell:>14}");
            }
            s.push('\n');
        }
        if let Some(d) = self.runs.iter().find(|r| r.default) {
            let medians = d.auto_medians_ns.map_or(String::new(), |[wake, inline]| {
                format!(" (wake round trip {wake} ns against in-thread apply {inline} ns)")
            });
            let _ = writeln!(
                s,
                "* the default (AccelConfig::new's policy with source masking), here under {}{medians}",
                d.policy_in_force.as_deref().unwrap_or("no placement")
            );
        }
        s.push('\n');
        s.push_str(&cycle_table(
            self.all_runs()
                .filter_map(|r| r.cycle.map(|c| (r.label(), c)))
                .collect(),
        ));
        s.push_str(&self.ratio_table());
        s
    }

    /// Guest time per Linux mask cycle of each peer divided by each of
    /// ours, measured in this run on the same guest program and device.
    pub fn ratio_table(&self) -> String {
        let ours: Vec<(String, f64)> = self
            .runs
            .iter()
            .filter_map(|r| r.cycle.map(|c| (r.label(), c.guest_ns_per_cycle)))
            .filter(|(_, ns)| *ns > 0.0)
            .collect();
        let peers: Vec<(String, f64)> = self
            .peers
            .iter()
            .filter_map(|r| r.cycle.map(|c| (r.name(), c.guest_ns_per_cycle)))
            .collect();
        let mut s = String::new();
        if ours.is_empty() || peers.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\nGuest time per Linux mask cycle, peer / ours (same run, same guest program, same device){}:",
            if self.host.emulated {
                "; this host is emulated (TCG): only these ratios, not the times, carry over, and only roughly"
            } else {
                ""
            }
        );
        let _ = write!(s, "{:<16}", "");
        for (name, _) in &ours {
            let _ = write!(s, " {:>15}", format!("/ {name}"));
        }
        s.push('\n');
        for (peer, ns) in &peers {
            let _ = write!(s, "{peer:<16}");
            for (_, base) in &ours {
                let _ = write!(s, " {:>14.2}x", ns / base);
            }
            s.push('\n');
        }
        s
    }
}

/// The cost of one Linux mask cycle per row.
pub fn cycle_table(rows: Vec<(String, CycleCost)>) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "Linux mask cycle (mask, flush read, unmask of entry 0), per cycle:\n\
         {:<16} {:>6} {:>7} {:>8} {:>6} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "row",
        "exits",
        "ioctls",
        "routing",
        "irqfd",
        "sig.msi",
        "SET_IRQS",
        "vc-write",
        "guest us",
        "host us"
    );
    for (name, c) in &rows {
        let w = &c.work;
        let _ = writeln!(
            s,
            "{:<16} {:>6.2} {:>7.2} {:>8.2} {:>6.2} {:>8.2} {:>9.2} {:>9.2} {:>9.1} {:>9.1}",
            name,
            c.per_cycle(c.exits),
            c.per_cycle(w.ioctls()),
            c.per_cycle(w.set_gsi_routing),
            c.per_cycle(w.irqfd),
            c.per_cycle(w.signal_msi),
            c.per_cycle(w.vfio_set_irqs),
            c.per_cycle(w.physical_mask_writes),
            c.guest_ns_per_cycle / 1000.0,
            c.host_cpu_ns_per_cycle / 1000.0,
        );
    }
    let _ = writeln!(
        s,
        "(ioctls: KVM and VFIO; routing: KVM_SET_GSI_ROUTING; irqfd: KVM_IRQFD assign and\n\
         deassign; sig.msi: KVM_SIGNAL_MSI; SET_IRQS: VFIO_DEVICE_SET_IRQS; vc-write: writes\n\
         to the device's Vector Control; guest us: guest time; host us: process CPU time;\n\
         times are the fastest of {} batches of {} cycles)",
        super::checks::CYCLE_BATCHES,
        super::checks::CYCLES_PER_BATCH
    );
    s
}
