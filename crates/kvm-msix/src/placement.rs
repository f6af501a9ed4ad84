//! [`TablePlacement`]: the table's hypervisor objects at one guest physical
//! address.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use msix_hypervisor::MsixVm;
use vmm_sys_util::eventfd::EventFd;

use crate::{
    page_align_up, Error, Policy, Result, Retired, RetiredIoevents, TableShadow, UnmaskEvents,
    UnmaskSet, PAGE_SIZE,
};

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
    /// The MSI-X table, at this offset from its start (offsets past the
    /// table's end but on its own pages included).
    Table(u64),
    /// The Pending Bit Array, at this offset from its start.
    Pba(u64),
}

#[derive(Debug)]
struct Placed {
    table_gpa: u64,
    mapped: bool,
    /// Other registers share the table's pages: claim only the table bytes.
    shared: bool,
}

/// The MSI-X table's hypervisor objects: the read-only memslot over the
/// shadow, the per-entry unmask ioeventfds, and the decode of what still
/// exits.
///
/// Registering ioeventfds is cheap (about 5 us) but unregistering one waits
/// for an SRCU grace period (milliseconds): [`TablePlacement::unplace`]
/// hands them to [`RetiredIoevents`] instead, for a servicer to undo without
/// the device's lock, and a placement at the same address reclaims them.
#[derive(Debug)]
pub struct TablePlacement {
    vm: Arc<dyn MsixVm>,
    config: PlacementConfig,
    /// Never unmapped while a memslot may still map it (see `Drop`).
    shadow: ManuallyDrop<TableShadow>,
    unmask: UnmaskEvents,
    retired: Arc<RetiredIoevents>,
    placed: Option<Placed>,
    effective: Policy,
    /// Guest address of a memslot whose deletion failed: it still maps the
    /// shadow, which therefore must outlive this placement.
    stuck_slot: Option<u64>,
    /// Why the last placement ran below its policy, if it did.
    fallback: Option<Error>,
    /// The most the next placements may use (`fast` lowered to `strict`
    /// when nobody services the unmask ioeventfds).
    limit: Policy,
}

/// Where a placement puts the table and the PBA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Guest physical address of the table (BAR base + table offset).
    pub table_gpa: u64,
    /// Guest physical address of the PBA, when its BAR decodes: a PBA on
    /// the table's pages keeps them from being mapped (the PBA's bits must
    /// be computed at every read). The PBA itself is decoded by the caller.
    pub pba_gpa: Option<u64>,
    /// Other device registers share the table's pages: the table cannot
    /// be mapped read-only, and only its own bytes are decoded.
    pub table_pages_shared: bool,
}

/// The memslot work of a relocation, to run outside the caller's lock.
///
/// It only refers to the shadow, which its [`TablePlacement`] owns: run it
/// and pass the outcome to [`TablePlacement::finish`] while the placement
/// is alive (the placement outlives any call made through `&` to its owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the memslot work must be run and finished"]
pub struct SlotWork {
    slot: u32,
    host_addr: u64,
    size: u64,
    /// The guest address the slot maps now, if any.
    from: Option<u64>,
    /// The guest address it must map afterwards, if any.
    to: Option<u64>,
}

/// What [`SlotWork::run`] did.
#[derive(Debug)]
pub struct SlotOutcome {
    /// Where the slot maps the shadow now, if anywhere.
    mapped: Option<u64>,
    /// A slot still mapping the shadow at an address no longer placed.
    stuck: Option<u64>,
    error: Option<Error>,
}

