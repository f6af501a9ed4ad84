//! [`MsixAccelerator`]: one device's MSI-X, wired from guest accesses to KVM
//! and the interrupt source, under one lock.
//!
//! The sync protocol (docs/fast-path.md):
//! - every synchronous exit first services the unmasks the ioeventfds
//!   absorbed, so the guest's order of "unmask, then mask" is kept;
//! - a mask detaches the irqfd (or masks at the source) before any route
//!   change; an unmask commits the route before attaching;
//! - after attaching an irqfd the eventfd is drained: KVM injected what the
//!   count held when the irqfd was assigned but leaves the count, which would
//!   otherwise read as pending (and be delivered again) later.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use irqfd_routes::{
    eventfd_drain, eventfd_pending, Gsi, IoctlCounters, IoctlCounts, Irqfd, SharedRouting,
};
use kvm_ioctls::VmFd;
use kvm_msix::{BarRegion, PlacementConfig, Policy, TablePlacement};
use msix_model::{Change, MsiMessage, MsixModel, MsixState, TableEntry};
use vfio_vectors::MsixSource;

use crate::stats::{AccelStats, Counters};
use crate::{AccelConfig, Error, Result};

/// How a vector is kept from delivering while it is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MaskPath {
    /// Not masked: irqfd attached, source unmasked.
    Unmasked,
    /// Masked by detaching the irqfd; signals accumulate in the eventfd.
    IrqfdDetached,
    /// Masked at the source, which latches the pending bit; irqfd untouched.
    Source,
}

#[derive(Debug)]
struct Vector {
    gsi: Gsi,
    irqfd: Irqfd,
    /// The message last staged in the route table; None before the first.
    staged: Option<MsiMessage>,
    /// Staged but possibly not yet committed to KVM.
    route_dirty: bool,
    mask: MaskPath,
}

struct Inner {
    model: MsixModel,
    placement: TablePlacement,
    routes: SharedRouting,
    source: Box<dyn MsixSource>,
    vectors: Vec<Vector>,
    source_masking: bool,
    last_error: Option<String>,
}

/// Everything needed to recreate one device's MSI-X state on another VM:
/// the model (table, Message Control) and the vectors with an interrupt
/// pending while masked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccelState {
    /// The MSI-X model's state.
    pub model: MsixState,
    /// Masked vectors holding a pending interrupt.
    pub pending: Vec<u16>,
}

/// One device's MSI-X acceleration: the model, the table binding, the
/// routes and irqfds, and the interrupt source. Safe to call from several
/// vCPU threads and the service thread at once.
pub struct MsixAccelerator {
    inner: Mutex<Inner>,
    counters: Counters,
    ioctls: Arc<IoctlCounters>,
    config: AccelConfig,
    unmask_fd: RawFd,
}

