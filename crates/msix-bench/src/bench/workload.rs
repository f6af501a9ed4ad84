//! The workloads every row runs, through one [`Target`] interface so that
//! each row (our policies, the peer models, the floors) executes the very
//! same guest programs.

use std::time::Instant;

use msix_hypervisor::IoctlCounts;
use serde::Serialize;
use testvm::{Program, TestVm, Width};
use vfio_vectors::software::SoftwareSource;

use crate::Error;
use msix_rig::sys::process_cpu_ns;

/// IDT vector entry 0 is programmed to (vCPU 0).
pub const VECTOR: u8 = 0x40;
/// IDT vector the bring-up programs every entry with.
pub const BRING_UP_VECTOR: u8 = 0x41;
/// IDT vector of the placeholder message Linux writes for an interrupt
/// whose vector is only reserved (x86 reservation mode) until it is
/// requested; never fired here.
pub const RESERVED_VECTOR: u8 = 0x30;
/// Message Control: MSI-X Enable.
pub const MSIX_ENABLE: u16 = 0x8000;
/// Message Control: Function Mask.
pub const FUNCTION_MASK: u16 = 0x4000;

/// Hypervisor and device calls by kind: KVM ioctls, and the VFIO-like
/// `VFIO_DEVICE_SET_IRQS` calls a peer model makes (trigger re-points and
/// MSI-X enables of the device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// KVM_SET_GSI_ROUTING (route commits).
    pub set_gsi_routing: u64,
    /// KVM_IRQFD assign.
    pub irqfd_assign: u64,
    /// KVM_IRQFD deassign.
    pub irqfd_deassign: u64,
    /// KVM_IOEVENTFD assign and deassign.
    pub ioeventfd: u64,
    /// KVM_SET_USER_MEMORY_REGION.
    pub set_user_memory_region: u64,
    /// KVM_SIGNAL_MSI.
    pub signal_msi: u64,
    /// VFIO_DEVICE_SET_IRQS-like calls (peer models only).
    pub set_irqs: u64,
}

impl CallCounts {
    /// From the KVM counters and a SET_IRQS count.
    pub fn new(kvm: IoctlCounts, set_irqs: u64) -> CallCounts {
        CallCounts {
            set_gsi_routing: kvm.set_gsi_routing,
            irqfd_assign: kvm.irqfd_assign,
            irqfd_deassign: kvm.irqfd_deassign,
            ioeventfd: kvm.ioeventfd_assign + kvm.ioeventfd_deassign,
            set_user_memory_region: kvm.set_user_memory_region,
            signal_msi: kvm.signal_msi,
            set_irqs,
        }
    }

    /// The calls made between `earlier` and `self`.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts {
            set_gsi_routing: self.set_gsi_routing - earlier.set_gsi_routing,
            irqfd_assign: self.irqfd_assign - earlier.irqfd_assign,
            irqfd_deassign: self.irqfd_deassign - earlier.irqfd_deassign,
            ioeventfd: self.ioeventfd - earlier.ioeventfd,
            set_user_memory_region: self.set_user_memory_region - earlier.set_user_memory_region,
            signal_msi: self.signal_msi - earlier.signal_msi,
            set_irqs: self.set_irqs - earlier.set_irqs,
        }
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &CallCounts) {
        self.set_gsi_routing += other.set_gsi_routing;
        self.irqfd_assign += other.irqfd_assign;
        self.irqfd_deassign += other.irqfd_deassign;
        self.ioeventfd += other.ioeventfd;
        self.set_user_memory_region += other.set_user_memory_region;
        self.signal_msi += other.signal_msi;
        self.set_irqs += other.set_irqs;
    }

    /// KVM_IRQFD assigns and deassigns.
    pub fn irqfd(&self) -> u64 {
        self.irqfd_assign + self.irqfd_deassign
    }

    /// Every KVM ioctl.
    pub fn kvm(&self) -> u64 {
        self.set_gsi_routing
            + self.irqfd()
            + self.ioeventfd
            + self.set_user_memory_region
            + self.signal_msi
    }
}

