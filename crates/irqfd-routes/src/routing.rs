//! The VM-wide GSI routing table: GSI allocation, staged MSI routes, batched
//! `KVM_SET_GSI_ROUTING`, and containment of routes the hypervisor refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use msix_hypervisor::{x86, MsiMessage, MsixVm, RouteKind, RoutingEntry};

use crate::isolation::isolate_rejected;
use crate::{Error, Gsi, Result};

/// The routes the VMM's irqchip needs besides ours; they lead every commit.
#[derive(Clone, Debug)]
pub enum IrqchipRoutes {
    /// x86 in-kernel irqchip (KVM_CREATE_IRQCHIP): the kernel's default
    /// table for GSIs 0..24, see [`msix_hypervisor::x86::default_routes`].
    X86KernelIrqchip,
    /// Split irqchip or none: no default routes; GSIs start at 0.
    None,
    /// Whatever the VMM already has; our GSIs start above the highest one.
    Custom(Vec<RoutingEntry>),
}

impl IrqchipRoutes {
    fn entries(&self) -> Vec<RoutingEntry> {
        match self {
            IrqchipRoutes::X86KernelIrqchip => x86::default_routes(),
            IrqchipRoutes::None => Vec::new(),
            IrqchipRoutes::Custom(entries) => entries.clone(),
        }
    }
}

/// Where one GSI's MSI route stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteState {
    /// No route staged (and none left in the hypervisor).
    None,
    /// Staged; the hypervisor does not hold it yet.
    Staged(MsiMessage),
    /// The hypervisor holds exactly this route.
    Committed(MsiMessage),
    /// The hypervisor refused this route; it is not staged, and staging the
    /// same message again keeps it refused without another call. The GSI
    /// keeps the route it had before, if any, until something else is
    /// staged for it.
    Rejected {
        /// The refused message.
        message: MsiMessage,
        /// The errno of the refusal.
        errno: i32,
    },
}

/// A route the hypervisor refused during a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectedRoute {
    /// Its GSI.
    pub gsi: Gsi,
    /// The refused message.
    pub message: MsiMessage,
    /// The errno of the refusal.
    pub errno: i32,
}

/// What one [`MsiRouteTable::commit`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commit {
    /// `KVM_SET_GSI_ROUTING` calls made: 0 when nothing had changed, 1 when
    /// the table went through, more when refused routes were isolated.
    pub calls: u32,
    /// Routes refused and taken out of the table (their owners hold them).
    pub rejected: Vec<RejectedRoute>,
}

/// What an accelerator needs from the VM's routing table.
///
/// Implemented by [`GsiRouting`]; a VMM that already owns its table
/// implements it to merge our routes into its own. Changes are staged in
/// userspace and reach the hypervisor only on
/// [`commit`](MsiRouteTable::commit), so a batch of message changes costs
/// one `KVM_SET_GSI_ROUTING`. Methods take `&self`: the table serialises
/// itself, and stagers never wait for another device's commit call.
///
/// Ordering: on unmask, commit the route before attaching the irqfd; on
/// mask, detach the irqfd before any route change.
pub trait MsiRouteTable: Send + Sync + std::fmt::Debug {
    /// Allocates the lowest free GSI above the irqchip's GSIs.
    /// [`Error::GsiExhausted`] when no GSI below the KVM_CAP_IRQ_ROUTING
    /// limit is free, or when one more route would not fit the table.
    fn allocate(&self) -> Result<Gsi>;

    /// Frees `gsi` and removes its route (staged).
    fn release(&self, gsi: Gsi) -> Result<()>;

    /// Stages `gsi` to send `message`. No-op when the route is already
    /// exactly this, and when this message was refused for this GSI before
    /// ([`RouteState::Rejected`] stays).
    fn stage(&self, gsi: Gsi, message: MsiMessage) -> Result<()>;

    /// Stages the removal of `gsi`'s route (the GSI stays allocated).
    fn unstage(&self, gsi: Gsi) -> Result<()>;

    /// Whether staged changes wait for a commit.
    fn is_dirty(&self) -> bool;

    /// Sends the whole table when dirty. When the hypervisor refuses it as
    /// invalid (EINVAL), the routes staged since the last commit are
    /// isolated: the refused ones are taken out (and reported), the rest
    /// committed, so one bad route never blocks the VM's others.
    /// [`Error::SetGsiRouting`] when the table fails without any newly
    /// staged route, or with another errno (the table then stays dirty).
    fn commit(&self) -> Result<Commit>;

    /// Where `gsi`'s route stands.
    fn state(&self, gsi: Gsi) -> RouteState;
}

