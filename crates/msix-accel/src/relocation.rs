//! Where the table and PBA are in the guest's address space: placing,
//! moving (BAR writes, table and PBA each following its own BAR) and
//! removing them, and the policy each placement gets.

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Instant;

use kvm_msix::{Location, Policy, TablePlacement};
use msix_model::BarOffset;

use crate::device::Device;
use crate::stats::Counters;
use crate::{Error, EventKind, MsixAccelerator, Result};

/// The BAR bases the VMM last reported, by BIR (None: not decoding).
pub(crate) type BarBases = [Option<u64>; 6];

/// Retired unmask ioeventfds a placement under `fast` may find beyond one
/// placement's worth (see [`MsixAccelerator::retired_cap`]).
pub const RETIRED_SLACK: usize = 32;

impl MsixAccelerator {
    pub(crate) fn serviced(&self) -> bool {
        self.servicers.load(Ordering::SeqCst) > 0
    }

    /// Caps the placement at `to` at `strict` when `fast` has nobody to
    /// service its absorbed unmasks (without one they would wait for the
    /// next exit), or when the unmask ioeventfds earlier placements retired
    /// elsewhere than `to` are not undone yet and reach
    /// [`MsixAccelerator::retired_cap`]: a guest moving its BAR in a loop
    /// then gets `strict` placements (no new ioeventfd, nothing more
    /// retired) until the servicer catches up, so the VMM's fds stay
    /// bounded and no other device is slowed. Those waiting at `to` do not
    /// count: a placement there takes them back.
    fn limit_policy(&self, device: &mut Device, to: Option<&Location>) {
        if !self.config.policy.absorbs_unmask() {
            device.placement.limit_policy(Policy::Fast);
            return;
        }
        let here = to.map_or(0, |to| {
            let end = to
                .table_gpa
                .saturating_add(u64::from(self.unmask_capacity) * 16);
            self.retired.waiting_in(to.table_gpa..end)
        });
        let backlog = self.retired.backlog().saturating_sub(here);
        let cap = self.retired_cap();
        if !self.serviced() {
            device.placement.limit_policy(Policy::Strict);
            device.reporter.report(
                None,
                EventKind::FastPathUnserviced,
                None,
                format!(
                    "policy {} without a servicer (ServiceThread, FastPathSubscriber or \
                     register_servicer): placing under strict",
                    self.config.policy
                ),
            );
        } else if backlog >= cap {
            device.placement.limit_policy(Policy::Strict);
            self.throttled.store(true, Ordering::SeqCst);
            device.reporter.clear(EventKind::FastPathUnserviced);
            device.reporter.report(
                None,
                EventKind::RelocationThrottled,
                None,
                format!(
                    "{backlog} retired unmask ioeventfds wait to be undone (cap {cap}): \
                     BAR moves place the table under strict until the servicer catches up"
                ),
            );
        } else {
            device.placement.limit_policy(self.auto_choice());
            device.reporter.clear(EventKind::FastPathUnserviced);
            device.reporter.clear(EventKind::RelocationThrottled);
        }
    }

    /// The most retired unmask ioeventfds (waiting or stuck, elsewhere than
    /// the destination) a placement under `fast` may find: one placement's
    /// worth, the fast entries C, plus [`RETIRED_SLACK`] (a move followed
    /// by a decode-off and -on stays `fast`). A move that finds as many
    /// places the table under `strict`; the servicer, once it has undone
    /// the backlog, places the table again under `fast`. So a device holds
    /// fewer than 3C + 32 unmask eventfds, current and retired together: a
    /// fast move finds under C + 32 waiting and adds one set of C, the
    /// throttled move after it retires that move's set and adds none.
    pub fn retired_cap(&self) -> usize {
        usize::from(self.unmask_capacity) + RETIRED_SLACK
    }

    /// After the servicer undid retired registrations: a table placed under
    /// `strict` by the throttle is placed again where it is, under `fast`,
    /// once the backlog is under the cap.
    pub(crate) fn resume_after_throttle(&self) {
        if !self.throttled.load(Ordering::SeqCst) || self.retired.backlog() >= self.retired_cap() {
            return;
        }
        let bars = self.bars();
        self.throttled.store(false, Ordering::SeqCst);
        let (table, pba) = {
            let device = self.lock();
            (device.placement.table_address(), device.pba_gpa)
        };
        if table.is_some() {
            // A failure here is reported like any placement's.
            let _ = self.relocate(table, pba);
        }
        drop(bars);
    }