/// A guest with one MSI-X device, however its table is handled.
pub trait Target {
    /// The guest.
    fn vm(&self) -> &TestVm;
    /// The device's interrupt source.
    fn source(&self) -> &SoftwareSource;
    /// The calls made so far for this device.
    fn calls(&self) -> CallCounts;
    /// Guest physical address of entry `e`'s dword at `offset`.
    fn entry(&self, e: u16, offset: u64) -> u64;
    /// Guest physical address of the PBA.
    fn pba(&self) -> u64;
    /// The VMM forwards a config-space write of Message Control.
    fn write_message_control(&self, value: u16) -> Result<(), Error>;
    /// Finishes host-side work the guest's accesses or the source's fires
    /// left behind (our absorbed unmasks; a peer's userspace handler of a
    /// masked vector's eventfd), and reports an error a device met meanwhile.
    fn settle(&self) -> Result<(), Error>;
    /// A batch of measured cycles starts (`on`) or ends: a row whose
    /// servicer is kept awake only while measured hears it here.
    fn measuring(&self, _on: bool) {}
    /// Ours: the mechanism the accelerator placed the table under (what
    /// `auto` chose); None for peers and floors.
    fn policy_in_force(&self) -> Option<msix_accel::Policy> {
        None
    }
    /// Under `auto`: the medians its last measurement weighed, wake round
    /// trip and in-thread apply, ns.
    fn auto_medians(&self) -> Option<[u64; 2]> {
        None
    }
    /// Unmasks its servicer saw on the vCPU thread's CPU and on another,
    /// so far, where the row counts them (the floors with a servicer).
    fn servicer_placement(&self) -> Option<[u64; 2]> {
        None
    }
}

/// Enables MSI-X and has the guest program entry 0 for [`VECTOR`] on vCPU 0
/// and unmask it.
pub fn bring_up_entry0(t: &dyn Target) -> Result<(), Error> {
    t.write_message_control(MSIX_ENABLE)?;
    let mut p = Program::new();
    p.write(Width::W32, t.entry(0, 0), TestVm::msi_address(0));
    p.write(Width::W32, t.entry(0, 4), 0);
    p.write(Width::W32, t.entry(0, 8), u64::from(VECTOR));
    p.write(Width::W32, t.entry(0, 12), 0);
    t.vm().run(0, &p)?;
    t.settle()
}

/// The Linux mask cycle on entry 0: mask, flush read, unmask
/// (`pci_msix_mask`'s write and read-back of the table, then
/// `pci_msix_unmask`).
fn linux_cycle(p: &mut Program, t: &dyn Target) {
    p.write(Width::W32, t.entry(0, 12), 1);
    p.read(Width::W32, t.entry(0, 0));
    p.write(Width::W32, t.entry(0, 12), 0);
}

/// What Linux mask cycles cost.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CycleResult {
    /// Cycles run.
    pub cycles: u64,
    /// MMIO exits to userspace during the cycles.
    pub exits: u64,
    /// Calls made for the device during the cycles.
    pub calls: CallCounts,
    /// Guest TSC time of the cycles, in nanoseconds.
    pub guest_ns: u64,
    /// Process CPU time (user + system, all threads) during the cycles.
    pub host_cpu_ns: u64,
}

impl CycleResult {
    /// Adds another batch's counts and times.
    pub fn add(&mut self, other: &CycleResult) {
        self.cycles += other.cycles;
        self.exits += other.exits;
        self.calls.add(&other.calls);
        self.guest_ns += other.guest_ns;
        self.host_cpu_ns += other.host_cpu_ns;
    }
}

/// Ten cycles whose cost is not measured: the first accesses of a program
/// (page tables, code) and of a handler are not what a row costs.
pub fn warm_up(t: &dyn Target) -> Result<(), Error> {
    let mut warm = Program::new();
    warm.repeat(10, |p| linux_cycle(p, t));
    t.vm().run(0, &warm)?;
    t.settle()
}

