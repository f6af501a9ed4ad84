//! The end-to-end checks on an assigned device: the device's own MSI-X
//! vectors, raised through its registers, travel through vfio-pci, the
//! kernel VFIO source and our accelerator (KVM irqfds and routes) into a
//! real KVM guest, which programs, masks and unmasks them through MMIO.
//!
//! Every "nothing was delivered" is proven, never waited for: the device
//! holding the message (the physical Pending bit when the source masks, the
//! eventfd count when the irqfd is detached) shows it was not sent on, and
//! [`TestVm::sentinel_all`] shows nothing already in a local APIC was left
//! untaken. Every wait is bounded by the guest's watchdog and fails its
//! check. The guest's counters of every IDT vector on every vCPU are
//! compared with what must have been delivered after each step, so a
//! delivery to a wrong vector or vCPU, or a second one, fails the step.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use msix_accel::Policy;
use serde::Serialize;
use testvm::{Program, TestVm, Width, DOORBELL_VECTOR, SENTINEL_VECTOR};

use crate::cycle::{linux_cycles, CycleCost};
use crate::device::AssignedDevice;
use crate::handler::Handler;
use crate::host_irqs::host_msix_vectors;
use crate::nic::Nic;
use crate::rig::{HwRig, VCPUS};
use crate::Error;

/// IDT vector of entry `v` is `VECTOR_BASE + v`, on vCPU `v % VCPUS`.
pub const VECTOR_BASE: u8 = 0x40;
/// IDT vector a message change moves entry `v` to (on the other vCPU).
pub const MOVED_BASE: u8 = 0x60;
/// Linux mask cycles measured per run: batches of guest programs, and
/// cycles per program.
pub const CYCLE_BATCHES: u64 = 5;
/// See [`CYCLE_BATCHES`].
pub const CYCLES_PER_BATCH: u64 = 40;
/// Bound of a wait for the device to latch a raise (it latches during the
/// register write; the bound only stops a broken device).
const LATCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The checks of one run, in order.
pub const CHECKS: [&str; 6] = [
    HOST_IRQS,
    PROGRAM,
    DELIVER,
    MASKED,
    MESSAGE_CHANGE,
    LINUX_CYCLE,
];
const HOST_IRQS: &str = "host_irqs_follow_the_vectors_the_guest_unmasks";
const PROGRAM: &str = "guest_programs_and_unmasks_every_vector";
const DELIVER: &str = "each_raise_delivered_once_to_its_vector_and_vcpu_with_0_exits";
const MASKED: &str = "masked_raise_held_guest_reads_pba_unmask_delivers_once";
const MESSAGE_CHANGE: &str = "message_change_while_masked_moves_the_pending_interrupt";
const LINUX_CYCLE: &str = "linux_mask_cycle_exits_match_the_policy";

/// Why the checks that need a raise are skipped on an unknown device.
pub const NO_TRIGGER: &str =
    "no known trigger for this device family: it cannot be made to raise a vector (docs/hardware.md: adding a device family)";

/// How one check ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "lowercase")]
pub enum Outcome {
    /// It passed.
    Pass,
    /// It failed, and why.
    Fail(String),
    /// It was not run, and why (nothing was proven).
    Skipped(String),
}

/// One check's name and outcome.
#[derive(Clone, Debug, Serialize)]
pub struct CheckOutcome {
    /// The check (it states the behaviour it proves).
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// The checks of one policy with or without source masking.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    /// Policy (ours) or peer name.
    pub policy: String,
    /// Source masking requested.
    pub source_masking: bool,
    /// A peer handler, not ours.
    pub peer: bool,
    /// Ours under the library's default policy (`msix_accel::DEFAULT_POLICY`)
    /// with source masking: what a VMM gets (only that run carries it, as
    /// `true`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// Ours: the mechanism the table was placed under (for `auto`, what it
    /// chose on this host); None for the peers and a failed setup.
    pub policy_in_force: Option<String>,
    /// Ours under `auto`: the medians its measurement weighed, `[wake
    /// round trip, in-thread apply]` in ns (`AccelStats::auto_wake_ns`,
    /// `auto_inline_ns`), as the bench's `auto+srcmask` row carries them;
    /// None for other runs and when no measurement completed.
    pub auto_medians_ns: Option<[u64; 2]>,
    /// Each check, in [`CHECKS`] order.
    pub checks: Vec<CheckOutcome>,
    /// Exits of the guest programming every entry.
    pub program_exits: Option<u64>,
    /// The Linux mask cycles measured by the last check.
    pub cycle: Option<CycleCost>,
}

