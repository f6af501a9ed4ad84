//! The runner: carries a parsed scenario out, step by step, on a fresh
//! [`Target`] (a real KVM guest with the file's devices: the software
//! [`Rig`], or a real assigned device), and says whether every expectation
//! held.

use std::time::{Duration, Instant};

use msix_accel::{EventKind, Policy};
use serde::Serialize;
use testvm::{Program, Width};

use super::events::{self, Ledger};
use super::step::{Cmp, MsixAction, Region, Scenario, Step};
use super::target::{Storm, Target};
use crate::rig::{Rig, RigConfig};
use crate::Error;

/// The outcome of one scenario under one policy.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// File.
    pub file: String,
    /// Policy it ran under.
    pub policy: String,
    /// Source kind.
    pub source: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// `FILE:LINE: reason` of the first failure.
    pub failure: Option<String>,
    /// Steps executed.
    pub steps_run: usize,
    /// MMIO exits to userspace over the whole run.
    pub exits: u64,
    /// Wall time in milliseconds.
    pub millis: u128,
    /// Why the file did not run on this target (a real device lacks what
    /// it needs); absent when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Outcome {
    /// A run not started yet: not passed, nothing done.
    fn new(scenario: &Scenario, policy: Policy) -> Outcome {
        Outcome {
            file: scenario.path.clone(),
            policy: policy.to_string(),
            source: if scenario.maskable {
                "maskable"
            } else {
                "plain"
            }
            .into(),
            passed: false,
            failure: None,
            steps_run: 0,
            exits: 0,
            millis: 0,
            skipped: None,
        }
    }

    /// `scenario` under `policy` was not run, for `reason`.
    pub fn skipped(scenario: &Scenario, policy: Policy, reason: String) -> Outcome {
        Outcome {
            skipped: Some(reason),
            ..Outcome::new(scenario, policy)
        }
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
    exits_mark: u64,
    unclaimed_mark: u64,
    storm: Option<Box<dyn Storm>>,
    events: Ledger,
}

/// How often `expect irq` and `expect event` look again while they wait.
const POLL: Duration = Duration::from_micros(200);

impl Run<'_> {
    fn irqs(&self, vcpu: Option<u8>, vector: u8) -> u64 {
        match vcpu {
            Some(c) => self.rig.vm().irq_count_on(c, vector),
            None => self.rig.vm().irq_count(vector),
        }
    }

    fn exec(&mut self, step: &Step) -> Result<(), String> {
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
                h.stop();
            }
            Step::Msix { device, action } => {
                let accel = rig.accel(*device);
                let mc = accel.message_control();
                let value = match action {
                    MsixAction::Enable => mc | 0x8000,
                    MsixAction::Disable => mc & !0x8000,
                    MsixAction::MaskAll => mc | 0x4000,
                    MsixAction::UnmaskAll => mc & !0x4000,
                };
                accel
                    .write_message_control(value)
                    .map_err(|e| e.to_string())?;
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
                let got = rig
                    .accel(*device)
                    .pending(*entry)
                    .map_err(|e| e.to_string())?;
                if got != *pending {
                    return Err(format!(
                        "entry {entry} pending = {}, expected {}",
                        u8::from(got),
                        u8::from(*pending)
                    ));
                }
            }
            Step::ExpectEvent {
                device,
                kind,
                entry,
            } => self.expect_event(*device, *kind, *entry)?,
        }
        Ok(())
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
            // ...then a sentinel on every vCPU: an interrupt that already
            // reached a local APIC is taken before it, so a count still at
            // N afterwards is exactly N, however late the host injects.
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

    fn expect_event(
        &mut self,
        device: u8,
        kind: EventKind,
        entry: Option<u16>,
    ) -> Result<(), String> {
        // Events of an absorbed access are reported when it is serviced:
        // wait for one within the watchdog (one event: nothing partial to
        // see progress in).
        let rig = self.rig;
        if self.within_watchdog(
            |_| 0,
            |r| {
                r.events.collect(rig);
                r.events.consume(device, kind, entry) > 0
            },
        ) {
            return Ok(());
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

/// How the software rig is configured for `scenario` under `policy`: its
/// devices, table size, vCPUs, layout, source kind and x2APIC API.
pub fn rig_config(scenario: &Scenario, policy: Policy) -> RigConfig {
    RigConfig {
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
pub fn run_on<T: Target>(
    scenario: &Scenario,
    policy: Policy,
    build: impl FnOnce(RigConfig) -> Result<T, Error>,
) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome::new(scenario, policy);
    let target = match build(rig_config(scenario, policy)) {
        Ok(t) => t,
        Err(e) => {
            outcome.failure = Some(format!("{}: cannot build the guest: {e}", scenario.path));
            return outcome;
        }
    };
    let rig: &dyn Target = &target;
    let mut run = Run {
        rig,
        exits_mark: 0,
        unclaimed_mark: 0,
        storm: None,
        events: Ledger::default(),
    };
    for (line, step) in &scenario.steps {
        if let Err(reason) = run.exec(step) {
            outcome.failure = Some(format!("{}:{line}: {reason}", scenario.path));
            break;
        }
        outcome.steps_run += 1;
    }
    if let Some(h) = run.storm.take() {
        h.stop();
    }
    if outcome.failure.is_none() {
        // Whatever the accelerator reported and no `expect event` consumed
        // fails the run.
        run.events.collect(rig);
        if let Some(e) = run.events.first() {
            outcome.failure = Some(format!("{}: accelerator event: {e}", scenario.path));
        }
    }
    outcome.passed = outcome.failure.is_none();
    outcome.exits = rig.vm().exits().mmio();
    outcome.millis = started.elapsed().as_millis();
    outcome
}