impl SlotWork {
    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.from == self.to
    }

    /// Moves, creates or deletes the memslot: one hypervisor call (two when
    /// a move is refused and done as a deletion and a creation).
    pub fn run(&self, vm: &dyn MsixVm) -> SlotOutcome {
        let set = |gpa: u64, size: u64| {
            // SAFETY: the region covers the shadow mapping (size <= its
            // size), which the TablePlacement this work came from owns and
            // never unmaps while a memslot may still map it: its `Drop`
            // deletes the memslot first and leaks the shadow when that fails.
            unsafe { vm.set_readonly_memory(self.slot, gpa, size, self.host_addr) }.map_err(|e| {
                Error::Memslot {
                    slot: self.slot,
                    gpa,
                    errno: e.errno,
                }
            })
        };
        match (self.from, self.to) {
            (from, to) if from == to => SlotOutcome {
                mapped: to,
                stuck: None,
                error: None,
            },
            (None, Some(to)) => match set(to, self.size) {
                Ok(()) => SlotOutcome {
                    mapped: Some(to),
                    stuck: None,
                    error: None,
                },
                Err(e) => SlotOutcome {
                    mapped: None,
                    stuck: None,
                    error: Some(e),
                },
            },
            (Some(from), to) => {
                // A move keeps the slot (one call); otherwise delete first.
                if let Some(to) = to {
                    if set(to, self.size).is_ok() {
                        return SlotOutcome {
                            mapped: Some(to),
                            stuck: None,
                            error: None,
                        };
                    }
                }
                if let Err(e) = set(from, 0) {
                    return SlotOutcome {
                        mapped: None,
                        stuck: Some(from),
                        error: Some(e),
                    };
                }
                match to.map(|to| (to, set(to, self.size))) {
                    Some((to, Ok(()))) => SlotOutcome {
                        mapped: Some(to),
                        stuck: None,
                        error: None,
                    },
                    Some((_, Err(e))) => SlotOutcome {
                        mapped: None,
                        stuck: None,
                        error: Some(e),
                    },
                    None => SlotOutcome {
                        mapped: None,
                        stuck: None,
                        error: None,
                    },
                }
            }
            (None, None) => SlotOutcome {
                mapped: None,
                stuck: None,
                error: None,
            },
        }
    }
}

/// Unmask ioeventfds registered ahead of a placement, without the device's
/// lock: see [`TablePlacement::prepare_unmasks`].
#[derive(Debug)]
pub struct PreparedUnmasks {
    table_gpa: u64,
    set: UnmaskSet,
    /// Entries whose registration did not happen, with why.
    error: Option<Error>,
}

impl TablePlacement {
    /// Creates the shadow and room for the unmask eventfds; nothing is
    /// registered until [`TablePlacement::place`].
    pub fn new(vm: Arc<dyn MsixVm>, config: PlacementConfig) -> Result<Self> {
        let shadow = TableShadow::new(config.table_len)?;
        let entries = (config.table_len / 16) as u16;
        let capacity = if config.policy.absorbs_unmask() {
            config.fast_entries.min(entries)
        } else {
            0
        };
        Ok(TablePlacement {
            retired: Arc::new(RetiredIoevents::new(vm.clone())?),
            vm,
            config,
            shadow: ManuallyDrop::new(shadow),
            unmask: UnmaskEvents::new(capacity)?,
            placed: None,
            effective: config.policy.mechanism(),
            stuck_slot: None,
            fallback: None,
            limit: Policy::Fast,
        })
    }

    /// Caps the policy of the next placements at `limit`.
    pub fn limit_policy(&mut self, limit: Policy) {
        self.limit = limit;
    }

