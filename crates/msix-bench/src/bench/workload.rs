//! The workloads every policy and peer model runs, through one [`Target`]
//! interface so that each row executes the very same guest programs.

use std::time::Instant;

use msix_hypervisor::IoctlCounts;
use serde::Serialize;
use testvm::{Program, TestVm, Width};
use vfio_vectors::software::SoftwareSource;

use super::peer::PeerRig;
use super::sys::process_cpu_ns;
use crate::rig::Rig;
use crate::Error;

/// IDT vector entry 0 is programmed to (vCPU 0).
pub const VECTOR: u8 = 0x40;
/// IDT vector the bring-up programs every entry with.
pub const BRING_UP_VECTOR: u8 = 0x41;
/// Message Control with MSI-X Enable set and Function Mask clear.
const MSIX_ENABLE: u16 = 0x8000;

/// A guest with one MSI-X device, however its table is handled.
pub trait Target {
    /// The guest.
    fn vm(&self) -> &TestVm;
    /// The device's interrupt source.
    fn source(&self) -> &SoftwareSource;
    /// KVM ioctls issued so far for this device.
    fn ioctls(&self) -> IoctlCounts;
    /// Guest physical address of entry `e`'s dword at `offset`.
    fn entry(&self, e: u16, offset: u64) -> u64;
    /// The VMM forwards a Message Control write enabling MSI-X.
    fn enable(&self) -> Result<(), Error>;
    /// Finishes host-side work the guest's accesses left behind (our
    /// absorbed unmasks), and reports an error a device met meanwhile.
    fn settle(&self) -> Result<(), Error>;
}

impl Target for Rig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn source(&self) -> &SoftwareSource {
        &self.source
    }
    fn ioctls(&self) -> IoctlCounts {
        Rig::ioctls(self)
    }
    fn entry(&self, e: u16, offset: u64) -> u64 {
        Rig::entry(self, e, offset)
    }
    fn enable(&self) -> Result<(), Error> {
        Ok(self.accel.write_message_control(MSIX_ENABLE)?)
    }
    fn settle(&self) -> Result<(), Error> {
        self.accel.service_fast_path();
        match self.take_events().first() {
            Some(e) => Err(Error::Check(format!("accelerator: {e}"))),
            None => Ok(()),
        }
    }
}

impl Target for PeerRig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn source(&self) -> &SoftwareSource {
        &self.source
    }
    fn ioctls(&self) -> IoctlCounts {
        self.hv.counts()
    }
    fn entry(&self, e: u16, offset: u64) -> u64 {
        self.table_gpa + u64::from(e) * 16 + offset
    }
    fn enable(&self) -> Result<(), Error> {
        self.device.write_message_control(MSIX_ENABLE)
    }
    fn settle(&self) -> Result<(), Error> {
        match self.device.last_error() {
            Some(e) => Err(Error::Check(format!("{}: {e}", self.device.model()))),
            None => Ok(()),
        }
    }
}

/// Enables MSI-X and has the guest program entry 0 for [`VECTOR`] on vCPU 0
/// and unmask it.
pub fn bring_up_entry0(t: &dyn Target) -> Result<(), Error> {
    t.enable()?;
    let mut p = Program::new();
    p.write(Width::W32, t.entry(0, 0), TestVm::msi_address(0));
    p.write(Width::W32, t.entry(0, 4), 0);
    p.write(Width::W32, t.entry(0, 8), u64::from(VECTOR));
    p.write(Width::W32, t.entry(0, 12), 0);
    t.vm().run(0, &p)?;
    t.settle()
}

/// The Linux mask cycle on entry 0: mask, flush read, unmask.
fn linux_cycle(p: &mut Program, t: &dyn Target) {
    p.write(Width::W32, t.entry(0, 12), 1);
    p.read(Width::W32, t.entry(0, 0));
    p.write(Width::W32, t.entry(0, 12), 0);
}

/// What `cycles` Linux mask cycles cost.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CycleResult {
    /// Cycles run.
    pub cycles: u64,
    /// MMIO exits to userspace during the cycles.
    pub exits: u64,
    /// KVM ioctls issued for the device during the cycles.
    pub ioctls: u64,
    /// Of which KVM_SET_GSI_ROUTING.
    pub set_gsi_routing: u64,
    /// Of which KVM_IRQFD assign and deassign.
    pub irqfd: u64,
    /// Guest TSC time of the loop, in nanoseconds (best batch, scaled).
    pub guest_ns: u64,
    /// Process CPU time (user + system, all threads) during the loop (best
    /// batch, scaled).
    pub host_cpu_ns: u64,
}

/// Batches the cycles are split into; times are the best batch's, counts
/// the sum of all (neighbours on a shared host only ever add time).
pub const CYCLE_BATCHES: u64 = 5;

