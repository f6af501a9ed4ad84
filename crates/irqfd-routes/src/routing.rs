//! The VM-wide GSI routing table: GSI allocation, staged MSI routes, batched KVM_SET_GSI_ROUTING.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::{Cap, VmFd};

use crate::{Error, Gsi, IoctlCounters, Result};

/// GSIs the x86 in-kernel irqchip routes by default: 0..24.
pub const X86_IRQCHIP_GSIS: Gsi = 24;

/// An MSI message: what the device writes (`data`) where (`address`).
///
/// The caller converts from its own model's message (this crate does not
/// depend on `msix-model`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Message Address (upper and lower dwords).
    pub address: u64,
    /// Message Data.
    pub data: u32,
}

impl MsiMessage {
    /// The KVM routing entry sending this message for `gsi`.
    pub fn routing_entry(&self, gsi: Gsi) -> kvm_irq_routing_entry {
        let mut entry = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            ..Default::default()
        };
        // Truncations intended: the address is split into its two dwords.
        entry.u.msi.address_lo = self.address as u32;
        entry.u.msi.address_hi = (self.address >> 32) as u32;
        entry.u.msi.data = self.data;
        entry
    }
}

/// The routes the VMM's irqchip needs besides ours; they lead every commit.
#[derive(Clone, Debug)]
pub enum IrqchipRoutes {
    /// x86 in-kernel irqchip (KVM_CREATE_IRQCHIP): the kernel's default
    /// table for GSIs 0..24, see [`x86_default_routes`].
    X86KernelIrqchip,
    /// Split irqchip or none: no default routes; GSIs start at 0.
    None,
    /// Whatever the VMM already has; our GSIs start above the highest one.
    Custom(Vec<kvm_irq_routing_entry>),
}

impl IrqchipRoutes {
    fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        match self {
            IrqchipRoutes::X86KernelIrqchip => x86_default_routes(),
            IrqchipRoutes::None => Vec::new(),
            IrqchipRoutes::Custom(entries) => entries.clone(),
        }
    }
}

/// The routing table KVM installs with KVM_CREATE_IRQCHIP on x86, rebuilt
/// exactly as `default_routing[]` in arch/x86/kvm/irq_comm.c (irq.c in newer
/// kernels): GSIs 0..16 go to the IOAPIC pin of the same number and to the
/// PIC (master for 0..8, slave for 8..16, pin GSI % 8), IOAPIC entry first;
/// GSIs 16..24 go to the IOAPIC only. 40 entries.
pub fn x86_default_routes() -> Vec<kvm_irq_routing_entry> {
    let irqchip = |gsi: Gsi, chip: u32, pin: u32| {
        let mut entry = kvm_irq_routing_entry {
            gsi,
            type_: KVM_IRQ_ROUTING_IRQCHIP,
            ..Default::default()
        };
        entry.u.irqchip.irqchip = chip;
        entry.u.irqchip.pin = pin;
        entry
    };
    let mut entries = Vec::with_capacity(40);
    for gsi in 0..X86_IRQCHIP_GSIS {
        entries.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        if gsi < 16 {
            let pic = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            entries.push(irqchip(gsi, pic, gsi % 8));
        }
    }
    entries
}

/// What an accelerator needs from the VM's routing table.
///
/// Implemented by [`GsiRouting`]; a VMM that already owns its table
/// implements it to merge our routes into its own. Changes are staged in
/// userspace and reach KVM only on [`commit`](MsiRouteTable::commit), so a
/// batch of message changes costs one KVM_SET_GSI_ROUTING.
///
/// Ordering (DESIGN.md): on unmask, commit the route before attaching the
/// irqfd; on mask, detach the irqfd before any route change.
pub trait MsiRouteTable: Send + std::fmt::Debug {
    /// Allocates the lowest free GSI above the irqchip's GSIs.
    /// [`Error::GsiExhausted`] past the KVM_CAP_IRQ_ROUTING limit.
    fn allocate(&mut self) -> Result<Gsi>;

    /// Frees `gsi` and removes its route (staged).
    fn release(&mut self, gsi: Gsi) -> Result<()>;

    /// Stages `gsi` to send `message`. No-op, not dirtying the table, when
    /// the route is already exactly this.
    fn stage(&mut self, gsi: Gsi, message: MsiMessage) -> Result<()>;

    /// Stages the removal of `gsi`'s route (the GSI stays allocated).
    fn unstage(&mut self, gsi: Gsi) -> Result<()>;