    /// Registers the unmask ioeventfds of a placement at `table_gpa` ahead of
    /// it, for entries `0..count` (a placement's capacity), taking back any
    /// retired at the same addresses. Needs only the VM and the retired
    /// queue, so a BAR move can register while vCPUs keep using the device;
    /// the result goes to [`TablePlacement::relocate`].
    pub fn prepare_unmasks(
        vm: &dyn MsixVm,
        retired: &RetiredIoevents,
        table_gpa: u64,
        count: u16,
    ) -> Result<PreparedUnmasks> {
        let mut prepared = PreparedUnmasks {
            table_gpa,
            set: UnmaskSet::new(count)?,
            error: None,
        };
        for vector in 0..count {
            let gpa = table_gpa + u64::from(vector) * 16 + VECTOR_CONTROL;
            let fd = match retired.reclaim(gpa) {
                Some(fd) => fd,
                None => match register_one(vm, gpa) {
                    Ok(fd) => fd,
                    // Out of fds or memory: the remaining entries' unmasks
                    // exit instead, which is exact.
                    Err(e) => {
                        prepared.error = Some(e);
                        break;
                    }
                },
            };
            if let Err((e, registration)) = prepared.set.install(vector, Retired { gpa, fd }) {
                retired.retire(vec![registration]);
                prepared.error = Some(e);
                break;
            }
        }
        Ok(prepared)
    }

    /// How many unmask ioeventfds a placement of this table can use.
    pub fn unmask_capacity(&self) -> u16 {
        self.unmask.capacity()
    }

    /// The shadow table.
    pub fn shadow(&self) -> &TableShadow {
        &self.shadow
    }

    /// The unmask eventfds of the current placement.
    pub fn unmask_events(&self) -> &UnmaskEvents {
        &self.unmask
    }

    /// The registrations waiting to be undone.
    pub fn retired(&self) -> &Arc<RetiredIoevents> {
        &self.retired
    }

    /// The policy in force: the one asked for, or a lower one when the table
    /// could not be isolated on its own pages or mapped.
    pub fn effective_policy(&self) -> Policy {
        self.effective
    }

    /// Why the last [`TablePlacement::place`] fell below its policy because
    /// the hypervisor refused something (taken: reported once).
    pub fn take_fallback(&mut self) -> Option<Error> {
        self.fallback.take()
    }

    /// Entries whose unmask is absorbed by an ioeventfd right now.
    pub fn fast_entries(&self) -> u16 {
        if self.placed.is_some() {
            self.unmask.installed()
        } else {
            0
        }
    }

    /// Whether `vector`'s unmask write is absorbed by an ioeventfd.
    pub fn absorbs_unmask(&self, vector: u16) -> bool {
        self.placed.is_some() && self.unmask.get(vector).is_some()
    }

    /// Guest physical address of the table, when placed.
    pub fn table_address(&self) -> Option<u64> {
        self.placed.as_ref().map(|p| p.table_gpa)
    }

    /// Whether a memslot the hypervisor refused to delete still maps the
    /// shadow (the shadow is then never unmapped).
    pub fn slot_stuck(&self) -> bool {
        self.stuck_slot.is_some()
    }

    /// Places the table at `table_gpa` and the PBA at `pba_gpa`, in one go
    /// (see [`TablePlacement::relocate`] for the phases and what decides
    /// the policy). Returns the policy in force.
    pub fn place(
        &mut self,
        table_gpa: u64,
        pba_gpa: u64,
        table_pages_shared: bool,
    ) -> Result<Policy> {
        if self.placed.is_some() {
            return Err(Error::State("table already placed: unplace it first"));
        }
        let work = self.relocate(
            Some(Location {
                table_gpa,
                pba_gpa: Some(pba_gpa),
                table_pages_shared,
            }),
            None,
        );
        let outcome = work.run(self.vm.as_ref());
        self.finish(outcome);
        Ok(self.effective)
    }

    /// Takes the table out of the guest's address space in one go (see
    /// [`TablePlacement::relocate`]). When the memslot deletion fails, the
    /// shadow is kept mapped for as long as the memslot may read it, and the
    /// error is returned.
    pub fn unplace(&mut self) -> Result<()> {
        let work = self.relocate(None, None);
        let outcome = work.run(self.vm.as_ref());
        self.finish(outcome);
        match self.fallback.take() {
            Some(e @ Error::Memslot { .. }) if self.stuck_slot.is_some() => Err(e),
            other => {
                self.fallback = other;
                Ok(())
            }
        }
    }

