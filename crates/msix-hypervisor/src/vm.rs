//! [`MsixVm`]: the VM operations MSI-X acceleration needs.

use std::fmt;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::{MsiMessage, Result, RoutingEntry};

/// The few operations on one VM that MSI-X acceleration needs, so that a VMM
/// with its own hypervisor layer can provide them in a few lines.
///
/// [`crate::KvmVm`] implements it over `kvm-ioctls`. [`crate::CountingVm`]
/// counts calls, [`crate::FaultyVm`] fails chosen calls for tests.
///
/// Each method is one hypervisor call; implementations add no caching and no
/// retries, so the caller's accounting of what the hypervisor holds stays
/// exact. On KVM:
/// - ioeventfds match a 4-byte write of exactly `datamatch` at exactly `gpa`;
///   unregistering needs the same address, length and datamatch;
/// - one irqfd per eventfd: registering a second is `EBUSY`; an irqfd
///   assigned while its eventfd counts signals injects at once (possibly
///   from a workqueue) and leaves the count;
/// - `set_gsi_routing` replaces the VM's whole table.
pub trait MsixVm: Send + Sync + fmt::Debug {
    /// The most routing entries the VM takes (KVM_CAP_IRQ_ROUTING); GSIs
    /// are below it.
    fn max_routes(&self) -> u32;

    /// Maps `size` bytes of host memory at `host_addr` read-only into guest
    /// physical memory at `gpa` as memory slot `slot` (guest reads are
    /// served from it, guest writes exit). `size` 0 deletes the slot.
    ///
    /// # Safety
    ///
    /// `host_addr..host_addr + size` must be a mapping that stays valid and
    /// readable until the slot is deleted (or the VM destroyed).
    unsafe fn set_readonly_memory(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()>;

    /// Signals `fd` whenever the guest writes the 4-byte value `datamatch`
    /// at `gpa`, without exiting to userspace.
    fn register_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()>;

    /// Undoes [`MsixVm::register_ioeventfd`] with the same arguments.
    fn unregister_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()>;

    /// Binds `fd` to `gsi`: each signal injects the GSI's route.
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()>;

    /// Unbinds `fd` from `gsi`. On KVM, returning flushes injections the
    /// irqfd had queued.
    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()>;

    /// Replaces the VM's GSI routing table with `entries`.
    fn set_gsi_routing(&self, entries: &[RoutingEntry]) -> Result<()>;

    /// Injects one MSI now.
    fn signal_msi(&self, message: &MsiMessage) -> Result<()>;
}

macro_rules! forward {
    ($ty:ty) => {
        impl<V: MsixVm + ?Sized> MsixVm for $ty {
            fn max_routes(&self) -> u32 {
                (**self).max_routes()
            }
            unsafe fn set_readonly_memory(
                &self,
                slot: u32,
                gpa: u64,
                size: u64,
                host_addr: u64,
            ) -> Result<()> {
                // SAFETY: the caller upholds the same contract.
                unsafe { (**self).set_readonly_memory(slot, gpa, size, host_addr) }
            }
            fn register_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
                (**self).register_ioeventfd(fd, gpa, datamatch)
            }
            fn unregister_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
                (**self).unregister_ioeventfd(fd, gpa, datamatch)
            }
            fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
                (**self).register_irqfd(fd, gsi)
            }
            fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
                (**self).unregister_irqfd(fd, gsi)
            }
            fn set_gsi_routing(&self, entries: &[RoutingEntry]) -> Result<()> {
                (**self).set_gsi_routing(entries)
            }
            fn signal_msi(&self, message: &MsiMessage) -> Result<()> {
                (**self).signal_msi(message)
            }
        }
    };
}

forward!(Arc<V>);
forward!(Box<V>);
