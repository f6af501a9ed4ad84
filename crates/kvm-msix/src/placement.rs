//! [`TablePlacement`]: the table's KVM objects at one guest physical address.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use irqfd_routes::IoctlCounters;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{IoEventAddress, VmFd};

use crate::{page_align_up, Error, Policy, Result, TableShadow, UnmaskEvents, PAGE_SIZE};

/// Offset of Vector Control inside a 16-byte table entry.
const VECTOR_CONTROL: u64 = 12;

/// What a table placement is built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementConfig {
    /// The policy asked for.
    pub policy: Policy,
    /// The memslot number the VMM sets aside for this table's shadow.
    pub memslot: u32,
    /// Table length in bytes (16 per entry).
    pub table_len: u64,
    /// PBA length in bytes.
    pub pba_len: u64,
    /// Entries that get an unmask ioeventfd under `fast`; entries past the
    /// budget behave as under `strict`. Ioeventfds are bounded by fds, not by
    /// KVM's NR_IOBUS_DEVS, but each costs milliseconds to unregister.
    pub fast_entries: u16,
}

/// Where a guest MMIO access landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarRegion {
    /// The MSI-X table, at this offset from its start.
    Table(u64),
    /// The Pending Bit Array, at this offset from its start.
    Pba(u64),
}

#[derive(Debug)]
struct Placed {
    table_gpa: u64,
    pba_gpa: u64,
    mapped: bool,
    /// Other registers share the table's pages: claim only the table bytes.
    shared: bool,
    ioevents: u16,
}

/// The MSI-X table's KVM objects: the read-only memslot over the shadow, the
/// per-entry unmask ioeventfds, and the decode of what still exits.
///
/// Registering ioeventfds is cheap (about 5 us) but unregistering one waits
/// for an SRCU grace period (milliseconds): place once per BAR address and
/// never per toggle.
#[derive(Debug)]
pub struct TablePlacement {
    vm: Arc<VmFd>,
    counters: Arc<IoctlCounters>,
    config: PlacementConfig,
    shadow: TableShadow,
    unmask: UnmaskEvents,
    placed: Option<Placed>,
    effective: Policy,
}

impl TablePlacement {
    /// Creates the shadow and unmask eventfds; nothing is registered with KVM
    /// until [`TablePlacement::place`].
    pub fn new(
        vm: Arc<VmFd>,
        counters: Arc<IoctlCounters>,
        config: PlacementConfig,
    ) -> Result<Self> {
        let shadow = TableShadow::new(config.table_len)?;
        let entries = (config.table_len / 16) as u16;
        let unmask = if config.policy.absorbs_unmask() {
            UnmaskEvents::new(config.fast_entries.min(entries))?
        } else {
            UnmaskEvents::new(0)?
        };
        Ok(TablePlacement {
            vm,
            counters,
            config,
            shadow,
            unmask,
            placed: None,
            effective: config.policy,
        })
    }

    /// The shadow table.
    pub fn shadow(&self) -> &TableShadow {
        &self.shadow
    }

    /// The unmask eventfds.
    pub fn unmask_events(&self) -> &UnmaskEvents {
        &self.unmask
    }

    /// The policy in force: the one asked for, or `trap` when the table could
    /// not be isolated on its own pages.
    pub fn effective_policy(&self) -> Policy {
        self.effective
    }

    /// Entries whose unmask is absorbed by an ioeventfd right now.
    pub fn fast_entries(&self) -> u16 {
        self.placed.as_ref().map_or(0, |p| p.ioevents)
    }

    /// Whether `vector`'s unmask write is absorbed by an ioeventfd.
    pub fn absorbs_unmask(&self, vector: u16) -> bool {
        vector < self.fast_entries()
    }

    /// Guest physical addresses of the table and PBA, when placed.
    pub fn addresses(&self) -> Option<(u64, u64)> {
        self.placed.as_ref().map(|p| (p.table_gpa, p.pba_gpa))
    }

    /// Bytes at the table's address that are ours: its whole pages, unless
    /// other registers share them.
    fn table_window(&self, shared: bool) -> u64 {
        if shared {
            self.config.table_len
        } else {
            page_align_up(self.config.table_len)
        }
    }

