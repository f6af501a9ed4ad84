//! The runner: carries a parsed scenario out, step by step, on a fresh
//! [`Target`] (a real KVM guest with the file's devices: our accelerator on
//! the software [`Rig`] or on a real assigned device, a peer VMM's model, a
//! VMM's own emulation), and says whether every expectation held. Steps a
//! target cannot be held to (exit counts written for another of our
//! configurations or for our accelerator alone, events of a VMM that reports
//! none) are skipped with the reason, never failed.

use std::time::{Duration, Instant};

use msix_accel::{EventKind, Policy};
use serde::Serialize;
use testvm::{Program, Width};

use super::events::{self, Ledger};
use super::step::{Cmp, MsixAction, Region, Scenario, Step};
use super::target::{Storm, Target};
use msix_rig::rig::{Rig, RigConfig};
use msix_rig::Error;

/// The outcome of one scenario on one target.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// File.
    pub file: String,
    /// Policy it ran under (our accelerator), or the target's name.
    pub policy: String,
    /// Source kind.
    pub source: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// `FILE:LINE: reason` of the first failure.
    pub failure: Option<String>,
    /// Steps executed (skipped steps included).
    pub steps_run: usize,
    /// MMIO exits to userspace over the whole run.
    pub exits: u64,
    /// Wall time in milliseconds.
    pub millis: u128,
    /// Why the file did not run on this target (a real device lacks what
    /// it needs); absent when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Steps not held against this target, `FILE:LINE: reason` each
    /// (expectations written for our accelerator alone); absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_steps: Vec<String>,
}

impl Outcome {
    /// A run of `scenario` not started yet, labelled `policy` and
    /// `source`: not passed, nothing done.
    pub fn new(scenario: &Scenario, policy: String, source: String) -> Outcome {
        Outcome {
            file: scenario.path.clone(),
            policy,
            source,
            passed: false,
            failure: None,
            steps_run: 0,
            exits: 0,
            millis: 0,
            skipped: None,
            skipped_steps: Vec::new(),
        }
    }

    /// A run of `scenario` under our `policy` with the file's source kind.
    fn ours(scenario: &Scenario, policy: Policy) -> Outcome {
        Outcome::new(
            scenario,
            policy.to_string(),
            source_name(scenario.maskable).into(),
        )
    }

    /// `scenario` under `policy` was not run, for `reason`.
    pub fn skipped(scenario: &Scenario, policy: Policy, reason: String) -> Outcome {
        Outcome {
            skipped: Some(reason),
            ..Outcome::ours(scenario, policy)
        }
    }
}

/// How a source kind is named in outcomes and files: `maskable` or `plain`.
pub fn source_name(maskable: bool) -> &'static str {
    if maskable {
        "maskable"
    } else {
        "plain"
    }
}

/// Adds a guest step's accesses to `p`.
fn program_step(p: &mut Program, rig: &dyn Target, step: &Step) {
    match *step {
        Step::Guest { access, .. } => {
            let k = access.device;
            let base = match access.region {
                Region::Table => rig.table_gpa(k),
                Region::Pba => rig.pba_gpa(k),
                Region::Bar(b) => rig.bar_gpa(k, b),
            };
            if access.write {
                p.write(access.width, base + access.offset, access.value);
            } else {
                p.read(access.width, base + access.offset);
            }
        }
        Step::Msg {
            device,
            entry,
            vector,
            cpu,
            ..
        } => {
            p.write(
                Width::W32,
                rig.entry(device, entry, 0),
                testvm::TestVm::msi_address(cpu),
            );
            p.write(Width::W32, rig.entry(device, entry, 4), 0);
            p.write(Width::W32, rig.entry(device, entry, 8), u64::from(vector));
        }
        Step::Window { vector, open, .. } => {
            p.masked_window(vector, open);
        }
        _ => {}
    }
}

struct Run<'a> {
    rig: &'a dyn Target,
    scenario: &'a Scenario,
    exits_mark: u64,
    unclaimed_mark: u64,
    storm: Option<Box<dyn Storm>>,
    events: Ledger,
}

/// How often `expect irq` and `expect event` look again while they wait.
const POLL: Duration = Duration::from_micros(200);

/// A step done, or not held against this target for a reason.
type Done = Result<Option<String>, String>;

