//! [`MsixAccelerator`]: the facade a VMM calls, one per device, and its lock.
//!
//! The sync protocol (docs/fast-path.md):
//! - every synchronous exit first services the unmasks the ioeventfds
//!   absorbed, so the guest's order of "unmask, then mask" is kept;
//! - what an access changed is planned (`plan.rs`, pure) and carried out
//!   (`executor.rs`): masks before any route change, a route committed
//!   before its irqfd is attached, failures contained to their vector and
//!   reported as events;
//! - the shadow the guest reads is brought in step after every access,
//!   whatever failed.
//!
//! Slow hypervisor work stays out of the lock: a BAR move registers the new
//! unmask ioeventfds before taking it, and the old ones are undone by the
//! servicer (each unregistration waits for an SRCU grace period).

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use irqfd_routes::{Irqfd, SharedRouting};
use kvm_msix::{BarRegion, Location, PlacementConfig, Policy, RetiredIoevents, TablePlacement};
use msix_hypervisor::MsixVm;
use msix_model::MsixModel;
use vfio_vectors::MsixSource;

use crate::absorbed::Scope;
use crate::debug::AccelDebug;
use crate::device::Device;
use crate::report::Reporter;
use crate::stats::{AccelStats, Counters};
use crate::vector::{MaskPath, Vector};
use crate::{AccelConfig, Error, EventKind, EventSink, Result};

/// One device's MSI-X acceleration: the model, the table binding, the
/// routes and irqfds, and the interrupt source. Safe to call from several
/// vCPU threads and the service thread at once.
pub struct MsixAccelerator {
    pub(crate) inner: Mutex<Device>,
    counters: Arc<Counters>,
    config: AccelConfig,
    vm: Arc<dyn MsixVm>,
    retired: Arc<RetiredIoevents>,
    unmask_capacity: u16,
    unmask_fd: RawFd,
    servicers: AtomicU32,
    /// Serialises placements, moves and removals (their memslot work runs
    /// outside the device's lock).
    relocations: Mutex<()>,
}