    /// Whether a table at `to` would be mapped read-only: the policy maps
    /// it, host pages are 4 KiB, its address is page aligned, and its pages hold neither the PBA
    /// nor other registers.
    fn maps(&self, to: &Location) -> bool {
        let pages = page_align_up(self.config.table_len);
        let pba_overlaps_pages = to.pba_gpa.is_some_and(|pba| {
            let pba_end = pba.saturating_add(self.config.pba_len);
            let first_page = to.table_gpa / PAGE_SIZE * PAGE_SIZE;
            pba < to.table_gpa.saturating_add(pages) && pba_end > first_page
        });
        self.config.policy.at_most(self.limit).maps_table()
            && crate::host_pages_are_4k()
            && to.table_gpa % PAGE_SIZE == 0
            && !pba_overlaps_pages
            && !to.table_pages_shared
    }

    /// Whether a table at `to` would absorb unmasks, so that its unmask
    /// ioeventfds are worth registering ahead with
    /// [`TablePlacement::prepare_unmasks`]: registrations prepared for a
    /// table that does not absorb would have to be taken back into service
    /// (one left retired would swallow the guest's unmask writes).
    pub fn would_absorb(&self, to: &Location) -> bool {
        self.maps(to) && self.config.policy.at_most(self.limit).absorbs_unmask()
    }

    /// The first phase of placing, moving or removing the table, for the
    /// caller's lock: decode switches to `to` at once (or to nothing), the
    /// old unmask ioeventfds are retired, the new ones (registered ahead by
    /// [`TablePlacement::prepare_unmasks`], or here) installed. The memslot
    /// work is returned, to run with [`SlotWork::run`] outside the lock (a
    /// memslot deletion or move waits for the hypervisor to drop the old
    /// mapping: milliseconds), then [`TablePlacement::finish`] under it.
    /// Meanwhile table reads at the new address exit and are served by the
    /// decode, which is exact.
    ///
    /// The table is mapped read-only only when the policy maps it, its
    /// address is page aligned, and its pages hold neither the PBA nor other
    /// registers; otherwise the policy falls back to `trap`.
    pub fn relocate(
        &mut self,
        to: Option<Location>,
        prepared: Option<PreparedUnmasks>,
    ) -> SlotWork {
        let pages = page_align_up(self.config.table_len);
        // What the memslot maps now: the placement's table, or a slot whose
        // deletion failed earlier.
        let from = match &self.placed {
            Some(p) if p.mapped => Some(p.table_gpa),
            _ => self.stuck_slot,
        };
        // Registrations that failed to undo get another chance now.
        self.retired.retry_stuck();
        let old = self.placed.take();
        // The table stays where it is (a BAR rewritten with its own address,
        // a PBA moving alone): its unmask ioeventfds stay too.
        let stays = matches!((&old, &to), (Some(o), Some(t)) if o.table_gpa == t.table_gpa);
        if old.is_some() && !stays {
            self.retire_current();
        }
        let Some(to) = to else {
            if let Some(p) = prepared {
                self.retire_prepared(p);
            }
            return SlotWork {
                slot: self.config.memslot,
                host_addr: self.shadow.host_address(),
                size: pages,
                from,
                to: None,
            };
        };
        let maps = self.maps(&to);
        self.effective = if maps {
            self.config.policy.at_most(self.limit)
        } else {
            Policy::Trap
        };
        let prepared = match prepared {
            Some(p) if p.table_gpa == to.table_gpa => Some(p),
            Some(p) => {
                self.retire_prepared(p);
                None
            }
            None => None,
        };
        // An unmask ioeventfd at one of the new table's entries is always
        // in the current set, so that the writes it absorbs are serviced:
        // one left retired there would swallow the guest's unmasks until
        // undone. So a table that stays keeps its set whatever the policy
        // (a registration cannot be undone in an instant), and a table
        // placed without absorbing takes back any registration still
        // waiting to be undone at its addresses.
        if stays {
            if let Some(p) = prepared {
                self.retire_prepared(p);
            }
            if self.effective.absorbs_unmask() && self.unmask.installed() == 0 {
                self.prepare_and_install(to.table_gpa);
            }
        } else if self.effective.absorbs_unmask() {
            match prepared {
                Some(p) => self.install_prepared(p),
                None => self.prepare_and_install(to.table_gpa),
            }
        } else {
            if let Some(p) = prepared {
                self.retire_prepared(p);
            }
            self.take_back_retired(to.table_gpa);
        }
        self.placed = Some(Placed {
            table_gpa: to.table_gpa,
            mapped: false,
            shared: to.table_pages_shared,
        });
        SlotWork {
            slot: self.config.memslot,
            host_addr: self.shadow.host_address(),
            size: pages,
            from,
            to: maps.then_some(to.table_gpa),
        }
    }