impl Run<'_> {
    fn irqs(&self, vcpu: Option<u8>, vector: u8) -> u64 {
        match vcpu {
            Some(c) => self.rig.vm().irq_count_on(c, vector),
            None => self.rig.vm().irq_count(vector),
        }
    }

    fn exec(&mut self, step: &Step) -> Done {
        let rig = self.rig;
        match step {
            Step::Guest { vcpu, access } => {
                let mut p = Program::new();
                program_step(&mut p, rig, step);
                let out = rig.vm().run(*vcpu, &p).map_err(|e| e.to_string())?;
                if let (Some(expect), Some(&got)) = (access.expect, out.values().first()) {
                    if got != expect {
                        return Err(format!("read {got:#x}, expected {expect:#x}"));
                    }
                }
            }
            Step::Msg { vcpu, .. } | Step::Window { vcpu, .. } => {
                let mut p = Program::new();
                program_step(&mut p, rig, step);
                rig.vm().run(*vcpu, &p).map_err(|e| e.to_string())?;
            }
            Step::Concurrent { repeat, steps } => self.concurrent(*repeat, steps)?,
            Step::Fire {
                device,
                entry,
                count,
            } => rig.fire(*device, *entry, *count)?,
            Step::StormStart { device, entries } => {
                if self.storm.is_some() {
                    return Err("a storm is already running".into());
                }
                self.storm = Some(rig.storm(*device, entries.clone())?);
            }
            Step::StormStop => {
                let h = self.storm.take().ok_or("no storm is running")?;
                h.stop()?;
            }
            Step::Msix { device, action } => {
                let mc = rig.message_control(*device);
                let value = match action {
                    MsixAction::Enable => mc | 0x8000,
                    MsixAction::Disable => mc & !0x8000,
                    MsixAction::MaskAll => mc | 0x4000,
                    MsixAction::UnmaskAll => mc & !0x4000,
                };
                rig.write_message_control(*device, value)?;
            }
            Step::ExpectIrq {
                vcpu,
                vector,
                cmp,
                count,
            } => self.expect_irq(*vcpu, *vector, *cmp, *count)?,
            Step::ExpectWindow { vector, count } => {
                let n: u64 = (0..rig.vm().vcpus())
                    .map(|c| rig.vm().window_count(c, *vector))
                    .sum();
                if n != *count {
                    return Err(format!("IDT vector {vector:#x}: {n} interrupts inside the masked window, expected {count}"));
                }
            }
            Step::ExpectExits { cmp, count } => {
                if let Some(why) = self.exits_not_ours() {
                    return Ok(Some(why));
                }
                let now = rig.vm().exits().mmio();
                let n = now - self.exits_mark;
                self.exits_mark = now;
                if !cmp.holds(n, *count) {
                    return Err(format!("{n} exits to userspace, expected {cmp} {count}"));
                }
            }
            Step::ExpectUnclaimed { cmp, count } => {
                let now = rig.vm().exits().mmio_unclaimed;
                let n = now - self.unclaimed_mark;
                self.unclaimed_mark = now;
                if !cmp.holds(n, *count) {
                    return Err(format!(
                        "{n} accesses nobody claimed, expected {cmp} {count}"
                    ));
                }
            }
            Step::ExpectPending {
                device,
                entry,
                pending,
            } => {
                let got = self.guest_pending(*device, *entry)?;
                if got != *pending {
                    return Err(format!(
                        "entry {entry} pending = {} (the guest's PBA read), expected {}",
                        u8::from(got),
                        u8::from(*pending)
                    ));
                }
            }
            Step::ExpectEvent {
                device,
                kind,
                entry,
            } => return self.expect_event(*device, *kind, *entry),
        }
        Ok(None)
    }

    /// Why this target is not held to the file's exit counts, or None: they
    /// are our accelerator's, under the policies the file lists and with
    /// the source kind it names.
    fn exits_not_ours(&self) -> Option<String> {
        let s = self.scenario;
        let Some(setup) = self.rig.accel_setup() else {
            return Some("exit counts are our accelerator's; this VMM is not it".into());
        };
        if !s.policies.contains(&setup.policy) {
            let listed: Vec<String> = s.policies.iter().map(ToString::to_string).collect();
            return Some(format!(
                "exit counts are written for policy {}; this target runs {}",
                listed.join(", "),
                setup.policy
            ));
        }
        if s.maskable != setup.maskable {
            return Some(format!(
                "exit counts are written for a {} source; this target's is {}",
                source_name(s.maskable),
                source_name(setup.maskable)
            ));
        }
        None
    }

    /// Entry `entry`'s pending bit as the guest reads it: a 32-bit read of
    /// the PBA dword that holds it on vCPU 0, once the VMM has settled. The
    /// read's own exits are not counted against the file's `expect exits`
    /// and `expect unclaimed` (no other vCPU runs meanwhile).
    fn guest_pending(&mut self, device: u8, entry: u16) -> Result<bool, String> {
        let rig = self.rig;
        rig.settle()?;
        let dword = u64::from(entry / 32) * 4;
        let mut p = Program::new();
        p.read(Width::W32, rig.pba_gpa(device) + dword);
        let before = rig.vm().exits();
        let out = rig.vm().run(0, &p).map_err(|e| e.to_string())?;
        let after = rig.vm().exits();
        self.exits_mark += after.mmio() - before.mmio();
        self.unclaimed_mark += after.mmio_unclaimed - before.mmio_unclaimed;
        let value = out
            .values()
            .first()
            .copied()
            .ok_or("the guest's PBA read returned no value")?;
        Ok(value >> (entry % 32) & 1 == 1)
    }

    /// Whether `done` holds before the guest's watchdog runs out (looked
    /// at again every [`POLL`]). Every change of `progress` (deliveries or
    /// events so far) restarts the watchdog's period, so a loaded machine
    /// makes the wait longer, not failed.
    fn within_watchdog(
        &mut self,
        progress: impl Fn(&mut Self) -> u64,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let mut watchdog = testvm::Watchdog::new(self.rig.vm().watchdog(), progress(self));
        loop {
            if done(self) {
                return true;
            }
            if watchdog.check(progress(self)).is_err() {
                return false;
            }
            std::thread::sleep(POLL);
        }
    }

    fn expect_irq(
        &mut self,
        vcpu: Option<u8>,
        vector: u8,
        cmp: Cmp,
        count: u64,
    ) -> Result<(), String> {
        // Reach N within the watchdog...
        if !self.within_watchdog(|r| r.irqs(vcpu, vector), |r| r.irqs(vcpu, vector) >= count) {
            return Err(format!(
                "IDT vector {vector:#x}: {} interrupts, none more in the last {} ms (watchdog), expected {cmp} {count}",
                self.irqs(vcpu, vector),
                self.rig.vm().watchdog().as_millis()
            ));
        }
        if cmp == Cmp::Eq {
            // ...then, once the VMM's own threads are done, a sentinel on
            // every vCPU: an interrupt that already reached a local APIC is
            // taken before it, so a count still at N afterwards is exactly
            // N, however late the host injects.
            self.rig.settle()?;
            self.rig.vm().sentinel_all().map_err(|e| e.to_string())?;
            let n = self.irqs(vcpu, vector);
            if n != count {
                return Err(format!(
                    "IDT vector {vector:#x}: {n} interrupts (after a sentinel on every vCPU), expected = {count}"
                ));
            }
        }
        Ok(())
    }

    fn expect_event(&mut self, device: u8, kind: EventKind, entry: Option<u16>) -> Done {
        // Events of an absorbed access are reported when it is serviced:
        // wait for one within the watchdog (one event: nothing partial to
        // see progress in).
        let rig = self.rig;
        if !self.events.collect(rig) {
            return Ok(Some(
                "events are our accelerator's; this VMM reports none".into(),
            ));
        }
        if self.within_watchdog(
            |_| 0,
            |r| {
                r.events.collect(rig);
                r.events.consume(device, kind, entry) > 0
            },
        ) {
            return Ok(None);
        }
        let about = entry.map_or(String::new(), |e| format!(" entry {e}"));
        Err(format!(
            "no {} event from device {device}{about} within the {} ms watchdog (unconsumed: {})",
            events::kind_name(kind),
            rig.vm().watchdog().as_millis(),
            self.events.describe()
        ))
    }

    /// Each vCPU runs its lines of the block `repeat` times, all at once.
    fn concurrent(&self, repeat: u64, steps: &[(u32, Step)]) -> Result<(), String> {
        let rig = self.rig;
        let mut used = Vec::new();
        for c in 0..rig.vm().vcpus() {
            let mine: Vec<&Step> = steps
                .iter()
                .map(|(_, s)| s)
                .filter(|s| matches!(s, Step::Guest { vcpu, .. } | Step::Msg { vcpu, .. } | Step::Window { vcpu, .. } if *vcpu == c))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mut p = Program::new();
            p.repeat(repeat, |p| {
                for s in &mine {
                    program_step(p, rig, s);
                }
            });
            rig.vm().start(c, &p).map_err(|e| e.to_string())?;
            used.push(c);
        }
        for c in used {
            rig.vm().wait(c).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The watchdog of every wait on a scenario's guest (a guest program, an
/// interrupt count, an event): long enough that a host loaded many times
/// over its cores still runs a file's longest concurrent block, short
/// enough that a hang fails its run within the run.
pub const SCENARIO_WATCHDOG: Duration = Duration::from_secs(30);

/// How the software rig is configured for `scenario` under `policy`: its
/// devices, table size, vCPUs, layout, source kind, x2APIC API and
/// [`SCENARIO_WATCHDOG`].
pub fn rig_config(scenario: &Scenario, policy: Policy) -> RigConfig {
    RigConfig {
        watchdog: SCENARIO_WATCHDOG,
        devices: scenario.devices,
        vectors: scenario.vectors,
        vcpus: scenario.vcpus,
        policy,
        maskable: scenario.maskable,
        x2apic_api: scenario.x2apic_api,
        layout: scenario.layout,
        ..RigConfig::default()
    }
}

/// Runs `scenario` under `policy` in a fresh guest on software sources.
pub fn run(scenario: &Scenario, policy: Policy) -> Outcome {
    run_on(scenario, policy, Rig::new)
}

/// Runs `scenario` under `policy` on the target `build` makes from the
/// file's rig configuration ([`rig_config`]); a target that cannot be built
/// fails the run.
pub fn run_on<'t, T: Target + 't>(
    scenario: &Scenario,
    policy: Policy,
    build: impl FnOnce(RigConfig) -> Result<T, Error>,
) -> Outcome {
    run_target(scenario, Outcome::ours(scenario, policy), || {
        match build(rig_config(scenario, policy)) {
            Ok(t) => Ok(Box::new(t) as Box<dyn Target + '_>),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// Runs `scenario` on the target `build` makes, filling in `outcome`; a
/// target that cannot be built fails the run.
pub fn run_target<'t>(
    scenario: &Scenario,
    mut outcome: Outcome,
    build: impl FnOnce() -> Result<Box<dyn Target + 't>, String>,
) -> Outcome {
    let started = Instant::now();
    match build() {
        Ok(target) => drive(scenario, &*target, &mut outcome),
        Err(e) => {
            outcome.failure = Some(format!("{}: cannot build the guest: {e}", scenario.path));
        }
    }
    outcome.millis = started.elapsed().as_millis();
    outcome
}

/// Carries `scenario` out on `rig`, step by step, into `outcome`.
fn drive(scenario: &Scenario, rig: &dyn Target, outcome: &mut Outcome) {
    let mut run = Run {
        rig,
        scenario,
        exits_mark: 0,
        unclaimed_mark: 0,
        storm: None,
        events: Ledger::default(),
    };
    for (line, step) in &scenario.steps {
        match run.exec(step) {
            Ok(None) => {}
            Ok(Some(why)) => outcome
                .skipped_steps
                .push(format!("{}:{line}: {why}", scenario.path)),
            Err(reason) => {
                outcome.failure = Some(format!("{}:{line}: {reason}", scenario.path));
                break;
            }
        }
        outcome.steps_run += 1;
    }
    if let Some(h) = run.storm.take() {
        // A storm the file left running: one that could not fire at all is
        // still the target's failure.
        if let Err(e) = h.stop() {
            if outcome.failure.is_none() {
                outcome.failure = Some(format!("{}: the storm at the end: {e}", scenario.path));
            }
        }
    }
    if outcome.failure.is_none() {
        // An error the VMM met, and whatever it reported that no `expect
        // event` consumed, fail the run.
        if let Err(e) = rig.settle() {
            outcome.failure = Some(format!("{}: the VMM met an error: {e}", scenario.path));
        } else if run.events.collect(rig) {
            if let Some(e) = run.events.first() {
                outcome.failure = Some(format!("{}: accelerator event: {e}", scenario.path));
            }
        }
    }
    outcome.passed = outcome.failure.is_none();
    outcome.exits = rig.vm().exits().mmio();
}