    fn prepare(&self, table_gpa: u64) -> Option<kvm_msix::PreparedUnmasks> {
        (self.config.policy.absorbs_unmask() && self.serviced())
            .then(|| {
                TablePlacement::prepare_unmasks(
                    self.vm.as_ref(),
                    &self.retired,
                    table_gpa,
                    self.unmask_capacity,
                )
            })
            // A set that cannot even be created is tried again under the lock,
            // where its failure is reported.
            .and_then(|prepared| prepared.ok())
    }

    /// Places, moves or removes (`table_gpa` None) the table, and puts the
    /// PBA at `pba_gpa` (None: not decoded). The unmask
    /// ioeventfds are registered before the device's lock is taken; under
    /// it the decode switches and the old ioeventfds are retired; the
    /// memslot work (a deletion or move waits for the hypervisor to drop the
    /// old mapping, milliseconds) runs after it is released, meanwhile
    /// table reads exit and are served exactly; the outcome is recorded
    /// under the lock again. vCPUs using the device wait only for the two
    /// short locked steps.
    ///
    /// The caller holds the BAR bases' lock, which serialises relocations.
    fn relocate(&self, table_gpa: Option<u64>, pba_gpa: Option<u64>) -> Result<Policy> {
        let to = table_gpa.map(|table| self.location(table, pba_gpa));
        if to.is_some() {
            self.auto_recheck();
        }
        let worth_preparing = {
            let mut device = self.lock();
            self.limit_policy(&mut device, to.as_ref());
            let current = device.placement.table_address();
            to.filter(|to| Some(to.table_gpa) != current && device.placement.would_absorb(to))
        };
        let prepared = worth_preparing.and_then(|to| self.prepare(to.table_gpa));
        let elapsed_ns = |since: Instant| since.elapsed().as_nanos() as u64;
        let work = {
            let mut device = self.lock();
            let held = Instant::now();
            device.service_unmasks();
            self.limit_policy(&mut device, to.as_ref());
            device.pba_gpa = pba_gpa;
            let work = device.placement.relocate(to, prepared);
            self.claimed.set(
                to.map(|t| {
                    t.table_gpa
                        ..t.table_gpa
                            .saturating_add(kvm_msix::page_align_up(self.config.table_len()))
                }),
                pba_gpa.map(|p| p..p.saturating_add(self.config.pba_len())),
            );
            Counters::record_max(&self.counters.relocation_lock_max_ns, elapsed_ns(held));
            work
        };
        let slot = Instant::now();
        let outcome = work.run(self.vm.as_ref());
        Counters::record_max(&self.counters.relocation_slot_max_ns, elapsed_ns(slot));
        let policy = {
            let mut device = self.lock();
            let held = Instant::now();
            device.placement.finish(outcome);
            self.report_placement(&mut device);
            let policy = device.placement.effective_policy();
            Counters::record_max(&self.counters.relocation_lock_max_ns, elapsed_ns(held));
            policy
        };
        if !self.serviced() {
            // The caller holds the BAR bases' lock: undo only.
            self.undo_backlog();
        }
        Ok(policy)
    }

    fn report_placement(&self, device: &mut Device) {
        let stuck = device.placement.slot_stuck();
        let policy = device.placement.effective_policy();
        if let Some(e) = device.placement.take_fallback() {
            let errno = match &e {
                kvm_msix::Error::Memslot { errno, .. }
                | kvm_msix::Error::Ioeventfd { errno, .. } => Some(*errno),
                _ => None,
            };
            if stuck {
                device.reporter.report(
                    None,
                    EventKind::MemslotStuck,
                    errno,
                    format!("the table's old memslot stays mapped (its shadow is kept): {e}"),
                );
            } else {
                device.reporter.report(
                    None,
                    EventKind::PlacementDegraded,
                    errno,
                    format!("placed under {policy}: {e}"),
                );
            }
        } else if !stuck {
            device.reporter.clear(EventKind::MemslotStuck);
        }
    }

    /// The table's location when it is at `table_gpa` and the PBA at
    /// `pba_gpa`. Its pages are shared (only the table's own bytes are
    /// decoded, and it is never mapped) when the configuration says so,
    /// when the table does not start on a page boundary (registers precede
    /// it on its page), or when the table's BAR is smaller than a page.
    fn location(&self, table_gpa: u64, pba_gpa: Option<u64>) -> Location {
        let page = kvm_msix::PAGE_SIZE;
        let shared = self.config.table_pages_shared
            || u64::from(self.config.table.offset) % page != 0
            || self.config.table_bar_size.is_some_and(|size| size < page);
        Location {
            table_gpa,
            pba_gpa,
            table_pages_shared: shared,
        }
    }