    /// The last phase, under the caller's lock: records what the memslot
    /// work did. A memslot that could not be created leaves the table's
    /// reads trapped (unmask ioeventfds already registered stay in service);
    /// one that could not be deleted keeps the shadow mapped for good. Both
    /// are reported by [`TablePlacement::take_fallback`].
    pub fn finish(&mut self, outcome: SlotOutcome) {
        self.stuck_slot = outcome.stuck;
        if let Some(e) = outcome.error {
            self.fallback = Some(e);
        }
        let Some(placed) = self.placed.as_mut() else {
            return;
        };
        if outcome.mapped == Some(placed.table_gpa) {
            placed.mapped = true;
        } else {
            // Reads now exit. Unmask ioeventfds already registered stay in
            // service (see `relocate`): those entries still unmask without
            // an exit, exactly as under `fast`.
            self.effective = Policy::Trap;
        }
    }

    fn prepare_and_install(&mut self, table_gpa: u64) {
        match Self::prepare_unmasks(
            self.vm.as_ref(),
            &self.retired,
            table_gpa,
            self.unmask.capacity(),
        ) {
            Ok(p) => self.install_prepared(p),
            Err(e) => {
                // No set (out of fds): the registrations still waiting at
                // this table's entries go back into service in the current
                // set, which needs none; left retired they would swallow
                // the guest's unmasks.
                self.fallback.get_or_insert(e);
                self.take_back_retired(table_gpa);
            }
        }
    }

    /// Puts every registration still waiting to be undone at one of the
    /// entries of a table at `table_gpa` back into service, in the current
    /// set (empty: its registrations were retired when the table moved).
    /// Nothing new is created, so running out of fds cannot leave one
    /// retired under the table, where it would swallow the guest's unmasks.
    fn take_back_retired(&mut self, table_gpa: u64) {
        for vector in 0..self.unmask.capacity() {
            let gpa = table_gpa + u64::from(vector) * 16 + VECTOR_CONTROL;
            if let Some(fd) = self.retired.reclaim(gpa) {
                if let Err((e, registration)) = self.unmask.install(vector, Retired { gpa, fd }) {
                    self.fallback.get_or_insert(e);
                    self.retired.retire(vec![registration]);
                }
            }
        }
    }

    /// Makes a prepared set current. The set it replaces is empty (retired
    /// before) or holds entries of this same table (a table that stays);
    /// whatever it holds is retired at the addresses it is registered at.
    /// When the swap itself fails, the prepared registrations are retired
    /// (at their own addresses) and the current set stays.
    fn install_prepared(&mut self, prepared: PreparedUnmasks) {
        if let Some(e) = prepared.error {
            self.fallback.get_or_insert(e);
        }
        match self.unmask.swap(prepared.set) {
            Ok(mut old) => self.retire_set(&mut old),
            Err((e, mut refused)) => {
                self.fallback.get_or_insert(e);
                self.retire_set(&mut refused);
            }
        }
    }