/// A routing table shared by every device of a VM (and the VMM): KVM has one
/// table per VM, so all of them must stage into the same one.
pub type SharedRouting = Arc<dyn MsiRouteTable>;

#[derive(Debug, Default)]
struct Table {
    allocated: BTreeSet<Gsi>,
    /// What the next commit sends.
    staged: BTreeMap<Gsi, MsiMessage>,
    /// What the hypervisor holds since the last successful call.
    committed: BTreeMap<Gsi, MsiMessage>,
    rejected: BTreeMap<Gsi, (MsiMessage, i32)>,
}

impl Table {
    fn is_dirty(&self) -> bool {
        self.staged != self.committed
    }
}

/// The VM-wide routing table kept in userspace: the irqchip's routes plus
/// one MSI route per allocated GSI that has a message.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use irqfd_routes::{GsiRouting, IrqchipRoutes, MsiMessage, MsiRouteTable};
/// use msix_hypervisor::{CountingVm, KvmVm};
///
/// let vm = Arc::new(kvm_ioctls::Kvm::new()?.create_vm()?);
/// vm.create_irq_chip()?;
/// let vm = Arc::new(CountingVm::new(KvmVm::new(vm)));
/// let routing = GsiRouting::new(vm.clone(), IrqchipRoutes::X86KernelIrqchip)?;
/// for vector in 0..8 {
///     let gsi = routing.allocate()?;
///     routing.stage(gsi, MsiMessage::new(0xfee0_0000, 0x40 + vector))?;
/// }
/// assert_eq!(routing.commit()?.calls, 1); // one call for the eight routes
/// assert_eq!(routing.commit()?.calls, 0); // nothing changed: no call
/// assert_eq!(vm.counts().set_gsi_routing, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct GsiRouting {
    vm: Arc<dyn MsixVm>,
    irqchip: Vec<RoutingEntry>,
    /// First GSI above the irqchip's.
    first_gsi: Gsi,
    /// KVM_CAP_IRQ_ROUTING: both the GSI bound and the entry limit.
    max_routes: u32,
    table: Mutex<Table>,
    /// Serialises calls to the hypervisor (two commits must not land out of
    /// order); the table lock is never held across one.
    calls: Mutex<()>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The table is updated in whole steps under the lock; a panic elsewhere
    // leaves it consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl GsiRouting {
    /// A table holding `irqchip`'s routes and no MSI route, bounded by the
    /// VM's routing limit (4096 on current kernels). The table starts clean:
    /// the hypervisor already holds the irqchip's routes.
    ///
    /// With [`IrqchipRoutes::X86KernelIrqchip`], create the in-kernel
    /// irqchip first (KVM refuses routes to a missing irqchip).
    pub fn new(vm: Arc<dyn MsixVm>, irqchip: IrqchipRoutes) -> Result<Self> {
        let max_routes = vm.max_routes();
        if max_routes == 0 {
            return Err(Error::NoIrqRouting);
        }
        let irqchip = irqchip.entries();
        let first_gsi = irqchip
            .iter()
            .map(|entry| entry.gsi.saturating_add(1))
            .max()
            .unwrap_or(0);
        Ok(GsiRouting {
            vm,
            irqchip,
            first_gsi,
            max_routes,
            table: Mutex::new(Table::default()),
            calls: Mutex::new(()),
        })
    }

    /// Wraps the table for sharing between devices.
    pub fn into_shared(self) -> SharedRouting {
        Arc::new(self)
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
        lock(&self.table).allocated.len()
    }

    /// The staged MSI routes, by GSI.
    pub fn routes(&self) -> Vec<(Gsi, MsiMessage)> {
        lock(&self.table)
            .staged
            .iter()
            .map(|(gsi, message)| (*gsi, *message))
            .collect()
    }

    /// The staged route of `gsi`, if any.
    pub fn route(&self, gsi: Gsi) -> Option<MsiMessage> {
        lock(&self.table).staged.get(&gsi).copied()
    }

    /// The whole table a commit sends: the irqchip's routes, then the MSI
    /// routes by GSI.
    pub fn entries(&self) -> Vec<RoutingEntry> {
        self.entries_with(&lock(&self.table).staged)
    }

    fn entries_with(&self, routes: &BTreeMap<Gsi, MsiMessage>) -> Vec<RoutingEntry> {
        let mut entries = Vec::with_capacity(self.irqchip.len() + routes.len());
        entries.extend_from_slice(&self.irqchip);
        entries.extend(routes.iter().map(|(gsi, message)| RoutingEntry {
            gsi: *gsi,
            kind: RouteKind::Msi(*message),
        }));
        entries
    }

    fn check_allocated(table: &Table, gsi: Gsi) -> Result<()> {
        if table.allocated.contains(&gsi) {
            Ok(())
        } else {
            Err(Error::UnknownGsi { gsi })
        }
    }

    /// One call to the hypervisor with `routes` (after the irqchip's).
    pub(crate) fn send(&self, routes: &BTreeMap<Gsi, MsiMessage>) -> Result<()> {
        let entries = self.entries_with(routes);
        let max = self.max_routes as usize;
        if entries.len() > max {
            return Err(Error::RouteCapacity {
                entries: entries.len(),
                max,
            });
        }
        self.vm
            .set_gsi_routing(&entries)
            .map_err(|e| Error::SetGsiRouting {
                entries: entries.len(),
                errno: e.errno,
            })
    }
}