    fn bars(&self) -> MutexGuard<'_, BarBases> {
        self.relocations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records the BAR bases implied by table and PBA addresses given
    /// directly, so that a later [`MsixAccelerator::set_bar`] of one BAR
    /// keeps the other where it is.
    fn record_bars(&self, bars: &mut BarBases, table_gpa: u64, pba_gpa: u64) {
        let table = self.config.table;
        let pba = self.config.pba;
        bars[usize::from(pba.bir)] = Some(pba_gpa.wrapping_sub(u64::from(pba.offset)));
        bars[usize::from(table.bir)] = Some(table_gpa.wrapping_sub(u64::from(table.offset)));
    }

    /// The table's and the PBA's addresses given the BAR bases: None for
    /// one whose BAR does not decode, or would end past the top of the
    /// address space (a guest can program any base).
    fn addresses(&self, bars: &BarBases) -> (Option<u64>, Option<u64>) {
        let at = |region: BarOffset, len: u64| {
            let base = bars[usize::from(region.bir)]?;
            let gpa = base.checked_add(u64::from(region.offset))?;
            gpa.checked_add(len).map(|_| gpa)
        };
        (
            at(self.config.table, self.config.table_len()),
            at(self.config.pba, self.config.pba_len()),
        )
    }

    /// Places the table and PBA at these guest physical addresses (the BAR
    /// base plus the capability's offsets) and returns the policy in force.
    /// Under `fast`, attach a servicer first ([`crate::ServiceThread`],
    /// [`crate::FastPathSubscriber`] or [`MsixAccelerator::register_servicer`]):
    /// without one the table is placed under `strict` and
    /// [`EventKind::FastPathUnserviced`] is reported. A memslot the
    /// hypervisor refuses leaves the table under `trap` (reported). For
    /// table and PBA in different BARs, [`MsixAccelerator::set_bar`] is
    /// simpler.
    pub fn place(&self, table_gpa: u64, pba_gpa: u64) -> Result<Policy> {
        let mut bars = self.bars();
        if self.lock().placement.table_address().is_some() {
            return Err(Error::Binding(kvm_msix::Error::State(
                "table already placed: use move_bar or set_bar, or remove it first",
            )));
        }
        self.record_bars(&mut bars, table_gpa, pba_gpa);
        self.relocate(Some(table_gpa), Some(pba_gpa))
    }

    /// Moves the table and PBA after the guest reprogrammed the BAR (see
    /// [`MsixAccelerator::place`]); vCPUs using the device meanwhile wait
    /// only for two short locked steps, never for an ioeventfd or memslot
    /// call.
    pub fn move_bar(&self, table_gpa: u64, pba_gpa: u64) -> Result<Policy> {
        let mut bars = self.bars();
        self.record_bars(&mut bars, table_gpa, pba_gpa);
        self.relocate(Some(table_gpa), Some(pba_gpa))
    }

    /// Tells the accelerator where BAR `bir` now decodes: its base address
    /// as the guest programmed it, or None when it does not decode (memory
    /// decode off, BAR being sized or unassigned). The table and the PBA
    /// follow their own BARs, which may differ; a BAR holding neither is
    /// ignored. Call it for every BAR write the guest makes and for every
    /// memory-decode change (None for each BAR on disable). Returns the
    /// policy in force for the table (see [`MsixAccelerator::place`]).
    pub fn set_bar(&self, bir: u8, base: Option<u64>) -> Result<Policy> {
        let mut bars = self.bars();
        let slot = bars
            .get_mut(usize::from(bir))
            .ok_or(Error::InvalidBar(bir))?;
        *slot = base;
        if bir != self.config.table.bir && bir != self.config.pba.bir {
            return Ok(self.policy());
        }
        let (table, pba) = self.addresses(&bars);
        let unchanged = {
            let device = self.lock();
            device.placement.table_address() == table && device.pba_gpa == pba
        };
        if unchanged {
            return Ok(self.policy());
        }
        self.relocate(table, pba)
    }

    /// Removes the table and PBA from the guest's address space (memory
    /// decode disabled, teardown) and forgets the BAR bases. Unmasks
    /// absorbed before are serviced first. Call
    /// [`MsixAccelerator::suspend_source_masking`] before the device stops
    /// decoding memory when the source masks through the device.
    pub fn remove(&self) -> Result<()> {
        let mut bars = self.bars();
        *bars = BarBases::default();
        self.relocate(None, None).map(drop)
    }

    /// Entries whose unmask is absorbed by an ioeventfd in the current
    /// placement (0 when not placed or not under `fast`).
    pub fn fast_entries(&self) -> u16 {
        self.lock().placement.fast_entries()
    }

    /// The policy in force for the current placement.
    pub fn policy(&self) -> Policy {
        self.lock().placement.effective_policy()
    }
}