/// Runs `cycles` Linux mask cycles on entry 0 (after a short warm-up), in
/// [`CYCLE_BATCHES`] guest programs: exits and ioctls are the totals, guest
/// and host time the fastest batch's per-cycle time scaled to `cycles`.
pub fn cycles(t: &dyn Target, cycles: u64) -> Result<CycleResult, Error> {
    let mut warm = Program::new();
    warm.repeat(10, |p| linux_cycle(p, t));
    t.vm().run(0, &warm)?;
    t.settle()?;

    let batches = CYCLE_BATCHES.min(cycles);
    let mut total = CycleResult::default();
    let mut best_guest = f64::MAX;
    let mut best_host = f64::MAX;
    for b in 0..batches {
        let n = cycles / batches + u64::from(b < cycles % batches);
        let batch = cycle_batch(t, n)?;
        total.cycles += batch.cycles;
        total.exits += batch.exits;
        total.ioctls += batch.ioctls;
        total.set_gsi_routing += batch.set_gsi_routing;
        total.irqfd += batch.irqfd;
        best_guest = best_guest.min(batch.guest_ns as f64 / n as f64);
        best_host = best_host.min(batch.host_cpu_ns as f64 / n as f64);
    }
    total.guest_ns = (best_guest * cycles as f64) as u64;
    total.host_cpu_ns = (best_host * cycles as f64) as u64;
    Ok(total)
}

fn cycle_batch(t: &dyn Target, cycles: u64) -> Result<CycleResult, Error> {
    let mut p = Program::new();
    let t0 = p.timestamp();
    p.repeat(cycles, |p| linux_cycle(p, t));
    let t1 = p.timestamp();
    let exits = t.vm().exits();
    let ioctls = t.ioctls();
    let cpu = process_cpu_ns();
    let wall = Instant::now();
    let out = t.vm().run(0, &p)?;
    t.settle()?;
    let wall_ns = wall.elapsed().as_nanos() as u64;
    let cpu_ns = process_cpu_ns().saturating_sub(cpu);
    let ioctls = t.ioctls().since(&ioctls);
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
        ioctls: ioctls.total(),
        set_gsi_routing: ioctls.set_gsi_routing,
        irqfd: ioctls.irqfd_assign + ioctls.irqfd_deassign,
        guest_ns,
        host_cpu_ns: cpu_ns,
    })
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
    /// Deliveries per second of storm.
    pub deliveries_per_sec: f64,
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
    let handle = crate::storm::storm(t.source(), vec![0], None)?;
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
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    Ok(StormResult {
        cycles,
        fires: report.total,
        deliveries,
        deliveries_per_sec: deliveries as f64 / secs,
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

/// Pending semantics: three fires while entry 0 is masked, then an unmask.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PendingResult {
    /// Interrupts taken while the entry was masked (exact semantics: 0).
    pub delivered_while_masked: u64,
    /// Interrupts taken after the unmask (exact semantics: 1).
    pub delivered_at_unmask: u64,
}

/// Masks entry 0, fires it three times, unmasks, and counts. Sentinels
/// rather than waits prove what was not delivered.
pub fn pending(t: &dyn Target) -> Result<PendingResult, Error> {
    let mut mask = Program::new();
    mask.write(Width::W32, t.entry(0, 12), 1);
    mask.read(Width::W32, t.entry(0, 0));
    let mut unmask = Program::new();
    unmask.write(Width::W32, t.entry(0, 12), 0);

    t.settle()?;
    t.vm().run(0, &mask)?;
    // What was raised before the mask took effect (an earlier phase's
    // interrupt that the host injects late) is taken before the sentinel
    // and not counted: only the fires below must be held.
    t.vm().sentinel(0)?;
    let before = t.vm().irq_count(VECTOR);
    t.source().fire_n(0, 3)?;
    t.vm().sentinel(0)?;
    let masked = t.vm().irq_count(VECTOR);
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
        delivered_at_unmask: t.vm().irq_count(VECTOR) - masked,
    })
}

/// What programming and unmasking `vectors` entries cost.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct BringUpResult {
    /// Table size (every entry programmed).
    pub vectors: u16,
    /// KVM_SET_GSI_ROUTING calls.
    pub set_gsi_routing: u64,
    /// All KVM ioctls for the device.
    pub ioctls: u64,
    /// MMIO exits.
    pub exits: u64,
    /// Wall time from the first write to the last host-side action, in
    /// milliseconds.
    pub wall_ms: f64,
}

/// The guest programs and unmasks every entry Linux-style (address low,
/// address high, data, then Vector Control 0), MSI-X already enabled.
pub fn bring_up(t: &dyn Target, vectors: u16) -> Result<BringUpResult, Error> {
    t.enable()?;
    t.settle()?;
    let mut p = Program::new();
    for e in 0..vectors {
        p.write(Width::W32, t.entry(e, 0), TestVm::msi_address(0));
        p.write(Width::W32, t.entry(e, 4), 0);
        p.write(Width::W32, t.entry(e, 8), u64::from(BRING_UP_VECTOR));
        p.write(Width::W32, t.entry(e, 12), 0);
    }
    let exits = t.vm().exits();
    let ioctls = t.ioctls();
    let wall = Instant::now();
    t.vm().run(0, &p)?;
    t.settle()?;
    let wall_ms = wall.elapsed().as_secs_f64() * 1e3;
    let ioctls = t.ioctls().since(&ioctls);
    Ok(BringUpResult {
        vectors,
        set_gsi_routing: ioctls.set_gsi_routing,
        ioctls: ioctls.total(),
        exits: t.vm().exits().since(&exits).mmio(),
        wall_ms,
    })
}