impl MsiRouteTable for GsiRouting {
    fn allocate(&self) -> Result<Gsi> {
        let mut table = lock(&self.table);
        // Every allocated GSI may hold one MSI route, and the whole table
        // (irqchip routes included) must fit the hypervisor's limit: past
        // that, one device's routes would make every commit of the VM fail.
        if self.irqchip.len() + table.allocated.len() >= self.max_routes as usize {
            return Err(Error::GsiExhausted {
                max: self.max_routes,
            });
        }
        // Lowest free: the first gap in the sorted set, else past its end.
        let mut candidate = self.first_gsi;
        for gsi in table.allocated.range(self.first_gsi..) {
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
        table.allocated.insert(candidate);
        Ok(candidate)
    }

    fn release(&self, gsi: Gsi) -> Result<()> {
        let mut table = lock(&self.table);
        Self::check_allocated(&table, gsi)?;
        table.staged.remove(&gsi);
        table.rejected.remove(&gsi);
        table.allocated.remove(&gsi);
        Ok(())
    }

    fn stage(&self, gsi: Gsi, message: MsiMessage) -> Result<()> {
        let mut table = lock(&self.table);
        Self::check_allocated(&table, gsi)?;
        if table.rejected.get(&gsi).is_some_and(|(m, _)| *m == message) {
            return Ok(());
        }
        table.rejected.remove(&gsi);
        table.staged.insert(gsi, message);
        Ok(())
    }

    fn unstage(&self, gsi: Gsi) -> Result<()> {
        let mut table = lock(&self.table);
        Self::check_allocated(&table, gsi)?;
        table.staged.remove(&gsi);
        table.rejected.remove(&gsi);
        Ok(())
    }

    fn is_dirty(&self) -> bool {
        lock(&self.table).is_dirty()
    }

    fn commit(&self) -> Result<Commit> {
        let _serial = lock(&self.calls);
        let (staged, committed) = {
            let table = lock(&self.table);
            if !table.is_dirty() {
                return Ok(Commit::default());
            }
            (table.staged.clone(), table.committed.clone())
        };
        let outcome = match self.send(&staged) {
            Ok(()) => Ok((staged.clone(), 1, Vec::new())),
            // KVM refuses a route it does not accept with EINVAL; any other
            // errno is about the call, not a route, and the table stays dirty.
            Err(Error::SetGsiRouting { errno, .. }) if errno == libc::EINVAL => {
                isolate_rejected(self, &staged, &committed)
            }
            Err(e) => Err(e),
        };
        let (now_committed, calls, rejected) = outcome?;
        let mut table = lock(&self.table);
        for r in &rejected {
            // Unless restaged meanwhile, the GSI falls back to what the
            // hypervisor still holds for it.
            if table.staged.get(&r.gsi) == Some(&r.message) {
                match now_committed.get(&r.gsi) {
                    Some(old) => table.staged.insert(r.gsi, *old),
                    None => table.staged.remove(&r.gsi),
                };
                table.rejected.insert(r.gsi, (r.message, r.errno));
            }
        }
        table.committed = now_committed;
        Ok(Commit { calls, rejected })
    }

    fn state(&self, gsi: Gsi) -> RouteState {
        let table = lock(&self.table);
        if let Some((message, errno)) = table.rejected.get(&gsi) {
            return RouteState::Rejected {
                message: *message,
                errno: *errno,
            };
        }
        match table.staged.get(&gsi) {
            Some(m) if table.committed.get(&gsi) == Some(m) => RouteState::Committed(*m),
            Some(m) => RouteState::Staged(*m),
            None => RouteState::None,
        }
    }
}