/// One guest program of `cycles` Linux mask cycles on entry 0: exits and
/// calls counted exactly, guest time between two TSC stamps around the
/// loop, process CPU time around the run.
pub fn cycle_batch(t: &dyn Target, cycles: u64) -> Result<CycleResult, Error> {
    let mut p = Program::new();
    let t0 = p.timestamp();
    p.repeat(cycles, |p| linux_cycle(p, t));
    let t1 = p.timestamp();
    let exits = t.vm().exits();
    let calls = t.calls();
    t.measuring(true);
    let cpu = process_cpu_ns();
    let wall = Instant::now();
    let out = t.vm().run(0, &p);
    t.measuring(false);
    let out = out?;
    t.settle()?;
    let wall_ns = wall.elapsed().as_nanos() as u64;
    let cpu_ns = process_cpu_ns().saturating_sub(cpu);
    let calls = t.calls().since(&calls);
    let exits = t.vm().exits().since(&exits).mmio();
    let tsc_khz = u64::from(t.vm().tsc_khz());
    let ticks = out.get(t1).saturating_sub(out.get(t0));
    let guest_ns = if tsc_khz > 0 {
        (u128::from(ticks) * 1_000_000 / u128::from(tsc_khz)) as u64
    } else {
        wall_ns
    };
    Ok(CycleResult {
        cycles,
        exits,
        calls,
        guest_ns,
        host_cpu_ns: cpu_ns,
    })
}

/// Batches a standalone measurement ([`cycles`]) is split into.
pub const CYCLE_BATCHES: u64 = 5;

/// A standalone measurement of `cycles` Linux mask cycles on entry 0 after
/// a warm-up, in [`CYCLE_BATCHES`] guest programs; counts and times are the
/// totals. (The bench itself measures in interleaved rounds, see
/// [`super::rounds`]; `msix-bench stress` uses this.)
pub fn cycles(t: &dyn Target, cycles: u64) -> Result<CycleResult, Error> {
    warm_up(t)?;
    let batches = CYCLE_BATCHES.min(cycles);
    let mut total = CycleResult::default();
    for b in 0..batches {
        let n = cycles / batches + u64::from(b < cycles % batches);
        total.add(&cycle_batch(t, n)?);
    }
    Ok(total)
}

/// What a storm on vector 0 did while the guest cycled its mask.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct StormResult {
    /// Mask cycles the guest completed during the storm.
    pub cycles: u64,
    /// Fires of the source.
    pub fires: u64,
    /// Interrupts the guest took on the vector.
    pub deliveries: u64,
    /// Interrupts taken while the guest believed the vector masked that were
    /// raised after the mask took effect: violations, must be 0.
    pub delivered_while_masked: u64,
    /// Interrupts taken inside the masked window that the vCPU's local APIC
    /// already held when the mask write returned: raised before the mask
    /// took effect and injected late by the host (not a violation; see
    /// docs/fast-path.md).
    pub late_before_mask: u64,
    /// 1 when a fire after the storm (vector unmasked) was not delivered
    /// before the watchdog, else 0.
    pub lost: u64,
}

/// Mask cycles per guest program of the storm.
pub const STORM_CHUNK: u64 = 25;

/// Fires vector 0 as fast as the source can while the guest runs `chunks`
/// programs of [`STORM_CHUNK`] mask cycles on entry 0, with its masked
/// window open between the flush read and the unmask. Bounded by cycles,
/// not by time.
pub fn storm(t: &dyn Target, chunks: u64, spin: u64) -> Result<StormResult, Error> {
    const CHUNK: u64 = STORM_CHUNK;
    let mut p = Program::new();
    p.repeat(CHUNK, |p| {
        p.write(Width::W32, t.entry(0, 12), 1);
        p.read(Width::W32, t.entry(0, 0));
        p.masked_window(VECTOR, true);
        p.spin(spin);
        p.masked_window(VECTOR, false);
        p.write(Width::W32, t.entry(0, 12), 0);
        p.spin(spin);
    });
    t.vm().watch_masked_window(VECTOR);
    let irqs = t.vm().irq_count(VECTOR);
    let window = t.vm().window_count(0, VECTOR);
    let late = t.vm().late_count(0, VECTOR);
    let handle = msix_rig::storm::storm(t.source(), vec![0], None)?;
    let mut cycles = 0;
    let run = (|| {
        for _ in 0..chunks {
            t.vm().run(0, &p)?;
            cycles += CHUNK;
        }
        Ok::<(), Error>(())
    })();
    let report = handle.stop();
    run?;
    if let Some(e) = report.error {
        return Err(e.into());
    }
    t.settle()?;
    // Everything the local APIC holds is taken before the sentinel.
    t.vm().sentinel(0)?;
    let deliveries = t.vm().irq_count(VECTOR) - irqs;
    Ok(StormResult {
        cycles,
        fires: report.total,
        deliveries,
        delivered_while_masked: t.vm().window_count(0, VECTOR) - window,
        late_before_mask: t.vm().late_count(0, VECTOR) - late,
        lost: u64::from(!fire_is_delivered(t)?),
    })
}