    /// Retires the current set's registrations, each at the address it is
    /// registered at, and leaves the current set empty. Needs no new fd:
    /// it cannot fail and leave an old set in service.
    fn retire_current(&mut self) {
        let items = self.unmask.take_registrations();
        self.retired.retire(items);
    }

    fn retire_set(&self, set: &mut UnmaskSet) {
        self.retired.retire(set.drain_fds());
    }

    fn retire_prepared(&self, mut prepared: PreparedUnmasks) {
        self.retire_set(&mut prepared.set);
    }

    /// Decodes a guest physical access into the table, or None when it is
    /// not the table's (or the table is not placed). The caller decodes the
    /// PBA first, so a PBA on the table's page decodes as PBA; the rest of
    /// the table's pages is the table's only when nothing else shares them.
    pub fn decode(&self, gpa: u64) -> Option<BarRegion> {
        let placed = self.placed.as_ref()?;
        let in_range = |base: u64, len: u64| gpa >= base && gpa - base < len;
        if in_range(placed.table_gpa, self.config.table_len) {
            return Some(BarRegion::Table(gpa - placed.table_gpa));
        }
        if !placed.shared && in_range(placed.table_gpa, page_align_up(self.config.table_len)) {
            return Some(BarRegion::Table(gpa - placed.table_gpa));
        }
        None
    }
}

fn register_one(vm: &dyn MsixVm, gpa: u64) -> Result<EventFd> {
    let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Event)?;
    vm.register_ioeventfd(&fd, gpa, 0)
        .map_err(|e| Error::Ioeventfd {
            op: "assign",
            gpa,
            errno: e.errno,
        })?;
    Ok(fd)
}

