//! Counters of the KVM ioctls issued for routing, irqfds, ioeventfds and memslots.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of every KVM ioctl this crate (and `kvm-msix`, which reuses
/// them) issues, failed calls included. Cheap atomics, shared through `Arc`.
#[derive(Debug, Default)]
pub struct IoctlCounters {
    /// KVM_SET_GSI_ROUTING.
    pub set_gsi_routing: AtomicU64,
    /// KVM_IRQFD (assign).
    pub irqfd_assign: AtomicU64,
    /// KVM_IRQFD with KVM_IRQFD_FLAG_DEASSIGN.
    pub irqfd_deassign: AtomicU64,
    /// KVM_IOEVENTFD (assign).
    pub ioeventfd_assign: AtomicU64,
    /// KVM_IOEVENTFD with KVM_IOEVENTFD_FLAG_DEASSIGN.
    pub ioeventfd_deassign: AtomicU64,
    /// KVM_SET_USER_MEMORY_REGION.
    pub set_user_memory_region: AtomicU64,
    /// KVM_SIGNAL_MSI.
    pub signal_msi: AtomicU64,
}

impl IoctlCounters {
    /// A plain copy of the counters now.
    pub fn snapshot(&self) -> IoctlCounts {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        IoctlCounts {
            set_gsi_routing: load(&self.set_gsi_routing),
            irqfd_assign: load(&self.irqfd_assign),
            irqfd_deassign: load(&self.irqfd_deassign),
            ioeventfd_assign: load(&self.ioeventfd_assign),
            ioeventfd_deassign: load(&self.ioeventfd_deassign),
            set_user_memory_region: load(&self.set_user_memory_region),
            signal_msi: load(&self.signal_msi),
        }
    }

    /// Counts one ioctl in `counter` (one of this struct's fields).
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of [`IoctlCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoctlCounts {
    /// KVM_SET_GSI_ROUTING.
    pub set_gsi_routing: u64,
    /// KVM_IRQFD (assign).
    pub irqfd_assign: u64,
    /// KVM_IRQFD deassign.
    pub irqfd_deassign: u64,
    /// KVM_IOEVENTFD (assign).
    pub ioeventfd_assign: u64,
    /// KVM_IOEVENTFD deassign.
    pub ioeventfd_deassign: u64,
    /// KVM_SET_USER_MEMORY_REGION.
    pub set_user_memory_region: u64,
    /// KVM_SIGNAL_MSI.
    pub signal_msi: u64,
}

impl IoctlCounts {
    /// The ioctls issued between `earlier` and `self` (saturating at 0).
    pub fn since(&self, earlier: &IoctlCounts) -> IoctlCounts {
        IoctlCounts {
            set_gsi_routing: self.set_gsi_routing.saturating_sub(earlier.set_gsi_routing),
            irqfd_assign: self.irqfd_assign.saturating_sub(earlier.irqfd_assign),
            irqfd_deassign: self.irqfd_deassign.saturating_sub(earlier.irqfd_deassign),
            ioeventfd_assign: self
                .ioeventfd_assign
                .saturating_sub(earlier.ioeventfd_assign),
            ioeventfd_deassign: self
                .ioeventfd_deassign
                .saturating_sub(earlier.ioeventfd_deassign),
            set_user_memory_region: self
                .set_user_memory_region
                .saturating_sub(earlier.set_user_memory_region),
            signal_msi: self.signal_msi.saturating_sub(earlier.signal_msi),
        }
    }

    /// All ioctls counted.
    pub fn total(&self) -> u64 {
        self.set_gsi_routing
            + self.irqfd_assign
            + self.irqfd_deassign
            + self.ioeventfd_assign
            + self.ioeventfd_deassign
            + self.set_user_memory_region
            + self.signal_msi
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_gives_the_ioctls_issued_in_between() {
        let counters = IoctlCounters::default();
        IoctlCounters::count(&counters.irqfd_assign);
        let before = counters.snapshot();
        IoctlCounters::count(&counters.irqfd_assign);
        IoctlCounters::count(&counters.set_gsi_routing);
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