    /// Whether staged changes wait for a commit.
    fn is_dirty(&self) -> bool;

    /// Sends the whole table with one KVM_SET_GSI_ROUTING when dirty:
    /// `Ok(true)`. `Ok(false)` and no ioctl when clean. On failure the table
    /// stays as staged and dirty, and the error carries the errno.
    fn commit(&mut self) -> Result<bool>;
}

/// A routing table shared by every device of a VM (and the VMM): KVM has one
/// table per VM, so all of them must stage into the same one.
pub type SharedRouting = Arc<Mutex<dyn MsiRouteTable>>;

/// The VM-wide routing table kept in userspace: the irqchip's routes plus
/// one MSI route per allocated GSI that has a message.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use irqfd_routes::{GsiRouting, IoctlCounters, IrqchipRoutes, MsiMessage, MsiRouteTable};
///
/// let vm = Arc::new(kvm_ioctls::Kvm::new()?.create_vm()?);
/// vm.create_irq_chip()?;
/// let counters = Arc::new(IoctlCounters::default());
/// let mut routing = GsiRouting::new(vm, IrqchipRoutes::X86KernelIrqchip, counters.clone())?;
/// for vector in 0..8 {
///     let gsi = routing.allocate()?;
///     routing.stage(gsi, MsiMessage { address: 0xfee0_0000, data: 0x40 + vector })?;
/// }
/// assert!(routing.commit()?); // one ioctl for the eight routes
/// assert!(!routing.commit()?); // nothing changed: no ioctl
/// assert_eq!(counters.snapshot().set_gsi_routing, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct GsiRouting {
    vm: Arc<VmFd>,
    counters: Arc<IoctlCounters>,
    irqchip: Vec<kvm_irq_routing_entry>,
    /// First GSI above the irqchip's.
    first_gsi: Gsi,
    /// KVM_CAP_IRQ_ROUTING: both the GSI bound and the entry limit.
    max_routes: u32,
    allocated: BTreeSet<Gsi>,
    routes: BTreeMap<Gsi, MsiMessage>,
    dirty: bool,
}

impl GsiRouting {
    /// A table holding `irqchip`'s routes and no MSI route, bounded by
    /// KVM_CAP_IRQ_ROUTING (4096 on current kernels). The table starts clean:
    /// KVM already holds the irqchip's routes.
    ///
    /// With [`IrqchipRoutes::X86KernelIrqchip`], call `create_irq_chip()`
    /// on the VM first (KVM refuses routes to a missing irqchip).
    pub fn new(
        vm: Arc<VmFd>,
        irqchip: IrqchipRoutes,
        counters: Arc<IoctlCounters>,
    ) -> Result<Self> {
        let value = vm.check_extension_int(Cap::IrqRouting);
        let max_routes = u32::try_from(value)
            .ok()
            .filter(|max| *max > 0)
            .ok_or(Error::NoIrqRouting { value })?;
        let irqchip = irqchip.entries();
        let first_gsi = irqchip
            .iter()
            .map(|entry| entry.gsi.saturating_add(1))
            .max()
            .unwrap_or(0);
        Ok(GsiRouting {
            vm,
            counters,
            irqchip,
            first_gsi,
            max_routes,
            allocated: BTreeSet::new(),
            routes: BTreeMap::new(),
            dirty: false,
        })
    }

    /// Wraps the table for sharing between devices.
    pub fn into_shared(self) -> SharedRouting {
        Arc::new(Mutex::new(self))
    }

    /// KVM_CAP_IRQ_ROUTING: GSIs are below it and a table holds at most this
    /// many entries.
    pub fn max_routes(&self) -> u32 {
        self.max_routes
    }

    /// The first GSI this table allocates (above the irqchip's).
    pub fn first_gsi(&self) -> Gsi {
        self.first_gsi
    }

    /// How many GSIs are allocated.
    pub fn allocated_count(&self) -> usize {
        self.allocated.len()
    }