impl Drop for TablePlacement {
    fn drop(&mut self) {
        // Errors here leave nothing to do but to be safe: the VM may already
        // be gone. A memslot that may still map the shadow keeps it mapped.
        let _ = self.unplace();
        let _ = self.retired.undo_all();
        if self.stuck_slot.is_none() {
            // SAFETY: the shadow is dropped exactly once, here, and no
            // memslot maps it any more.
            unsafe { ManuallyDrop::drop(&mut self.shadow) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msix_hypervisor::fake::FakeVm;
    use msix_hypervisor::{FaultyVm, Op, Trigger};

    fn config(policy: Policy, entries: u64) -> PlacementConfig {
        PlacementConfig {
            policy,
            memslot: 1,
            table_len: entries * 16,
            pba_len: entries.div_ceil(64) * 8,
            fast_entries: 256,
        }
    }

    #[test]
    fn a_pba_on_the_table_page_keeps_it_unmapped() {
        let vm = Arc::new(FakeVm::new(4096));
        let mut t = TablePlacement::new(vm.clone(), config(Policy::Fast, 8)).unwrap();
        assert_eq!(t.place(0x1000, 0x1800, false).unwrap(), Policy::Trap);
        assert_eq!(t.decode(0x1000 + 0x7C), Some(BarRegion::Table(0x7C)));
        // The PBA's own bytes are the caller's to decode first.
        assert_eq!(t.decode(0x1900), Some(BarRegion::Table(0x900)));
        assert!(vm.memory_slots().is_empty());
        assert_eq!(vm.ioeventfd_count(), 0);
    }

    #[test]
    fn on_a_shared_page_only_the_table_bytes_are_claimed() {
        let vm = Arc::new(FakeVm::new(4096));
        let mut t = TablePlacement::new(vm, config(Policy::Fast, 4)).unwrap();
        assert_eq!(t.place(0x1200, 0x1400, true).unwrap(), Policy::Trap);
        assert_eq!(t.decode(0x11FC), None);
        assert_eq!(t.decode(0x1200), Some(BarRegion::Table(0)));
        assert_eq!(t.decode(0x1240), None);
        assert_eq!(t.decode(0x1400), None);
    }

    #[test]
    fn unplace_retires_the_ioeventfds_and_a_placement_at_the_same_address_takes_them_back() {
        let vm = Arc::new(FakeVm::new(4096));
        let mut t = TablePlacement::new(vm.clone(), config(Policy::Fast, 8)).unwrap();
        assert_eq!(t.place(0x10000, 0x11000, false).unwrap(), Policy::Fast);
        assert_eq!((t.fast_entries(), vm.ioeventfd_count()), (8, 8));
        t.unplace().unwrap();
        assert_eq!(t.decode(0x10000), None);
        assert!(
            vm.memory_slots().is_empty(),
            "out of the guest's view at once"
        );
        assert_eq!((t.retired().pending(), vm.ioeventfd_count()), (8, 8));
        // Decode on again at the same address: nothing to undo, nothing new.
        t.place(0x10000, 0x11000, false).unwrap();
        assert_eq!((t.retired().pending(), vm.ioeventfd_count()), (0, 8));
        // A move: the old ones wait for a servicer, the new ones are fresh.
        t.unplace().unwrap();
        t.place(0x20000, 0x21000, false).unwrap();
        assert_eq!((t.retired().pending(), vm.ioeventfd_count()), (8, 16));
        t.retired().undo_all().unwrap();
        assert_eq!((t.retired().pending(), vm.ioeventfd_count()), (0, 8));
        drop(t);
        assert_eq!(vm.ioeventfd_count(), 0);
        assert!(vm.memory_slots().is_empty());
    }

    #[test]
    fn a_refused_memslot_falls_back_to_trap_and_a_refused_delete_keeps_the_shadow() {
        let vm = Arc::new(FaultyVm::new(FakeVm::new(4096)));
        let mut t = TablePlacement::new(vm.clone(), config(Policy::Fast, 8)).unwrap();
        vm.fail(Op::SetMemoryRegion, Trigger::Nth(1), libc::EINVAL);
        assert_eq!(t.place(0x10000, 0x11000, false).unwrap(), Policy::Trap);
        assert!(matches!(
            t.take_fallback(),
            Some(Error::Memslot {
                errno: libc::EINVAL,
                ..
            })
        ));
        t.unplace().unwrap();
        assert_eq!(t.place(0x10000, 0x11000, false).unwrap(), Policy::Fast);
        vm.fail(Op::SetMemoryRegion, Trigger::Nth(1), libc::EIO);
        assert!(t.unplace().is_err());
        assert!(t.slot_stuck());
        assert_eq!(
            vm.inner().memory_slots().len(),
            1,
            "the guest can still read it"
        );
        // The shadow is still mapped: reading it is sound.
        assert_eq!(t.shadow().load_dword(0).unwrap(), 0);
        // Placing again moves the stuck slot.
        assert_eq!(t.place(0x30000, 0x31000, false).unwrap(), Policy::Fast);
        assert!(!t.slot_stuck());
    }
}

#[cfg(test)]
mod reclaim_tests {
    use super::*;
    use msix_hypervisor::fake::FakeVm;

    #[test]
    fn a_reclaimed_unmask_eventfd_is_heard_again() {
        let vm = Arc::new(FakeVm::new(4096));
        let mut t = TablePlacement::new(
            vm.clone(),
            PlacementConfig {
                policy: Policy::Fast,
                memslot: 1,
                table_len: 7 * 16,
                pba_len: 8,
                fast_entries: 256,
            },
        )
        .unwrap();
        let at = |table: u64| Location {
            table_gpa: table,
            pba_gpa: Some(table + 0x1000),
            table_pages_shared: false,
        };
        for table in [0x1000_0000u64, 0x1200_0000, 0x1000_0000] {
            let work = t.relocate(Some(at(table)), None);
            let outcome = work.run(vm.as_ref());
            t.finish(outcome);
        }
        assert!(vm.guest_write(0x1000_0000 + 4 * 16 + 12, &0u32.to_le_bytes()));
        let mut ready = Vec::new();
        t.unmask_events().ready(&mut ready).unwrap();
        assert_eq!(ready, vec![4]);
    }
}