/// Fires vector 0 once (entry 0 unmasked) and says whether the guest took
/// it before the watchdog.
fn fire_is_delivered(t: &dyn Target) -> Result<bool, Error> {
    t.settle()?;
    let before = t.vm().irq_count(VECTOR);
    t.source().fire(0)?;
    match t.vm().wait_irq_count(VECTOR, before + 1) {
        Ok(_) => Ok(true),
        Err(testvm::Error::Watchdog { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Pending semantics: three fires while entry 0 is masked, a PBA read,
/// then an unmask.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PendingResult {
    /// Interrupts taken while the entry was masked (exact semantics: 0).
    pub delivered_while_masked: u64,
    /// Whether the guest's PBA read showed entry 0 pending after the fires
    /// (exact semantics: yes, unless they were delivered).
    pub pba_pending: bool,
    /// Interrupts taken after the unmask (exact semantics: 1).
    pub delivered_at_unmask: u64,
}

fn mask_program(t: &dyn Target) -> Program {
    let mut mask = Program::new();
    mask.write(Width::W32, t.entry(0, 12), 1);
    mask.read(Width::W32, t.entry(0, 0));
    mask
}

/// Masks entry 0, fires it three times, reads the PBA, unmasks, and counts.
/// Sentinels rather than waits prove what was not delivered.
pub fn pending(t: &dyn Target) -> Result<PendingResult, Error> {
    let mut unmask = Program::new();
    unmask.write(Width::W32, t.entry(0, 12), 0);
    let mut pba = Program::new();
    let bits = pba.read(Width::W64, t.pba());

    t.settle()?;
    t.vm().run(0, &mask_program(t))?;
    // What was raised before the mask took effect (an earlier phase's
    // interrupt that the host injects late) is taken before the sentinel
    // and not counted: only the fires below must be held.
    t.vm().sentinel(0)?;
    let before = t.vm().irq_count(VECTOR);
    t.source().fire_n(0, 3)?;
    // A peer's userspace handler has seen the fires (QEMU's main loop,
    // crosvm's worker), as it would have long before a guest looks.
    t.settle()?;
    t.vm().sentinel(0)?;
    let masked = t.vm().irq_count(VECTOR);
    let pba_pending = t.vm().run(0, &pba)?.get(bits) & 1 == 1;
    t.vm().run(0, &unmask)?;
    t.settle()?;
    if masked == before {
        // Held while masked, so the unmask owes one delivery: wait for it
        // (a KVM irqfd may inject it from a workqueue, after a sentinel).
        t.vm().wait_irq_count(VECTOR, masked + 1)?;
    }
    // Anything more would be taken before the sentinel.
    t.vm().sentinel(0)?;
    Ok(PendingResult {
        delivered_while_masked: masked - before,
        pba_pending,
        delivered_at_unmask: t.vm().irq_count(VECTOR) - masked,
    })
}

/// One delivery latency, in nanoseconds.
pub type Latency = i64;

/// Source signal to guest handler, entry 0 unmasked, the guest idle (its
/// vCPU halted, as one waiting for a NIC's interrupt): the host clock just
/// before the fire against the handler's TSC through `calibration`.
pub fn unmasked_latency(
    t: &dyn Target,
    calibration: &msix_rig::clock::Calibration,
) -> Result<Latency, Error> {
    let before = t.vm().irq_count(VECTOR);
    let fired = msix_rig::clock::monotonic_ns();
    t.source().fire(0)?;
    t.vm().wait_irq_count(VECTOR, before + 1)?;
    let at = calibration.host_ns(t.vm().last_irq_tsc(0, VECTOR));
    t.settle()?;
    Ok((at - i128::from(fired)) as Latency)
}

/// The pending delivery at unmask: entry 0 masked, one fire held, then the
/// guest's unmask write; from the guest's TSC stamp just before that write
/// to its handler (guest clock only). `None` when the fire was delivered
/// while masked (nothing was pending; see [`pending`]).
pub fn pending_latency(t: &dyn Target) -> Result<Option<Latency>, Error> {
    t.settle()?;
    t.vm().run(0, &mask_program(t))?;
    t.vm().sentinel(0)?;
    let before = t.vm().irq_count(VECTOR);
    t.source().fire(0)?;
    t.settle()?;
    t.vm().sentinel(0)?;
    let mut unmask = Program::new();
    let stamp = unmask.timestamp();
    unmask.write(Width::W32, t.entry(0, 12), 0);
    if t.vm().irq_count(VECTOR) > before {
        t.vm().run(0, &unmask)?;
        t.settle()?;
        return Ok(None);
    }
    let out = t.vm().run(0, &unmask)?;
    t.vm().wait_irq_count(VECTOR, before + 1)?;
    let ticks = i128::from(t.vm().last_irq_tsc(0, VECTOR)) - i128::from(out.get(stamp));
    t.settle()?;
    Ok(Some(
        msix_rig::clock::ticks_to_ns(ticks, t.vm().tsc_khz()) as Latency
    ))
}

/// The read-back window of an unmask: entry 0 masked (and flushed), then
/// the guest's unmask write followed by reads of its Vector Control until
/// the mask bit reads 0; from the guest's TSC stamp just before the write
/// to the one after that read (guest clock only). Under `fast` the unmask
/// is absorbed and the shadow shows it once the servicer (or the next exit)
/// has seen it: this is that window. Under `strict`, `trap` and the peers
/// the write exits and the first read already sees it.
pub fn readback_latency(t: &dyn Target) -> Result<Latency, Error> {
    t.settle()?;
    t.vm().run(0, &mask_program(t))?;
    let vector_control = t.entry(0, 12);
    let mut unmask = Program::new();
    let start = unmask.timestamp();
    unmask.write(Width::W32, vector_control, 0);
    unmask.poll_until(Width::W32, vector_control, 1, 0);
    let end = unmask.timestamp();
    let out = t.vm().run(0, &unmask)?;
    t.settle()?;
    let ticks = i128::from(out.get(end)) - i128::from(out.get(start));
    Ok(msix_rig::clock::ticks_to_ns(ticks, t.vm().tsc_khz()) as Latency)
}

/// The order in which Linux programs and unmasks a device's vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BringUpOrder {
    /// Early activation (the final message written at setup for every
    /// vector, then every vector unmasked as its interrupt is requested).
    Early,
    /// x86 vector reservation (a placeholder message at setup; when an
    /// interrupt is requested its vector is assigned, the message rewritten
    /// under mask, and the vector unmasked, one vector after another).
    Reservation,
}

impl BringUpOrder {
    /// Both orders.
    pub const ALL: [BringUpOrder; 2] = [BringUpOrder::Early, BringUpOrder::Reservation];

    /// `early` or `reservation`.
    pub fn name(self) -> &'static str {
        match self {
            BringUpOrder::Early => "early",
            BringUpOrder::Reservation => "reservation",
        }
    }
}

/// What a Function Mask set and clear cost once every entry was live.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct FunctionMaskResult {
    /// The calls made.
    pub calls: CallCounts,
    /// Wall time of the two writes and the host-side work they left, ms.
    pub millis: f64,
}