impl RunResult {
    /// The run's name in reports (`fast`, `fast+srcmask`, `qemu-like`, ...).
    pub fn name(&self) -> String {
        if self.source_masking {
            format!("{}+srcmask", self.policy)
        } else {
            self.policy.clone()
        }
    }

    /// The name in the tables: the default run's ends in `*`.
    pub fn label(&self) -> String {
        if self.default {
            format!("{}*", self.name())
        } else {
            self.name()
        }
    }
}

/// Runs every check under `policy`, with or without source masking, in a
/// fresh guest with a fresh accelerator.
pub fn run(device: &AssignedDevice, policy: Policy, source_masking: bool) -> RunResult {
    let name = policy.to_string();
    let mut result = match HwRig::new(device, policy, source_masking) {
        Ok(rig) => {
            let mut r = run_on(device, &rig, name, source_masking, false);
            r.policy_in_force = Some(rig.accel.policy().to_string());
            let stats = rig.accel.stats();
            r.auto_medians_ns = (policy == Policy::Auto && stats.auto_wake_ns > 0)
                .then_some([stats.auto_wake_ns, stats.auto_inline_ns]);
            r
        }
        Err(e) => failed_setup(name, source_masking, false, &e),
    };
    result.default = policy == msix_accel::DEFAULT_POLICY && source_masking;
    result
}

/// The result of a run whose guest or handler could not be set up.
pub fn failed_setup(name: String, source_masking: bool, peer: bool, e: &Error) -> RunResult {
    RunResult {
        policy: name,
        source_masking,
        peer,
        default: false,
        policy_in_force: None,
        auto_medians_ns: None,
        checks: CHECKS
            .iter()
            .map(|name| CheckOutcome {
                name,
                outcome: Outcome::Fail(format!("setting up the guest and the handler: {e}")),
            })
            .collect(),
        program_exits: None,
        cycle: None,
    }
}

/// Runs every check on `handler`.
pub fn run_on(
    device: &AssignedDevice,
    handler: &dyn Handler,
    name: String,
    source_masking: bool,
    peer: bool,
) -> RunResult {
    let mut result = RunResult {
        policy: name,
        source_masking,
        peer,
        default: false,
        policy_in_force: None,
        auto_medians_ns: None,
        checks: Vec::new(),
        program_exits: None,
        cycle: None,
    };
    let mut g = Guest {
        h: handler,
        nic: device.nic.as_ref(),
        vectors: device.vectors(),
        expected: BTreeMap::new(),
        bdf: device
            .sysfs
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default(),
        dynamic: device.features.dynamic,
    };
    let outcomes = g.all(&mut result);
    result.checks = CHECKS
        .iter()
        .zip(outcomes)
        .map(|(name, outcome)| CheckOutcome { name, outcome })
        .collect();
    result
}

/// The guest's side of a run, and every delivery it must have taken.
struct Guest<'a> {
    h: &'a dyn Handler,
    nic: Option<&'a Nic>,
    vectors: u16,
    /// Deliveries that must have been counted, per (vCPU, IDT vector).
    expected: BTreeMap<(u8, u8), u64>,
    /// The device's PCI address, as the host names its IRQs.
    bdf: String,
    /// VFIO lets vectors be added while MSI-X is enabled (no NORESIZE).
    dynamic: bool,
}