    /// Places the table at `table_gpa` and the PBA at `pba_gpa`. The table is
    /// mapped read-only only when the policy maps it, its address is page
    /// aligned and its pages hold nothing else (`table_pages_shared` says the
    /// device has other registers there); otherwise the policy falls back to
    /// `trap`. Returns the policy in force.
    pub fn place(
        &mut self,
        table_gpa: u64,
        pba_gpa: u64,
        table_pages_shared: bool,
    ) -> Result<Policy> {
        if self.placed.is_some() {
            return Err(Error::State("table already placed: remove it first"));
        }
        let pages = page_align_up(self.config.table_len);
        let pba_end = pba_gpa.saturating_add(self.config.pba_len);
        let pba_overlaps_pages = pba_gpa < table_gpa.saturating_add(pages) && pba_end > table_gpa;
        let can_map = self.config.policy.maps_table()
            && table_gpa % PAGE_SIZE == 0
            && !pba_overlaps_pages
            && !table_pages_shared;
        self.effective = if can_map {
            self.config.policy
        } else {
            Policy::Trap
        };
        let mut placed = Placed {
            table_gpa,
            pba_gpa,
            mapped: false,
            shared: table_pages_shared,
            ioevents: 0,
        };
        if can_map {
            self.set_memslot(table_gpa, pages)?;
            placed.mapped = true;
        }
        if self.effective.absorbs_unmask() {
            for vector in 0..self.unmask.len() {
                let Some(fd) = self.unmask.get(vector) else {
                    break;
                };
                let gpa = table_gpa + u64::from(vector) * 16 + VECTOR_CONTROL;
                match self
                    .vm
                    .register_ioevent(fd, &IoEventAddress::Mmio(gpa), 0u32)
                {
                    Ok(()) => {
                        self.counters
                            .ioeventfd_assign
                            .fetch_add(1, Ordering::Relaxed);
                        placed.ioevents += 1;
                    }
                    // Out of fds or memory, or any other refusal: the remaining
                    // entries' unmasks exit instead, which is exact.
                    Err(_) => break,
                }
            }
        }
        self.placed = Some(placed);
        Ok(self.effective)
    }

    /// Unregisters everything [`TablePlacement::place`] registered (for a BAR
    /// move, a policy change or teardown). No-op when not placed.
    pub fn remove(&mut self) -> Result<()> {
        let Some(placed) = self.placed.take() else {
            return Ok(());
        };
        let mut first_error = None;
        for vector in 0..placed.ioevents {
            let Some(fd) = self.unmask.get(vector) else {
                break;
            };
            let gpa = placed.table_gpa + u64::from(vector) * 16 + VECTOR_CONTROL;
            match self
                .vm
                .unregister_ioevent(fd, &IoEventAddress::Mmio(gpa), 0u32)
            {
                Ok(()) => {
                    self.counters
                        .ioeventfd_deassign
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::Ioeventfd {
                        op: "deassign",
                        gpa,
                        errno: e.errno(),
                    });
                }
            }
        }
        if placed.mapped {
            if let Err(e) = self.set_memslot(placed.table_gpa, 0) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn set_memslot(&self, gpa: u64, size: u64) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot: self.config.memslot,
            flags: if size > 0 { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: self.shadow.host_address(),
        };
        // SAFETY: the region covers the shadow mapping (size <= its size),
        // which this struct owns; the memslot is deleted in `remove` (called
        // from Drop) before the shadow is unmapped.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| Error::Memslot {
            slot: self.config.memslot,
            gpa,
            errno: e.errno(),
        })?;
        self.counters
            .set_user_memory_region
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Decodes a guest physical access into table or PBA, or None when it is
    /// not ours (or the table is not placed).
    pub fn decode(&self, gpa: u64) -> Option<BarRegion> {
        let placed = self.placed.as_ref()?;
        let table_window = self.table_window(placed.shared);
        if gpa >= placed.table_gpa && gpa - placed.table_gpa < table_window {
            return Some(BarRegion::Table(gpa - placed.table_gpa));
        }
        if gpa >= placed.pba_gpa && gpa - placed.pba_gpa < self.config.pba_len {
            return Some(BarRegion::Pba(gpa - placed.pba_gpa));
        }
        None
    }
}

impl Drop for TablePlacement {
    fn drop(&mut self) {
        // Errors here leave nothing to do: the VM may already be gone.
        let _ = self.remove();
    }
}