/// What bringing up `vectors` entries in one order cost.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BringUpResult {
    /// Linux's order.
    pub order: BringUpOrder,
    /// Table size (every entry programmed).
    pub vectors: u16,
    /// KVM_SET_GSI_ROUTING calls.
    pub route_commits: u64,
    /// KVM_IRQFD assigns and deassigns.
    pub irqfd_ioctls: u64,
    /// Every call, by kind.
    pub calls: CallCounts,
    /// All KVM ioctls for the device (as `calls.kvm()`).
    pub ioctls: u64,
    /// MMIO exits.
    pub exits: u64,
    /// Wall time from the first Message Control write to the end of the
    /// host-side work, in milliseconds.
    pub millis: f64,
    /// Function Mask set and cleared afterwards, every entry live.
    pub function_mask: FunctionMaskResult,
}

fn write_message(p: &mut Program, t: &dyn Target, e: u16, vector: u8) {
    p.write(Width::W32, t.entry(e, 0), TestVm::msi_address(0));
    p.write(Width::W32, t.entry(e, 4), 0);
    p.write(Width::W32, t.entry(e, 8), u64::from(vector));
    // __pci_write_msi_msg reads Message Data back to flush the writes.
    p.read(Width::W32, t.entry(e, 8));
}

/// Linux brings up every entry of a `vectors`-entry table in `order`, as
/// `msix_capability_init` and `request_irq` do: Message Control with MSI-X
/// Enable and Function Mask; per entry a read of Vector Control and the
/// message written (with a flush read); every entry masked; Function Mask
/// cleared; then the entries unmasked one by one (early activation) or, in
/// reservation order, each entry's message rewritten with its assigned
/// vector and the entry unmasked. Then a Function Mask set and clear is
/// measured apart, and three entries are fired to prove the table live.
pub fn bring_up(t: &dyn Target, vectors: u16, order: BringUpOrder) -> Result<BringUpResult, Error> {
    let setup_vector = match order {
        BringUpOrder::Early => BRING_UP_VECTOR,
        BringUpOrder::Reservation => RESERVED_VECTOR,
    };
    let mut setup = Program::new();
    for e in 0..vectors {
        setup.read(Width::W32, t.entry(e, 12));
        write_message(&mut setup, t, e, setup_vector);
    }
    for e in 0..vectors {
        setup.write(Width::W32, t.entry(e, 12), 1);
    }
    let mut activate = Program::new();
    for e in 0..vectors {
        if order == BringUpOrder::Reservation {
            write_message(&mut activate, t, e, BRING_UP_VECTOR);
        }
        activate.write(Width::W32, t.entry(e, 12), 0);
    }

    t.settle()?;
    let exits = t.vm().exits();
    let calls = t.calls();
    let wall = Instant::now();
    t.write_message_control(MSIX_ENABLE | FUNCTION_MASK)?;
    t.vm().run(0, &setup)?;
    t.write_message_control(MSIX_ENABLE)?;
    t.vm().run(0, &activate)?;
    t.settle()?;
    let millis = wall.elapsed().as_secs_f64() * 1e3;
    let calls = t.calls().since(&calls);
    let exits = t.vm().exits().since(&exits).mmio();

    let before = t.calls();
    let wall = Instant::now();
    t.write_message_control(MSIX_ENABLE | FUNCTION_MASK)?;
    t.settle()?;
    t.write_message_control(MSIX_ENABLE)?;
    t.settle()?;
    let function_mask = FunctionMaskResult {
        millis: wall.elapsed().as_secs_f64() * 1e3,
        calls: t.calls().since(&before),
    };

    for e in [0, vectors / 2, vectors - 1] {
        let seen = t.vm().irq_count(BRING_UP_VECTOR);
        t.source().fire(e)?;
        t.vm().wait_irq_count(BRING_UP_VECTOR, seen + 1)?;
    }
    Ok(BringUpResult {
        order,
        vectors,
        route_commits: calls.set_gsi_routing,
        irqfd_ioctls: calls.irqfd(),
        calls,
        ioctls: calls.kvm(),
        exits,
        millis,
        function_mask,
    })
}
