//! The Linux mask cycle on a real device: the guest masks entry 0, reads
//! the table back (the flush read) and unmasks it, as Linux's
//! `pci_msi_mask_irq` / `pci_msi_unmask_irq` do. Measured the same way for
//! our accelerator and for the peer handlers, in the same guest program.

use msix_hypervisor::IoctlCounts;
use serde::Serialize;
use testvm::{Program, TestVm, Width};

use crate::Error;
use msix_rig::sys::process_cpu_ns;

/// A guest with one device on a real VFIO source, however its MSI-X table
/// is handled.
pub trait CycleTarget {
    /// The guest.
    fn vm(&self) -> &TestVm;
    /// Guest physical address of entry `e`'s dword at `offset`.
    fn entry(&self, e: u16, offset: u64) -> u64;
    /// The work done for the device so far.
    fn work(&self) -> Work;
    /// Finishes host-side work the guest's accesses left behind and
    /// reports an error the handler met meanwhile.
    fn settle(&self) -> Result<(), Error>;
}

/// Host work for one device: KVM ioctls by kind and VFIO work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Work {
    /// KVM_SET_GSI_ROUTING.
    pub set_gsi_routing: u64,
    /// KVM_IRQFD, assign and deassign.
    pub irqfd: u64,
    /// KVM_SIGNAL_MSI.
    pub signal_msi: u64,
    /// Other KVM ioctls (ioeventfds, memslots).
    pub other_kvm: u64,
    /// VFIO_DEVICE_SET_IRQS (for our source: calls that issue at least one).
    pub vfio_set_irqs: u64,
    /// 32-bit writes to the physical table's Vector Control (source masks
    /// and unmasks).
    pub physical_mask_writes: u64,
}

impl Work {
    /// KVM ioctls of `counts`, with the VFIO work given.
    pub fn from_kvm(counts: IoctlCounts, vfio_set_irqs: u64, physical_mask_writes: u64) -> Work {
        Work {
            set_gsi_routing: counts.set_gsi_routing,
            irqfd: counts.irqfd_assign + counts.irqfd_deassign,
            signal_msi: counts.signal_msi,
            other_kvm: counts.ioeventfd_assign
                + counts.ioeventfd_deassign
                + counts.set_user_memory_region,
            vfio_set_irqs,
            physical_mask_writes,
        }
    }

    /// The work done between `earlier` and `self`.
    pub fn since(&self, earlier: &Work) -> Work {
        Work {
            set_gsi_routing: self.set_gsi_routing - earlier.set_gsi_routing,
            irqfd: self.irqfd - earlier.irqfd,
            signal_msi: self.signal_msi - earlier.signal_msi,
            other_kvm: self.other_kvm - earlier.other_kvm,
            vfio_set_irqs: self.vfio_set_irqs - earlier.vfio_set_irqs,
            physical_mask_writes: self.physical_mask_writes - earlier.physical_mask_writes,
        }
    }

    /// Every ioctl, KVM and VFIO.
    pub fn ioctls(&self) -> u64 {
        self.set_gsi_routing + self.irqfd + self.signal_msi + self.other_kvm + self.vfio_set_irqs
    }
}

/// What Linux mask cycles on entry 0 cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CycleCost {
    /// Cycles run.
    pub cycles: u64,
    /// MMIO exits to userspace during the cycles.
    pub exits: u64,
    /// Host work during the cycles (and the servicing right after).
    pub work: Work,
    /// Guest TSC time per cycle, in nanoseconds, of the fastest batch (0
    /// when KVM gave no TSC frequency).
    pub guest_ns_per_cycle: f64,
    /// Process CPU time per cycle (user + system, every thread), in
    /// nanoseconds, of the fastest batch.
    pub host_cpu_ns_per_cycle: f64,
}

impl CycleCost {
    /// `count` per cycle.
    pub fn per_cycle(&self, count: u64) -> f64 {
        count as f64 / self.cycles.max(1) as f64
    }
}

/// Runs `batches` guest programs of `per_batch` Linux mask cycles on entry
/// 0, on vCPU 0. Counts are totals (exact); times are the fastest batch's,
/// because neighbours on a shared host only ever add time. Entry 0 must be
/// unmasked; it is again after.
pub fn linux_cycles(t: &dyn CycleTarget, batches: u64, per_batch: u64) -> Result<CycleCost, Error> {
    let mut p = Program::new();
    let t0 = p.timestamp();
    p.repeat(per_batch, |p| {
        p.write(Width::W32, t.entry(0, 12), 1);
        p.read(Width::W32, t.entry(0, 0));
        p.write(Width::W32, t.entry(0, 12), 0);
    });
    let t1 = p.timestamp();
    t.settle()?;
    let exits = t.vm().exits();
    let work = t.work();
    let tsc_khz = t.vm().tsc_khz();
    let mut best_guest = f64::MAX;
    let mut best_cpu = f64::MAX;
    for _ in 0..batches {
        let cpu = process_cpu_ns();
        let out = t.vm().run(0, &p)?;
        t.settle()?;
        let cpu = process_cpu_ns().saturating_sub(cpu);
        let ticks = out.get(t1).saturating_sub(out.get(t0));
        if tsc_khz > 0 && per_batch > 0 {
            best_guest = best_guest.min(ticks as f64 * 1e6 / f64::from(tsc_khz) / per_batch as f64);
        }
        best_cpu = best_cpu.min(cpu as f64 / per_batch.max(1) as f64);
    }
    let finite = |v: f64| if v == f64::MAX { 0.0 } else { v };
    Ok(CycleCost {
        cycles: batches * per_batch,
        exits: t.vm().exits().since(&exits).mmio(),
        work: t.work().since(&work),
        guest_ns_per_cycle: finite(best_guest),
        host_cpu_ns_per_cycle: finite(best_cpu),
    })
}
