//! [`CountingVm`]: counts every call of an [`MsixVm`], failed ones included.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::{MsiMessage, MsixVm, Op, Result, RoutingEntry};

/// Live call counters, one per [`Op`]; shared through `Arc` by whoever wants
/// to read them (a bench row, a test).
#[derive(Debug, Default)]
pub struct IoctlCounters {
    calls: [AtomicU64; Op::ALL.len()],
}

impl IoctlCounters {
    /// Counts one call of `op`.
    pub fn count(&self, op: Op) {
        self.calls[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls of `op` so far.
    pub fn get(&self, op: Op) -> u64 {
        self.calls[op as usize].load(Ordering::Relaxed)
    }

    /// A plain copy of the counters now.
    pub fn snapshot(&self) -> IoctlCounts {
        IoctlCounts {
            set_user_memory_region: self.get(Op::SetMemoryRegion),
            ioeventfd_assign: self.get(Op::IoeventfdAssign),
            ioeventfd_deassign: self.get(Op::IoeventfdDeassign),
            irqfd_assign: self.get(Op::IrqfdAssign),
            irqfd_deassign: self.get(Op::IrqfdDeassign),
            set_gsi_routing: self.get(Op::SetGsiRouting),
            signal_msi: self.get(Op::SignalMsi),
        }
    }
}

/// A snapshot of [`IoctlCounters`]: hypervisor calls by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IoctlCounts {
    /// KVM_SET_USER_MEMORY_REGION.
    pub set_user_memory_region: u64,
    /// KVM_IOEVENTFD (assign).
    pub ioeventfd_assign: u64,
    /// KVM_IOEVENTFD deassign.
    pub ioeventfd_deassign: u64,
    /// KVM_IRQFD (assign).
    pub irqfd_assign: u64,
    /// KVM_IRQFD deassign.
    pub irqfd_deassign: u64,
    /// KVM_SET_GSI_ROUTING.
    pub set_gsi_routing: u64,
    /// KVM_SIGNAL_MSI.
    pub signal_msi: u64,
}

impl IoctlCounts {
    /// The calls made between `earlier` and `self` (saturating at 0).
    pub fn since(&self, earlier: &IoctlCounts) -> IoctlCounts {
        IoctlCounts {
            set_user_memory_region: self
                .set_user_memory_region
                .saturating_sub(earlier.set_user_memory_region),
            ioeventfd_assign: self
                .ioeventfd_assign
                .saturating_sub(earlier.ioeventfd_assign),
            ioeventfd_deassign: self
                .ioeventfd_deassign
                .saturating_sub(earlier.ioeventfd_deassign),
            irqfd_assign: self.irqfd_assign.saturating_sub(earlier.irqfd_assign),
            irqfd_deassign: self.irqfd_deassign.saturating_sub(earlier.irqfd_deassign),
            set_gsi_routing: self.set_gsi_routing.saturating_sub(earlier.set_gsi_routing),
            signal_msi: self.signal_msi.saturating_sub(earlier.signal_msi),
        }
    }

    /// All calls counted.
    pub fn total(&self) -> u64 {
        self.set_user_memory_region
            + self.ioeventfd_assign
            + self.ioeventfd_deassign
            + self.irqfd_assign
            + self.irqfd_deassign
            + self.set_gsi_routing
            + self.signal_msi
    }
}

/// Wraps an [`MsixVm`] and counts each call (failed calls too) before
/// passing it on: how the bench and the tests learn an operation's exact
/// cost in hypervisor calls.
///
/// ```
/// use msix_hypervisor::{CountingVm, FaultyVm, MsixVm, Op};
/// # use msix_hypervisor::fake::FakeVm;
/// let vm = CountingVm::new(FakeVm::new(4096));
/// vm.set_gsi_routing(&[]).unwrap();
/// assert_eq!(vm.counts().set_gsi_routing, 1);
/// ```
#[derive(Debug)]
pub struct CountingVm<V> {
    inner: V,
    counters: Arc<IoctlCounters>,
}

impl<V: MsixVm> CountingVm<V> {
    /// Counts the calls made to `inner`.
    pub fn new(inner: V) -> Self {
        CountingVm {
            inner,
            counters: Arc::new(IoctlCounters::default()),
        }
    }

    /// The calls so far.
    pub fn counts(&self) -> IoctlCounts {
        self.counters.snapshot()
    }

    /// The live counters, to read after this wrapper is shared away.
    pub fn counters(&self) -> Arc<IoctlCounters> {
        self.counters.clone()
    }

    /// The wrapped VM.
    pub fn inner(&self) -> &V {
        &self.inner
    }
}

impl<V: MsixVm> MsixVm for CountingVm<V> {
    fn max_routes(&self) -> u32 {
        self.inner.max_routes()
    }

    unsafe fn set_readonly_memory(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()> {
        self.counters.count(Op::SetMemoryRegion);
        // SAFETY: the caller upholds the same contract.
        unsafe { self.inner.set_readonly_memory(slot, gpa, size, host_addr) }
    }

    fn register_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        self.counters.count(Op::IoeventfdAssign);
        self.inner.register_ioeventfd(fd, gpa, datamatch)
    }

    fn unregister_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        self.counters.count(Op::IoeventfdDeassign);
        self.inner.unregister_ioeventfd(fd, gpa, datamatch)
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.counters.count(Op::IrqfdAssign);
        self.inner.register_irqfd(fd, gsi)
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.counters.count(Op::IrqfdDeassign);
        self.inner.unregister_irqfd(fd, gsi)
    }

    fn set_gsi_routing(&self, entries: &[RoutingEntry]) -> Result<()> {
        self.counters.count(Op::SetGsiRouting);
        self.inner.set_gsi_routing(entries)
    }

    fn signal_msi(&self, message: &MsiMessage) -> Result<()> {
        self.counters.count(Op::SignalMsi);
        self.inner.signal_msi(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_gives_the_calls_made_in_between() {
        let counters = IoctlCounters::default();
        counters.count(Op::IrqfdAssign);
        let before = counters.snapshot();
        counters.count(Op::IrqfdAssign);
        counters.count(Op::SetGsiRouting);
        let delta = counters.snapshot().since(&before);
        assert_eq!(
            delta,
            IoctlCounts {
                set_gsi_routing: 1,
                irqfd_assign: 1,
                ..IoctlCounts::default()
            }
        );
        assert_eq!(delta.total(), 2);
        assert_eq!(before.since(&counters.snapshot()), IoctlCounts::default());
    }
}