fn target(v: u16) -> (u8, u8) {
    ((v % u16::from(VCPUS)) as u8, VECTOR_BASE + v as u8)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Guest<'_> {
    fn all(&mut self, result: &mut RunResult) -> Vec<Outcome> {
        let mut out = Vec::new();
        out.push(match self.h.source_enabled() {
            Some(_) => outcome(self.host_irqs_follow_unmasks()),
            None => Outcome::Skipped(
                "a peer handler wires the device's vectors its own way: host IRQs are checked for ours".into(),
            ),
        });
        match self.program_every_vector() {
            Ok(exits) => {
                result.program_exits = Some(exits);
                out.push(Outcome::Pass);
            }
            Err(e) => {
                out.push(Outcome::Fail(e));
                out.resize(
                    CHECKS.len(),
                    Outcome::Fail(format!("not run: {PROGRAM} failed")),
                );
                return out;
            }
        }
        match self.nic {
            Some(nic) => {
                out.push(outcome(self.deliver_each(nic)));
                out.push(outcome(self.masked_raise_each(nic)));
                out.push(outcome(self.message_change(nic)));
            }
            None => out.resize(out.len() + 3, Outcome::Skipped(NO_TRIGGER.into())),
        }
        out.push(match self.cycle_exits() {
            Ok(cost) => {
                result.cycle = Some(cost);
                Outcome::Pass
            }
            Err((cost, e)) => {
                result.cycle = cost;
                Outcome::Fail(e)
            }
        });
        out
    }

    /// The host holds an IRQ only for the vectors in use: MSI-X Enable wires
    /// one vector, and each unmask of a higher entry (with a valid message)
    /// adds up to it, while MSI-X stays enabled on a device with dynamic
    /// MSI-X. The host's own list (/proc/interrupts) must match the source's
    /// count after each step.
    fn host_irqs_follow_unmasks(&mut self) -> Result<(), String> {
        let h = self.h;
        let expect = |count: u16, when: &str| -> Result<(), String> {
            let listed = host_msix_vectors(&self.bdf)?;
            let wanted: Vec<u16> = (0..count).collect();
            let enabled = h.source_enabled();
            if listed != wanted || enabled != Some(count) {
                return Err(format!(
                    "{when}: host IRQs for vectors {listed:?}, source enabled {enabled:?}; \
                     expected vectors 0..{count}"
                ));
            }
            Ok(())
        };
        h.enable_msix().map_err(err)?;
        h.settle().map_err(err)?;
        expect(1, "after MSI-X Enable, nothing unmasked")?;
        let mut steps = vec![0u16];
        if self.vectors > 1 {
            steps.push(1);
        }
        if self.vectors > 2 {
            steps.push(self.vectors - 1);
        }
        for v in steps {
            let (vcpu, idt) = target(v);
            let mut p = Program::new();
            p.write(Width::W32, h.entry(v, 0), TestVm::msi_address(vcpu));
            p.write(Width::W32, h.entry(v, 4), 0);
            p.write(Width::W32, h.entry(v, 8), u64::from(idt));
            p.write(Width::W32, h.entry(v, 12), 0);
            h.vm().run(0, &p).map_err(err)?;
            h.settle().map_err(err)?;
            expect(v + 1, &format!("after the guest unmasked entry {v}"))?;
        }
        println!(
            "INFO {}: host IRQs followed the unmasked vectors up to {} ({})",
            self.bdf,
            self.vectors,
            if self.dynamic {
                "grown while MSI-X stayed enabled"
            } else {
                "NORESIZE: grown by disable and re-enable"
            }
        );
        self.verify("after the host-IRQ steps (nothing raised yet)")
    }

    /// Enables MSI-X (the VMM forwards the config write) and has the guest
    /// program every entry with its message and unmask it; returns the
    /// exits that took.
    fn program_every_vector(&mut self) -> Result<u64, String> {
        let h = self.h;
        h.enable_msix().map_err(err)?;
        let mut p = Program::new();
        for v in 0..self.vectors {
            let (vcpu, idt) = target(v);
            p.write(Width::W32, h.entry(v, 0), TestVm::msi_address(vcpu));
            p.write(Width::W32, h.entry(v, 4), 0);
            p.write(Width::W32, h.entry(v, 8), u64::from(idt));
            p.write(Width::W32, h.entry(v, 12), 0);
        }
        let exits = h.vm().exits();
        h.vm().run(0, &p).map_err(err)?;
        h.settle().map_err(err)?;
        let exits = h.vm().exits().since(&exits).mmio();
        for v in 0..self.vectors {
            h.check_wired(v)
                .map_err(|e| format!("entry {v} after the guest unmasked it: {e}"))?;
        }
        self.verify("after programming (nothing raised yet)")?;
        Ok(exits)
    }

    /// The guest's counters of every IDT vector on every vCPU equal the
    /// deliveries expected (the doorbell and the sentinel excepted).
    fn verify(&self, when: &str) -> Result<(), String> {
        let mut wrong = Vec::new();
        for vcpu in 0..VCPUS {
            for idt in 0x21..=0xFFu8 {
                if idt == DOORBELL_VECTOR || idt == SENTINEL_VECTOR || idt == 0xFF {
                    continue;
                }
                let got = self.h.vm().irq_count_on(vcpu, idt);
                let want = self.expected.get(&(vcpu, idt)).copied().unwrap_or(0);
                if got != want {
                    wrong.push(format!(
                        "vCPU {vcpu} IDT {idt:#x}: {got} taken, {want} expected"
                    ));
                }
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!("{when}: {}", wrong.join("; ")))
        }
    }

    /// Expects one more delivery on `to`, waits for it (bounded), proves
    /// with the sentinel that nothing else is on its way, and compares
    /// every counter.
    fn expect_delivery(&mut self, to: (u8, u8), what: &str) -> Result<(), String> {
        *self.expected.entry(to).or_default() += 1;
        let total: u64 = (0..VCPUS)
            .map(|c| self.expected.get(&(c, to.1)).copied().unwrap_or(0))
            .sum();
        self.h
            .vm()
            .wait_irq_count(to.1, total)
            .map_err(|e| format!("{what}: IDT {:#x} not taken: {e}", to.1))?;
        self.h.vm().sentinel_all().map_err(err)?;
        self.verify(what)
    }

    /// Each vector, raised by the NIC, is taken exactly once on its IDT
    /// vector and vCPU, with no exit to userspace on the way.
    fn deliver_each(&mut self, nic: &Nic) -> Result<(), String> {
        for v in 0..self.vectors {
            let exits = self.h.vm().exits();
            nic.raise(v).map_err(err)?;
            self.expect_delivery(target(v), &format!("raise of vector {v}"))?;
            let exits = self.h.vm().exits().since(&exits);
            if exits.mmio() + exits.io != 0 {
                return Err(format!(
                    "raise of vector {v}: {exits:?} on the delivery path, want none"
                ));
            }
        }
        Ok(())
    }

    /// Waits (bounded) until `v`'s raise is held (see [`Handler::held`]).
    fn held(&self, nic: &Nic, v: u16) -> Result<(), String> {
        let deadline = Instant::now() + LATCH_TIMEOUT;
        loop {
            if self.h.held(nic, v).map_err(err)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "vector {v}: raised while masked but not held within {LATCH_TIMEOUT:?} ({} shows nothing)",
                    self.h.held_where()
                ));
            }
            std::thread::yield_now();
        }
    }

    /// The guest masks `v` as Linux does (mask write, flush read); checks
    /// the handler masked it its way.
    fn guest_mask(&self, v: u16) -> Result<(), String> {
        let h = self.h;
        let mut p = Program::new();
        p.write(Width::W32, h.entry(v, 12), 1);
        p.read(Width::W32, h.entry(v, 0));
        h.vm().run(0, &p).map_err(err)?;
        h.settle().map_err(err)?;
        h.check_masked(v)
            .map_err(|e| format!("vector {v} masked by the guest: {e}"))
    }

    /// The guest reads the PBA qword holding `v`'s bit.
    fn guest_pba_bit(&self, v: u16) -> Result<bool, String> {
        let mut p = Program::new();
        let slot = p.read(Width::W64, self.h.pba_gpa() + u64::from(v / 64) * 8);
        let out = self.h.vm().run(0, &p).map_err(err)?;
        Ok(out.get(slot) & (1 << (v % 64)) != 0)
    }

    fn guest_write(&self, writes: &[(u64, u64)]) -> Result<(), String> {
        let mut p = Program::new();
        for &(addr, value) in writes {
            p.write(Width::W32, addr, value);
        }
        self.h.vm().run(0, &p).map_err(err)?;
        Ok(())
    }

    /// Masks `v`, has the NIC raise it and proves it was held, not
    /// delivered, and that the guest sees it pending.
    fn mask_and_raise(&self, nic: &Nic, v: u16) -> Result<(), String> {
        self.guest_mask(v)?;
        nic.raise(v).map_err(err)?;
        self.held(nic, v)?;
        self.h.vm().sentinel_all().map_err(err)?;
        self.verify(&format!("vector {v} raised while masked"))?;
        if !self.guest_pba_bit(v)? {
            return Err(format!(
                "vector {v} raised while masked: the guest reads its PBA bit 0"
            ));
        }
        Ok(())
    }

    /// After an unmask delivered `v`'s pending message: nothing is held
    /// any more, at the device, in the handler or for the guest.
    fn nothing_pending(&self, nic: &Nic, v: u16) -> Result<(), String> {
        if let Some(why) = self.h.still_pending(nic, v).map_err(err)? {
            return Err(format!("vector {v} after the unmask: {why}"));
        }
        if self.guest_pba_bit(v)? {
            return Err(format!(
                "vector {v} after the unmask: the guest reads its PBA bit set"
            ));
        }
        Ok(())
    }

    /// For each vector: the guest masks it; the NIC raises it; nothing is
    /// delivered and the guest reads its PBA bit set; the guest unmasks it
    /// and it is delivered exactly once.
    fn masked_raise_each(&mut self, nic: &Nic) -> Result<(), String> {
        for v in 0..self.vectors {
            self.mask_and_raise(nic, v)?;
            self.guest_write(&[(self.h.entry(v, 12), 0)])?;
            self.expect_delivery(target(v), &format!("unmask of pending vector {v}"))?;
            self.h.settle().map_err(err)?;
            self.nothing_pending(nic, v)?;
        }
        Ok(())
    }

    /// The last vector is raised while masked, the guest then points its
    /// message at another IDT vector on the other vCPU and unmasks it: the
    /// pending interrupt is delivered once, at the new place only; a later
    /// raise follows the new message too.
    fn message_change(&mut self, nic: &Nic) -> Result<(), String> {
        let v = self.vectors - 1;
        let (vcpu, _) = target(v);
        let moved = ((vcpu + 1) % VCPUS, MOVED_BASE + v as u8);
        self.mask_and_raise(nic, v)?;
        self.guest_write(&[
            (self.h.entry(v, 0), TestVm::msi_address(moved.0)),
            (self.h.entry(v, 8), u64::from(moved.1)),
        ])?;
        self.h.vm().sentinel_all().map_err(err)?;
        self.verify(&format!("vector {v}: message changed while masked"))?;
        self.guest_write(&[(self.h.entry(v, 12), 0)])?;
        self.expect_delivery(
            moved,
            &format!("unmask of vector {v} after its message changed"),
        )?;
        self.h.settle().map_err(err)?;
        self.nothing_pending(nic, v)?;
        nic.raise(v).map_err(err)?;
        self.expect_delivery(
            moved,
            &format!("raise of vector {v} after its message changed"),
        )
    }

    /// Linux mask cycles on entry 0 cost exactly the handler's exits each
    /// (the policy's for ours) and deliver nothing; entry 0 still delivers
    /// (when the NIC can raise it); the handler met no error.
    fn cycle_exits(&mut self) -> Result<CycleCost, (Option<CycleCost>, String)> {
        let cost = linux_cycles(self.h, CYCLE_BATCHES, CYCLES_PER_BATCH)
            .map_err(|e| (None, e.to_string()))?;
        let fail = |e: String| (Some(cost), e);
        let per = self.h.exits_per_cycle();
        if cost.exits != per * cost.cycles {
            return Err(fail(format!(
                "{} exits in {} Linux mask cycles, want exactly {per} per cycle",
                cost.exits, cost.cycles
            )));
        }
        self.h
            .vm()
            .sentinel_all()
            .map_err(|e| fail(e.to_string()))?;
        self.verify("after the mask cycles (nothing raised)")
            .map_err(fail)?;
        if let Some(nic) = self.nic {
            nic.raise(0).map_err(|e| fail(e.to_string()))?;
            self.expect_delivery(target(0), "raise of vector 0 after the mask cycles")
                .map_err(fail)?;
        }
        self.h.errors().map_err(fail)?;
        Ok(cost)
    }
}

fn outcome(r: Result<(), String>) -> Outcome {
    match r {
        Ok(()) => Outcome::Pass,
        Err(e) => Outcome::Fail(e),
    }
}