impl std::fmt::Debug for MsixAccelerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixAccelerator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MsixAccelerator {
    /// Sets up the device: allocates one GSI per vector from `routes`,
    /// creates the shadow table and unmask eventfds, and puts every vector in
    /// the reset state (masked; masked at the source too when source masking
    /// is used). The table is not visible to the guest until
    /// [`MsixAccelerator::place`].
    pub fn new(
        vm: Arc<VmFd>,
        routes: SharedRouting,
        mut source: Box<dyn MsixSource>,
        config: AccelConfig,
        ioctls: Arc<IoctlCounters>,
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
            ioctls.clone(),
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
        {
            let mut table = lock(&routes);
            for _ in 0..config.table_size {
                let gsi = match table.allocate() {
                    Ok(gsi) => gsi,
                    Err(e) => {
                        for v in &vectors {
                            let v: &Vector = v;
                            let _ = table.release(v.gsi);
                        }
                        return Err(e.into());
                    }
                };
                vectors.push(Vector {
                    gsi,
                    irqfd: Irqfd::new(vm.clone(), ioctls.clone()),
                    staged: None,
                    route_dirty: false,
                    mask: MaskPath::IrqfdDetached,
                });
            }
        }
        if source_masking {
            for (i, v) in vectors.iter_mut().enumerate() {
                source.mask(i as u16)?;
                v.mask = MaskPath::Source;
            }
        }
        let unmask_fd = placement.unmask_events().as_raw_fd();
        let mut inner = Inner {
            model,
            placement,
            routes,
            source,
            vectors,
            source_masking,
            last_error: None,
        };
        for v in 0..config.table_size {
            inner.sync_shadow(v)?;
        }
        Ok(MsixAccelerator {
            inner: Mutex::new(inner),
            counters: Counters::default(),
            ioctls,
            config,
            unmask_fd,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configuration this accelerator was built with.
    pub fn config(&self) -> &AccelConfig {
        &self.config
    }

    /// Places the table and PBA at these guest physical addresses (the BAR
    /// base plus the capability's offsets) and returns the policy in force.
    pub fn place(&self, table_gpa: u64, pba_gpa: u64) -> Result<Policy> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        let shared = self.config.table_pages_shared;
        Ok(inner.placement.place(table_gpa, pba_gpa, shared)?)
    }

    /// Moves the table and PBA after the guest reprogrammed the BAR: tears
    /// the old placement down (ioeventfds, memslot) and places anew.
    pub fn move_bar(&self, table_gpa: u64, pba_gpa: u64) -> Result<Policy> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        inner.placement.remove()?;
        let shared = self.config.table_pages_shared;
        Ok(inner.placement.place(table_gpa, pba_gpa, shared)?)
    }

    /// Removes the table from the guest's address space (memory decode
    /// disabled, teardown). Unmasks absorbed before are serviced first.
    pub fn remove(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        Ok(inner.placement.remove()?)
    }

    /// Moves every vector masked at the source to the irqfd path and stops
    /// masking at the source: call it before the device stops decoding
    /// memory or is reset (kernel VFIO: the table mapping goes away and an
    /// access would fault). Each such vector's irqfd is detached first, then
    /// the source unmasked, so its pending message lands in the eventfd and
    /// is delivered on the guest's unmask. Best effort on a source already
    /// gone; the state stays consistent.
    pub fn suspend_source_masking(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        let inner = &mut *inner;
        for i in 0..inner.vectors.len() {
            if inner.vectors[i].mask != MaskPath::Source {
                continue;
            }
            let vector = i as u16;
            let trigger = inner.source.trigger(vector)?;
            inner.vectors[i].irqfd.detach(trigger)?;
            inner.vectors[i].mask = MaskPath::IrqfdDetached;
            // The source forgets the mask; where its mapping is already gone
            // (MaskUnsupported) a reset will have cleared it anyway.
            match inner.source.unmask(vector) {
                Ok(()) | Err(vfio_vectors::Error::MaskUnsupported { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        inner.source.suspend_masking();
        inner.source_masking = false;
        Ok(())
    }

    /// Resumes masking at the source (when configured and the source can);
    /// vectors masked meanwhile stay on the irqfd path until their unmask.
    /// Returns whether source masking is in use again.
    pub fn resume_source_masking(&self) -> bool {
        let mut inner = self.lock();
        let able = inner.source.resume_masking();
        inner.source_masking = able && self.config.source_masking;
        inner.source_masking
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
    fn begin_exit(&self, gpa: u64) -> Option<(MutexGuard<'_, Inner>, BarRegion)> {
        let mut inner = self.lock();
        let region = inner.placement.decode(gpa)?;
        if let Err(e) = inner.service_unmasks(&self.counters) {
            inner.record(&self.counters, e);
        }
        Some((inner, region))
    }

    /// Handles a guest MMIO read that exited to userspace. Returns false when
    /// the address is not this device's table or PBA.
    pub fn mmio_read(&self, gpa: u64, data: &mut [u8]) -> bool {
        let Some((mut inner, region)) = self.begin_exit(gpa) else {
            return false;
        };
        match region {
            BarRegion::Table(offset) => {
                Counters::bump(&self.counters.table_read_exits);
                inner.model.read_table(offset, data);
            }
            BarRegion::Pba(offset) => {
                Counters::bump(&self.counters.pba_read_exits);
                if let Err(e) = inner.refresh_pending(offset, data.len()) {
                    inner.record(&self.counters, e);
                }
                inner.model.read_pba(offset, data);
            }
        }
        true
    }

    /// Handles a guest MMIO write that exited to userspace. Returns false
    /// when the address is not this device's table or PBA.
    pub fn mmio_write(&self, gpa: u64, data: &[u8]) -> bool {
        let Some((mut inner, region)) = self.begin_exit(gpa) else {
            return false;
        };
        match region {
            BarRegion::Table(offset) => {
                self.count_table_write(offset, data);
                let changes = inner.model.write_table(offset, data);
                let result = inner.apply(&self.counters, &changes).and_then(|()| {
                    let first = offset / 16;
                    let last = (offset + data.len().max(1) as u64 - 1) / 16;
                    for v in first..=last.min(u64::from(self.config.table_size).saturating_sub(1)) {
                        inner.sync_shadow(v as u16)?;
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    inner.record(&self.counters, e);
                }
            }
            BarRegion::Pba(offset) => {
                Counters::bump(&self.counters.pba_write_exits);
                let changes = inner.model.write_pba(offset, data);
                if let Err(e) = inner.apply(&self.counters, &changes) {
                    inner.record(&self.counters, e);
                }
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
    /// Enable and Function Mask are the writable bits).
    pub fn write_capability(&self, offset: u64, data: &[u8]) -> Result<()> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        let changes = inner.model.write_capability(offset, data);
        inner.apply(&self.counters, &changes)
    }

    /// Message Control as the guest reads it.
    pub fn message_control(&self) -> u16 {
        self.lock().model.message_control()
    }

    /// Writes Message Control (a 16-bit config write at capability offset 2).
    pub fn write_message_control(&self, value: u16) -> Result<()> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        let changes = inner.model.write_message_control(value);
        inner.apply(&self.counters, &changes)
    }

    /// Function reset: MSI-X disabled, every entry masked and zeroed.
    pub fn reset(&self) -> Result<()> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        let changes = inner.model.reset();
        inner.apply(&self.counters, &changes)?;
        for v in 0..self.config.table_size {
            inner.sync_shadow(v)?;
        }
        Ok(())
    }

    /// The fd a service thread waits on (readable when the guest unmasked an
    /// entry through the fast path); then call [`MsixAccelerator::service_fast_path`].
    pub fn fast_path_fd(&self) -> RawFd {
        self.unmask_fd
    }

    /// Services every unmask the ioeventfds absorbed, in one batch (one route
    /// commit at most). Returns how many were serviced.
    pub fn service_fast_path(&self) -> Result<usize> {
        self.lock().service_unmasks(&self.counters)
    }

    /// The PBA bit of `vector` as the guest would read it now.
    pub fn pending(&self, vector: u16) -> Result<bool> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        inner.pending(vector)
    }

    /// Whether `vector` is effectively masked (entry, function mask or disabled).
    pub fn is_masked(&self, vector: u16) -> Result<bool> {
        Ok(self.lock().model.is_masked(vector)?)
    }

    /// The table entry of `vector` as the model holds it.
    pub fn entry(&self, vector: u16) -> Result<TableEntry> {
        Ok(self.lock().model.entry(vector)?)
    }

    /// How `vector` is currently kept from delivering.
    pub fn mask_path(&self, vector: u16) -> Result<MaskPath> {
        let inner = self.lock();
        inner.vector(vector).map(|v| v.mask)
    }

    /// Whether `vector`'s irqfd is attached to KVM.
    pub fn irqfd_attached(&self, vector: u16) -> Result<bool> {
        let inner = self.lock();
        inner.vector(vector).map(|v| v.irqfd.is_attached())
    }

    /// The route staged for `vector` (its GSI and message), if any.
    pub fn route(&self, vector: u16) -> Result<Option<(Gsi, MsiMessage)>> {
        let inner = self.lock();
        inner.vector(vector).map(|v| v.staged.map(|m| (v.gsi, m)))
    }

    /// The model's full state (what the guest can observe of the function).
    pub fn model_state(&self) -> MsixState {
        self.lock().model.snapshot()
    }

    /// Statistics: exits by kind, fast-path events, mask paths.
    pub fn stats(&self) -> AccelStats {
        self.counters.snapshot()
    }

    /// KVM ioctls issued through this accelerator's counters (shared with
    /// whoever else was given the same counters).
    pub fn ioctls(&self) -> IoctlCounts {
        self.ioctls.snapshot()
    }

    /// Records an error met outside a caller's reach (service thread).
    pub(crate) fn note_error(&self, error: Error) {
        self.lock().record(&self.counters, error);
    }

    /// The last error met while applying a guest access, if any.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    /// Captures the state for live migration. Unmasks already absorbed are
    /// serviced first so the state is the guest's latest.
    pub fn snapshot(&self) -> Result<AccelState> {
        let mut inner = self.lock();
        inner.service_unmasks(&self.counters)?;
        let mut pending = Vec::new();
        for v in 0..self.config.table_size {
            if inner.pending(v)? {
                pending.push(v);
            }
        }
        Ok(AccelState {
            model: inner.model.snapshot(),
            pending,
        })
    }

    /// Restores a snapshot onto this (freshly created) accelerator: the
    /// model, then routes and irqfds exactly as the effective masks require,
    /// then the pending interrupts of masked vectors, which are delivered on
    /// their unmask. All-or-nothing for the model; the routing table is
    /// committed so KVM holds what userspace holds.
    pub fn restore(&self, state: &AccelState) -> Result<()> {
        let mut inner = self.lock();
        for &v in &state.pending {
            if v >= self.config.table_size {
                return Err(Error::Snapshot(format!("pending vector {v} out of range")));
            }
        }
        let changes = inner.model.restore(&state.model)?;
        inner.apply(&self.counters, &changes)?;
        for v in 0..self.config.table_size {
            inner.sync_shadow(v)?;
        }
        for &v in &state.pending {
            if inner.model.is_masked(v)? {
                inner.make_pending(v)?;
            }
        }
        lock(&inner.routes).commit()?;
        for v in inner.vectors.iter_mut() {
            v.route_dirty = false;
        }
        Ok(())
    }
}

fn lock(routes: &SharedRouting) -> MutexGuard<'_, dyn irqfd_routes::MsiRouteTable + 'static> {
    routes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inner {
    fn vector(&self, vector: u16) -> Result<&Vector> {
        self.vectors.get(usize::from(vector)).ok_or(Error::Model(
            msix_model::Error::VectorOutOfRange {
                vector,
                table_size: self.model.table_size(),
            },
        ))
    }

    fn record(&mut self, counters: &Counters, error: Error) {
        Counters::bump(&counters.errors);
        self.last_error = Some(error.to_string());
    }

    fn sync_shadow(&mut self, vector: u16) -> Result<()> {
        let e = self.model.entry(vector)?;
        self.placement.shadow().store_entry(
            vector,
            [e.address_lo, e.address_hi, e.data, e.vector_control],
        )?;
        Ok(())
    }

    /// Services the unmasks the ioeventfds absorbed: the guest wrote 0 to
    /// each such entry's Vector Control, which we now apply to the model.
    fn service_unmasks(&mut self, counters: &Counters) -> Result<usize> {
        let mut ready = Vec::new();
        self.placement.unmask_events().ready(&mut ready)?;
        if ready.is_empty() {
            return Ok(0);
        }
        ready.sort_unstable();
        let mut changes = Vec::new();
        let mut serviced = Vec::new();
        for vector in ready {
            if self.placement.unmask_events().drain(vector)? {
                Counters::bump(&counters.fast_path_unmasks);
                let offset = u64::from(vector) * 16 + 12;
                changes.extend(self.model.write_table(offset, &0u32.to_le_bytes()));
                serviced.push(vector);
            }
        }
        // Per-entry writes only produce Unmasked changes, already ascending.
        self.apply(counters, &changes)?;
        for &v in &serviced {
            self.sync_shadow(v)?;
        }
        Ok(serviced.len())
    }

    /// Carries out the model's changes in the order the protocol needs:
    /// masks, disable, message staging, one commit, enable, unmasks.
    fn apply(&mut self, counters: &Counters, changes: &[Change]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        for change in changes {
            if let Change::Masked { vector } = *change {
                self.mask(counters, vector)?;
            }
        }
        if changes.contains(&Change::Disabled) {
            self.source.disable()?;
            // A disabled function forgets what was pending: the source's own
            // latches are cleared by its disable, and the interrupts parked in
            // the eventfds of irqfd-masked vectors are dropped here, so both
            // mask paths show the guest the same PBA and deliveries.
            for (i, v) in self.vectors.iter().enumerate() {
                if v.mask == MaskPath::IrqfdDetached {
                    eventfd_drain(self.source.trigger(i as u16)?)?;
                }
            }
        }
        for change in changes {
            if let Change::MessageChanged { vector, message } = *change {
                self.stage(vector, message)?;
            }
        }
        let unmasking: Vec<u16> = changes
            .iter()
            .filter_map(|c| match *c {
                Change::Unmasked { vector } => Some(vector),
                _ => None,
            })
            .collect();
        for &v in &unmasking {
            if self.vector(v)?.staged.is_none() {
                let message = self.model.entry(v)?.message();
                self.stage(v, message)?;
            }
        }
        // Commit only when a vector that delivers after this access has a
        // route KVM does not hold yet: routes of masked vectors wait for
        // their unmask, so programming many vectors costs one commit.
        // Only vectors named in this change set can be unmasked with a dirty
        // route: any other unmasked vector was committed when it unmasked.
        let mut needs_commit = false;
        for change in changes {
            if let Change::MessageChanged { vector, .. } | Change::Unmasked { vector } = *change {
                needs_commit |=
                    self.vector(vector)?.route_dirty && !self.model.is_masked(vector)?;
            }
        }
        if needs_commit {
            lock(&self.routes).commit()?;
            for v in self.vectors.iter_mut() {
                v.route_dirty = false;
            }
        }
        if changes.contains(&Change::Enabled) {
            let count = self.model.table_size();
            self.source.enable(count)?;
        }
        for v in unmasking {
            self.unmask(counters, v)?;
        }
        Ok(())
    }

    fn stage(&mut self, vector: u16, message: MsiMessage) -> Result<()> {
        let route = irqfd_routes::MsiMessage {
            address: message.address,
            data: message.data,
        };
        let gsi = self.vector(vector)?.gsi;
        lock(&self.routes).stage(gsi, route)?;
        let v = &mut self.vectors[usize::from(vector)];
        if v.staged != Some(message) {
            v.staged = Some(message);
            v.route_dirty = true;
        }
        Ok(())
    }

    fn mask(&mut self, counters: &Counters, vector: u16) -> Result<()> {
        let idx = usize::from(vector);
        if self.vector(vector)?.mask != MaskPath::Unmasked {
            return Ok(());
        }
        if self.source_masking {
            match self.source.mask(vector) {
                Ok(()) => {
                    self.vectors[idx].mask = MaskPath::Source;
                    Counters::bump(&counters.masks_at_source);
                    return Ok(());
                }
                Err(vfio_vectors::Error::MaskUnsupported { .. }) => {
                    Counters::bump(&counters.source_mask_fallbacks);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let source = &self.source;
        let v = &mut self.vectors[idx];
        v.irqfd.detach(source.trigger(vector)?)?;
        v.mask = MaskPath::IrqfdDetached;
        Counters::bump(&counters.masks_by_irqfd_detach);
        Ok(())
    }

    fn unmask(&mut self, counters: &Counters, vector: u16) -> Result<()> {
        let idx = usize::from(vector);
        let path = self.vector(vector)?.mask;
        if path == MaskPath::Unmasked {
            return Ok(());
        }
        let was_pending = self.pending_at(vector, path)?;
        let trigger = self.source.trigger(vector)?;
        let v = &mut self.vectors[idx];
        if !v.irqfd.is_attached() {
            v.irqfd.attach(trigger, v.gsi)?;
            // KVM injected what the count held at assignment but left the
            // count: drop it so it is neither seen as pending nor delivered twice.
            eventfd_drain(trigger)?;
        }
        if path == MaskPath::Source {
            self.source.unmask(vector)?;
        }
        self.vectors[idx].mask = MaskPath::Unmasked;
        Counters::bump(&counters.unmasks);
        if was_pending {
            Counters::bump(&counters.pending_deliveries);
        }
        Ok(())
    }

    fn pending_at(&self, vector: u16, path: MaskPath) -> Result<bool> {
        Ok(match path {
            MaskPath::Unmasked => false,
            MaskPath::Source => self.source.pending(vector)?,
            MaskPath::IrqfdDetached => eventfd_pending(self.source.trigger(vector)?)?,
        })
    }

    fn pending(&self, vector: u16) -> Result<bool> {
        if !self.model.is_masked(vector)? {
            return Ok(false);
        }
        self.pending_at(vector, self.vector(vector)?.mask)
    }

    /// Makes a masked vector pending again after a restore: the interrupt is
    /// parked in its eventfd with the irqfd detached, and delivered on unmask.
    fn make_pending(&mut self, vector: u16) -> Result<()> {
        let idx = usize::from(vector);
        if self.vector(vector)?.irqfd.is_attached() {
            let trigger = self.source.trigger(vector)?;
            self.vectors[idx].irqfd.detach(trigger)?;
        }
        if self.vectors[idx].mask == MaskPath::Source {
            // The source's own latch cannot be set from outside; park the
            // interrupt in the eventfd and unmask the source so the eventfd
            // path owns this vector until its next mask.
            self.source.unmask(vector)?;
        }
        self.vectors[idx].mask = MaskPath::IrqfdDetached;
        self.source
            .trigger(vector)?
            .write(1)
            .map_err(|e| Error::Source(vfio_vectors::Error::EventFd(e)))?;
        Ok(())
    }

    /// Sets the model's pending bits for the vectors a PBA access covers.
    fn refresh_pending(&mut self, offset: u64, len: usize) -> Result<()> {
        let size = u64::from(self.model.table_size());
        let first = (offset / 8) * 64;
        let last = ((offset + len.max(1) as u64 - 1) / 8) * 64 + 63;
        for v in first..=last.min(size.saturating_sub(1)) {
            let p = self.pending(v as u16)?;
            self.model.set_pending(v as u16, p)?;
        }
        Ok(())
    }
}

impl Drop for MsixAccelerator {
    fn drop(&mut self) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for (i, v) in inner.vectors.iter_mut().enumerate() {
            if let Ok(trigger) = inner.source.trigger(i as u16) {
                let _ = v.irqfd.detach(trigger);
            }
        }
        let mut table = lock(&inner.routes);
        for v in &inner.vectors {
            let _ = table.release(v.gsi);
        }
        let _ = table.commit();
        drop(table);
        let _ = inner.source.disable();
        let _ = inner.placement.remove();
    }
}