impl std::fmt::Debug for MsixAccelerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixAccelerator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MsixAccelerator {
    /// Sets up the device: the model, the shadow table and room for the
    /// unmask eventfds, every vector in the reset state (masked; masked at
    /// the source too when source masking is used). GSIs are taken only when
    /// a vector first needs a route. The table is not visible to the guest
    /// until [`MsixAccelerator::place`]. Trouble met later is reported to
    /// `events`.
    pub fn new(
        vm: Arc<dyn MsixVm>,
        routes: SharedRouting,
        mut source: Box<dyn MsixSource>,
        config: AccelConfig,
        events: Arc<dyn EventSink>,
    ) -> Result<Self> {
        let model = MsixModel::new(config.table_size, config.table, config.pba)?
            .with_next_pointer(config.next_pointer);
        if source.vector_count() != config.table_size {
            return Err(Error::SizeMismatch {
                source_vectors: source.vector_count(),
                table_size: config.table_size,
            });
        }
        let placement = TablePlacement::new(
            vm.clone(),
            PlacementConfig {
                policy: config.policy,
                memslot: config.memslot,
                table_len: model.table_len(),
                pba_len: model.pba_len(),
                fast_entries: config.fast_entries,
            },
        )?;
        let source_masking = config.source_masking && source.features().maskable;
        let mut vectors = Vec::with_capacity(usize::from(config.table_size));
        for v in 0..config.table_size {
            let mask = if source_masking {
                source.mask(v)?;
                MaskPath::Source
            } else {
                MaskPath::IrqfdDetached
            };
            vectors.push(Vector {
                gsi: None,
                irqfd: Irqfd::new(vm.clone()),
                mask,
                retry: false,
            });
        }
        let counters = Arc::new(Counters::default());
        let unmask_fd = placement.unmask_events().as_raw_fd();
        let retired = placement.retired().clone();
        let unmask_capacity = placement.unmask_capacity();
        let mut device = Device {
            model,
            placement,
            routes,
            source,
            vectors,
            source_masking,
            msi_devid: config.msi_devid,
            reporter: Reporter::new(config.device_id, events, counters.clone()),
            counters: counters.clone(),
            absorbed: Default::default(),
            unmask_batch: usize::from(config.unmask_batch.max(1)),
        };
        device.sync_all_shadows();
        Ok(MsixAccelerator {
            inner: Mutex::new(device),
            counters,
            config,
            vm,
            retired,
            unmask_capacity,
            unmask_fd,
            servicers: AtomicU32::new(0),
            relocations: Mutex::new(()),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Device> {
        // Every update under the lock is completed or contained before a
        // call that could panic: the state stays consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configuration this accelerator was built with.
    pub fn config(&self) -> &AccelConfig {
        &self.config
    }

    fn serviced(&self) -> bool {
        self.servicers.load(Ordering::SeqCst) > 0
    }

    /// Caps the placement at `strict` when `fast` has nobody to service its
    /// absorbed unmasks: without one they would wait for the next exit.
    fn limit_policy(&self, device: &mut Device) {
        if self.config.policy.absorbs_unmask() && !self.serviced() {
            device.placement.limit_policy(Policy::Strict);
            device.reporter.report(
                None,
                EventKind::FastPathUnserviced,
                None,
                "policy fast without a servicer (ServiceThread, FastPathSubscriber or \
                 register_servicer): placing under strict"
                    .into(),
            );
        } else {
            device.placement.limit_policy(Policy::Fast);
            device.reporter.clear(EventKind::FastPathUnserviced);
        }
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

    /// Places, moves or removes (`to` None) the table. The unmask
    /// ioeventfds are registered before the device's lock is taken; under
    /// it the decode switches and the old ioeventfds are retired; the
    /// memslot work (a deletion or move waits for the hypervisor to drop the
    /// old mapping, milliseconds) runs after it is released, meanwhile
    /// table reads exit and are served exactly; the outcome is recorded
    /// under the lock again. vCPUs using the device wait only for the two
    /// short locked steps.
    fn relocate(&self, to: Option<Location>) -> Result<Policy> {
        let _serial = self
            .relocations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.lock().placement.addresses().map(|(table, _)| table);
        let prepared = to
            .filter(|to| Some(to.table_gpa) != current)
            .and_then(|to| self.prepare(to.table_gpa));
        let elapsed_ns = |since: Instant| since.elapsed().as_nanos() as u64;
        let work = {
            let mut device = self.lock();
            let held = Instant::now();
            device.service_unmasks();
            self.limit_policy(&mut device);
            let work = device.placement.relocate(to, prepared);
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
            self.undo_retired();
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

    fn location(&self, table_gpa: u64, pba_gpa: u64) -> Location {
        Location {
            table_gpa,
            pba_gpa,
            table_pages_shared: self.config.table_pages_shared,
        }
    }

    /// Places the table and PBA at these guest physical addresses (the BAR
    /// base plus the capability's offsets) and returns the policy in force.
    /// Under `fast`, attach a servicer first ([`crate::ServiceThread`],
    /// [`crate::FastPathSubscriber`] or [`MsixAccelerator::register_servicer`]):
    /// without one the table is placed under `strict` and
    /// [`EventKind::FastPathUnserviced`] is reported. A memslot the
    /// hypervisor refuses leaves the table under `trap` (reported).
    pub fn place(&self, table_gpa: u64, pba_gpa: u64) -> Result<Policy> {
        if self.lock().placement.addresses().is_some() {
            return Err(Error::Binding(kvm_msix::Error::State(
                "table already placed: use move_bar, or remove it first",
            )));
        }
        self.relocate(Some(self.location(table_gpa, pba_gpa)))
    }

    /// Moves the table and PBA after the guest reprogrammed the BAR (see
    /// [`MsixAccelerator::place`]); vCPUs using the device meanwhile wait
    /// only for two short locked steps, never for an ioeventfd or memslot
    /// call.
    pub fn move_bar(&self, table_gpa: u64, pba_gpa: u64) -> Result<Policy> {
        self.relocate(Some(self.location(table_gpa, pba_gpa)))
    }

    /// Removes the table from the guest's address space (memory decode
    /// disabled, teardown). Unmasks absorbed before are serviced first.
    /// Call [`MsixAccelerator::suspend_source_masking`] before the device
    /// stops decoding memory when the source masks through the device.
    pub fn remove(&self) -> Result<()> {
        self.relocate(None).map(drop)
    }

    /// Moves every vector held at the source to the irqfd path and stops
    /// masking at the source: call it before the device stops decoding
    /// memory or is reset (kernel VFIO: the table mapping goes away and an
    /// access would fault). Each such vector's irqfd is detached first, then
    /// the source unmasked, so its pending message lands in the eventfd and
    /// is delivered on the guest's unmask. A vector whose irqfd cannot be
    /// detached stays held at the source (reported).
    pub fn suspend_source_masking(&self) -> Result<()> {
        let mut device = self.lock();
        device.service_unmasks();
        let device = &mut *device;
        let mut first = None;
        for i in 0..device.vectors.len() {
            if device.vectors[i].mask != MaskPath::Source {
                continue;
            }
            let vector = i as u16;
            let moved = device
                .source
                .trigger(vector)
                .map_err(Error::from)
                .and_then(|t| device.vectors[i].irqfd.detach(t).map_err(Error::from));
            if let Err(e) = moved {
                device.reporter.report(
                    Some(vector),
                    EventKind::MaskFailed,
                    None,
                    format!("moving off source masking: irqfd detach: {e}"),
                );
                first.get_or_insert(e);
                continue;
            }
            device.vectors[i].mask = MaskPath::IrqfdDetached;
            // The source forgets the mask; where its mapping is already gone
            // (MaskUnsupported) a reset will have cleared it anyway.
            match device.source.unmask(vector) {
                Ok(()) | Err(vfio_vectors::Error::MaskUnsupported { .. }) => {}
                Err(e) => {
                    first.get_or_insert(e.into());
                }
            }
        }
        device.source.suspend_masking();
        device.source_masking = false;
        first.map_or(Ok(()), Err)
    }

    /// Resumes masking at the source (when configured and the source can);
    /// vectors masked meanwhile stay on the irqfd path until their unmask.
    /// Returns whether source masking is in use again.
    pub fn resume_source_masking(&self) -> bool {
        let mut device = self.lock();
        let able = device.source.resume_masking();
        device.source_masking = able && self.config.source_masking;
        device.source_masking
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

    /// Whether `gpa` is in this device's table or PBA (as placed).
    pub fn claims(&self, gpa: u64) -> bool {
        self.lock().placement.decode(gpa).is_some()
    }

    /// Starts handling a synchronous exit at `gpa`: takes the device lock,
    /// decodes the address, and services the unmasks absorbed before it (the
    /// guest issued them first, so they apply first). None when not ours.
    fn begin_exit(&self, gpa: u64, len: usize) -> Option<(MutexGuard<'_, Device>, BarRegion)> {
        let mut device = self.lock();
        let region = device.placement.decode(gpa)?;
        let scope = match region {
            // An access to entries depends on their own pending unmasks.
            BarRegion::Table(offset) => {
                let last_entry = self.config.table_size.saturating_sub(1);
                let first = (offset / 16).min(u64::from(last_entry)) as u16;
                let last =
                    ((offset + len.max(1) as u64 - 1) / 16).min(u64::from(last_entry)) as u16;
                Scope::Entries(first..=last)
            }
            // Pending bits depend on every entry's mask.
            BarRegion::Pba(_) => Scope::All,
        };
        device.service(scope);
        Some((device, region))
    }

    /// Handles a guest MMIO read that exited to userspace. Returns false when
    /// the address is not this device's table or PBA.
    pub fn mmio_read(&self, gpa: u64, data: &mut [u8]) -> bool {
        let Some((mut device, region)) = self.begin_exit(gpa, data.len()) else {
            return false;
        };
        match region {
            BarRegion::Table(offset) => {
                Counters::bump(&self.counters.table_read_exits);
                device.model.read_table(offset, data);
            }
            BarRegion::Pba(offset) => {
                Counters::bump(&self.counters.pba_read_exits);
                // Vectors are in range by construction; a failure here means
                // the source cannot say, and the model's bits stand.
                let _ = device.refresh_pending(offset, data.len());
                device.model.read_pba(offset, data);
            }
        }
        true
    }

    /// Handles a guest MMIO write that exited to userspace. Returns false
    /// when the address is not this device's table or PBA. Whatever the
    /// write does to the hypervisor or the source, a failure stays with the
    /// vector concerned and is reported as an event.
    pub fn mmio_write(&self, gpa: u64, data: &[u8]) -> bool {
        let Some((mut device, region)) = self.begin_exit(gpa, data.len()) else {
            return false;
        };
        match region {
            BarRegion::Table(offset) => {
                self.count_table_write(offset, data);
                if device.defer_unmask_write(offset, data) {
                    return true;
                }
                let changes = device.model.write_table(offset, data);
                device.apply(&changes);
                let size = u64::from(self.config.table_size);
                let first = offset / 16;
                let last = (offset + data.len().max(1) as u64 - 1) / 16;
                for v in first..=last.min(size.saturating_sub(1)) {
                    device.sync_shadow(v as u16);
                }
            }
            BarRegion::Pba(offset) => {
                Counters::bump(&self.counters.pba_write_exits);
                let changes = device.model.write_pba(offset, data);
                device.apply(&changes);
            }
        }
        true
    }

    fn count_table_write(&self, offset: u64, data: &[u8]) {
        let counter = match (data.len(), offset % 16) {
            (4, 12) if data[0] & 1 == 1 => &self.counters.mask_write_exits,
            (4, 12) => &self.counters.unmask_write_exits,
            (4, 0 | 4 | 8) => &self.counters.message_write_exits,
            _ => &self.counters.other_table_write_exits,
        };
        Counters::bump(counter);
    }

    /// Reads the MSI-X capability in config space (`offset` from its start).
    pub fn read_capability(&self, offset: u64, data: &mut [u8]) {
        self.lock().model.read_capability(offset, data);
    }

    /// Writes the MSI-X capability in config space (Message Control's MSI-X
    /// Enable and Function Mask are the writable bits). Guest-driven: what
    /// fails is contained and reported as an event; the first failure is
    /// also returned.
    pub fn write_capability(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut device = self.lock();
        device.service_unmasks();
        let changes = device.model.write_capability(offset, data);
        device.apply(&changes).into_result()
    }

    /// Message Control as the guest reads it.
    pub fn message_control(&self) -> u16 {
        self.lock().model.message_control()
    }

    /// Writes Message Control (a 16-bit config write at capability offset 2).
    /// As [`MsixAccelerator::write_capability`].
    pub fn write_message_control(&self, value: u16) -> Result<()> {
        let mut device = self.lock();
        device.service_unmasks();
        let changes = device.model.write_message_control(value);
        device.apply(&changes).into_result()
    }

    /// Function reset: MSI-X disabled, every entry masked and zeroed, every
    /// GSI given back.
    pub fn reset(&self) -> Result<()> {
        let mut device = self.lock();
        device.service_unmasks();
        let changes = device.model.reset();
        let outcome = device.apply(&changes);
        device.sync_all_shadows();
        outcome.into_result()
    }

    /// The fd a servicer waits on: readable when the guest unmasked an
    /// entry through the fast path; then call
    /// [`MsixAccelerator::service_fast_path`].
    pub fn fast_path_fd(&self) -> RawFd {
        self.unmask_fd
    }

    /// The fd a servicer waits on for retired unmask ioeventfds to undo;
    /// then call [`MsixAccelerator::undo_retired`].
    pub fn retired_fd(&self) -> RawFd {
        self.retired.notify_fd()
    }

    /// Applies every unmask the ioeventfds absorbed, in one batch (one route
    /// commit at most). Returns how many were applied. A servicer calls it
    /// when the coalescing window of [`MsixAccelerator::service_fast_path_cheap`]
    /// ends.
    pub fn service_fast_path(&self) -> usize {
        self.lock().service_unmasks()
    }

    /// What a servicer calls when [`MsixAccelerator::fast_path_fd`] wakes
    /// it: applies the absorbed unmasks that need no route commit (and all
    /// of them once [`AccelConfig::unmask_batch`] wait). Returns whether
    /// some still wait: the servicer then calls
    /// [`MsixAccelerator::service_fast_path`] after
    /// [`AccelConfig::unmask_coalescing`] (or earlier). With a zero window
    /// everything is applied at once.
    pub fn service_fast_path_cheap(&self) -> bool {
        let mut device = self.lock();
        if self.config.unmask_coalescing.is_zero() {
            device.service(Scope::All);
        } else {
            device.service(Scope::Cheap);
        }
        device.unmasks_waiting()
    }

    /// Undoes the retired unmask ioeventfds, without the device's lock held
    /// across the hypervisor calls. Failures are reported as events.
    pub fn undo_retired(&self) {
        self.retired.clear_notification();
        let mut undone = 0u64;
        let mut failure = None;
        // Those that fail are kept aside (not retried in this loop).
        while let Some(result) = self.retired.undo_one() {
            match result {
                Ok(()) => undone += 1,
                Err(e) => failure = Some(e),
            }
        }
        self.counters
            .ioeventfds_retired
            .fetch_add(undone, Ordering::Relaxed);
        if let Some(e) = failure {
            let errno = match &e {
                kvm_msix::Error::Ioeventfd { errno, .. } => Some(*errno),
                _ => None,
            };
            self.lock()
                .reporter
                .report(None, EventKind::TeardownFailed, errno, e.to_string());
        }
    }

    /// Declares a servicer: something that waits on
    /// [`MsixAccelerator::fast_path_fd`] and [`MsixAccelerator::retired_fd`]
    /// and calls [`MsixAccelerator::service_fast_path`] and
    /// [`MsixAccelerator::undo_retired`]. [`crate::ServiceThread`] and
    /// [`crate::FastPathSubscriber`] do this themselves.
    pub fn register_servicer(&self) {
        self.servicers.fetch_add(1, Ordering::SeqCst);
    }

    /// The servicer declared with [`MsixAccelerator::register_servicer`] is
    /// gone. When it was the last and the table is placed under `fast`,
    /// [`EventKind::FastPathUnserviced`] is reported: absorbed unmasks then
    /// take effect at the device's next exit only, and the next placement
    /// or BAR move runs under `strict`.
    pub fn unregister_servicer(&self) {
        let before = self
            .servicers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if before != Ok(1) {
            return;
        }
        let mut device = self.lock();
        device.service_unmasks();
        if device.placement.fast_entries() > 0 {
            device.reporter.report(
                None,
                EventKind::FastPathUnserviced,
                None,
                "the fast path's servicer stopped: absorbed unmasks now wait for the \
                 device's next exit; the next placement runs under strict"
                    .into(),
            );
        }
    }

    /// The PBA bit of `vector` as the guest would read it now.
    pub fn pending(&self, vector: u16) -> Result<bool> {
        let mut device = self.lock();
        device.service_unmasks();
        device.pending(vector)
    }

    /// Statistics: exits by kind, fast-path events, mask paths, events.
    pub fn stats(&self) -> AccelStats {
        self.counters.snapshot()
    }

    /// Introspection for tests and tools (mask paths, irqfds, routes, the
    /// model's state); a VMM does not need it.
    pub fn debug(&self) -> AccelDebug<'_> {
        AccelDebug::new(self)
    }
}

impl crate::device::Outcome {
    pub(crate) fn into_result(self) -> Result<()> {
        self.first_error.map_or(Ok(()), Err)
    }
}

impl Drop for MsixAccelerator {
    fn drop(&mut self) {
        let mut device = self.lock();
        let device = &mut *device;
        for (i, v) in device.vectors.iter_mut().enumerate() {
            if let Ok(trigger) = device.source.trigger(i as u16) {
                let _ = v.irqfd.detach(trigger);
            }
        }
        for v in &mut device.vectors {
            if let Some(gsi) = v.gsi.take() {
                let _ = device.routes.release(gsi);
            }
        }
        let _ = device.routes.commit();
        let _ = device.source.disable();
        // The placement's own drop deletes the memslot and undoes every
        // ioeventfd, retired or not.
    }
}