    /// The staged MSI routes, by GSI.
    pub fn routes(&self) -> impl Iterator<Item = (Gsi, MsiMessage)> + '_ {
        self.routes.iter().map(|(gsi, message)| (*gsi, *message))
    }

    /// The staged route of `gsi`, if any.
    pub fn route(&self, gsi: Gsi) -> Option<MsiMessage> {
        self.routes.get(&gsi).copied()
    }

    /// The whole table a commit sends: the irqchip's routes, then the MSI
    /// routes by GSI.
    pub fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        let mut entries = Vec::with_capacity(self.irqchip.len() + self.routes.len());
        entries.extend_from_slice(&self.irqchip);
        entries.extend(
            self.routes
                .iter()
                .map(|(gsi, message)| message.routing_entry(*gsi)),
        );
        entries
    }

    fn check_allocated(&self, gsi: Gsi) -> Result<()> {
        if self.allocated.contains(&gsi) {
            Ok(())
        } else {
            Err(Error::UnknownGsi { gsi })
        }
    }

    fn routing_table(&self) -> Result<KvmIrqRouting> {
        let entries = self.irqchip.len() + self.routes.len();
        // The kernel's bound, or the wrapper's if a kernel ever reports more.
        let max = (self.max_routes as usize).min(kvm_bindings::KVM_MAX_IRQ_ROUTES);
        let capacity = || Error::RouteCapacity { entries, max };
        if entries > max {
            return Err(capacity());
        }
        // new(n) would make n zeroed entries (GSI 0 routes): start empty.
        let mut table = KvmIrqRouting::new(0).map_err(|_| capacity())?;
        for entry in self.entries() {
            table.push(entry).map_err(|_| capacity())?;
        }
        Ok(table)
    }
}

impl MsiRouteTable for GsiRouting {
    fn allocate(&mut self) -> Result<Gsi> {
        // Lowest free: the first gap in the sorted set, else past its end.
        let mut candidate = self.first_gsi;
        for gsi in self.allocated.range(self.first_gsi..) {
            if *gsi != candidate {
                break;
            }
            candidate += 1;
        }
        if candidate >= self.max_routes {
            return Err(Error::GsiExhausted {
                max: self.max_routes,
            });
        }
        self.allocated.insert(candidate);
        Ok(candidate)
    }

    fn release(&mut self, gsi: Gsi) -> Result<()> {
        self.check_allocated(gsi)?;
        self.unstage(gsi)?;
        self.allocated.remove(&gsi);
        Ok(())
    }

    fn stage(&mut self, gsi: Gsi, message: MsiMessage) -> Result<()> {
        self.check_allocated(gsi)?;
        if self.routes.insert(gsi, message) != Some(message) {
            self.dirty = true;
        }
        Ok(())
    }

    fn unstage(&mut self, gsi: Gsi) -> Result<()> {
        self.check_allocated(gsi)?;
        if self.routes.remove(&gsi).is_some() {
            self.dirty = true;
        }
        Ok(())
    }

    fn is_dirty(&self) -> bool {
        self.dirty
    }

    fn commit(&mut self) -> Result<bool> {
        if !self.dirty {
            return Ok(false);
        }
        let table = self.routing_table()?;
        let entries = table.as_slice().len();
        IoctlCounters::count(&self.counters.set_gsi_routing);
        self.vm
            .set_gsi_routing(&table)
            .map_err(|error| Error::SetGsiRouting {
                entries,
                errno: error.errno(),
            })?;
        self.dirty = false;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_default_routes_match_the_kernel_table() {
        let routes = x86_default_routes();
        assert_eq!(routes.len(), 40);
        let decoded: Vec<(Gsi, u32, u32)> = routes
            .iter()
            .map(|entry| {
                assert_eq!(entry.type_, KVM_IRQ_ROUTING_IRQCHIP);
                // SAFETY: every entry was built with type IRQCHIP, so the
                // irqchip member of the union is the initialised one.
                let irqchip = unsafe { entry.u.irqchip };
                (entry.gsi, irqchip.irqchip, irqchip.pin)
            })
            .collect();
        assert_eq!(&decoded[..4], &[(0, 2, 0), (0, 0, 0), (1, 2, 1), (1, 0, 1)]);
        assert_eq!(decoded[18..20], [(9, 2, 9), (9, 1, 1)]);
        assert_eq!(decoded[30..33], [(15, 2, 15), (15, 1, 7), (16, 2, 16)]);
        assert_eq!(decoded[39], (23, 2, 23));
    }

    #[test]
    fn msi_message_splits_its_address_into_dwords() {
        let entry = MsiMessage {
            address: 0x1_fee0_1000,
            data: 0x4041,
        }
        .routing_entry(30);
        assert_eq!(
            (entry.gsi, entry.type_, entry.flags),
            (30, KVM_IRQ_ROUTING_MSI, 0)
        );
        // SAFETY: the entry was built with type MSI, so msi is initialised.
        let msi = unsafe { entry.u.msi };
        assert_eq!(
            (msi.address_lo, msi.address_hi, msi.data),
            (0xfee0_1000, 1, 0x4041)
        );
    }
}
