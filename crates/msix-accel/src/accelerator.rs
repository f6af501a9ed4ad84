//! [`MsixAccelerator`]: the facade a VMM calls, one per device, and its lock.
//! Its entry points are grouped by concern: `relocation.rs` (where table
//! and PBA are), `exits.rs` (the guest's MMIO exits), `fast_path.rs` (what
//! a servicer calls), `source_masking.rs`; config space and reset are here.
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
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use irqfd_routes::{Irqfd, SharedRouting};
use kvm_msix::{PlacementConfig, RetiredIoevents, TablePlacement};
use msix_hypervisor::MsixVm;
use msix_model::MsixModel;
use vfio_vectors::MsixSource;

use crate::auto_policy::AutoState;
use crate::claims::Claims;
use crate::debug::AccelDebug;
use crate::device::Device;
use crate::rate::{TokenBucket, COMMIT_BURST, COMMIT_INTERVAL};
use crate::relocation::BarBases;
use crate::report::Reporter;
use crate::retry::RetryTimer;
use crate::stats::{AccelStats, Counters};
use crate::vector::{MaskPath, Vector};
use crate::{AccelConfig, Error, EventSink, Result};

/// One device's MSI-X acceleration: the model, the table binding, the
/// routes and irqfds, and the interrupt source. Safe to call from several
/// vCPU threads and the service thread at once.
pub struct MsixAccelerator {
    pub(crate) inner: Mutex<Device>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) config: AccelConfig,
    pub(crate) vm: Arc<dyn MsixVm>,
    pub(crate) retired: Arc<RetiredIoevents>,
    pub(crate) unmask_capacity: u16,
    pub(crate) unmask_fd: RawFd,
    /// The retry timer's fd (None: the host refused a timer).
    pub(crate) retry_fd: Option<RawFd>,
    pub(crate) servicers: AtomicU32,
    /// The CPU the last mask exit ran on (-1: none yet, or polling off): a
    /// polling servicer on that CPU would only take it from the vCPU.
    pub(crate) mask_exit_cpu: AtomicI32,
    /// When the accelerator was made: the origin of `last_mask_exit_ns`.
    pub(crate) epoch: Instant,
    /// Nanoseconds from `epoch` to the last mask exit, plus one (0: none
    /// yet, or deferral off).
    pub(crate) last_mask_exit_ns: AtomicU64,
    /// The BAR bases; its lock serialises placements, moves and removals
    /// (their memslot work runs outside the device's lock).
    pub(crate) relocations: Mutex<BarBases>,
    /// What the device may claim, for exits that are not its own.
    pub(crate) claimed: Claims,
    /// The table was placed under `strict` because retired ioeventfds
    /// piled up: the servicer places it again once they are undone.
    pub(crate) throttled: AtomicBool,
    /// Under `auto`: the last choice and when the host was measured.
    pub(crate) auto: Mutex<AutoState>,
}

impl std::fmt::Debug for MsixAccelerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixAccelerator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MsixAccelerator {
    /// A mask write exited: note when, for the servicer's deferral.
    pub(crate) fn note_mask_exit(&self) {
        if !self.config.unmask_deferral.is_zero() {
            let ns = self.epoch.elapsed().as_nanos() as u64;
            self.last_mask_exit_ns.store(ns + 1, Ordering::Relaxed);
        }
    }

    /// How long ago the guest's last mask exit was (None: none noted).
    pub(crate) fn since_mask_exit(&self) -> Option<Duration> {
        let at = self
            .last_mask_exit_ns
            .load(Ordering::Relaxed)
            .checked_sub(1)?;
        let now = self.epoch.elapsed().as_nanos() as u64;
        Some(Duration::from_nanos(now.saturating_sub(at)))
    }

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
                throttled: false,
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
            vm: vm.clone(),
            source,
            vectors,
            source_masking,
            pba_gpa: None,
            msi_devid: config.msi_devid,
            reporter: Reporter::new(config.device_id, events, counters.clone()),
            counters: counters.clone(),
            absorbed: Default::default(),
            unmask_batch: usize::from(config.unmask_batch.max(1)),
            retry_timer: RetryTimer::new(),
            commit_budget: TokenBucket::new(
                u32::from(config.table_size) + COMMIT_BURST,
                COMMIT_INTERVAL,
            ),
        };
        let retry_fd = device.retry_timer.fd();
        device.sync_all_shadows();
        Ok(MsixAccelerator {
            inner: Mutex::new(device),
            counters,
            config,
            vm,
            retired,
            unmask_capacity,
            unmask_fd,
            retry_fd,
            servicers: AtomicU32::new(0),
            mask_exit_cpu: AtomicI32::new(-1),
            epoch: Instant::now(),
            last_mask_exit_ns: AtomicU64::new(0),
            relocations: Mutex::new(BarBases::default()),
            claimed: Claims::default(),
            throttled: AtomicBool::new(false),
            auto: Mutex::new(AutoState::default()),
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
        device.apply_host(&changes).into_result()
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
        device.apply_host(&changes).into_result()
    }

    /// Function reset: MSI-X disabled, every entry masked and zeroed, every
    /// GSI given back.
    pub fn reset(&self) -> Result<()> {
        let mut device = self.lock();
        device.service_unmasks();
        let changes = device.model.reset();
        let outcome = device.apply_host(&changes);
        device.sync_all_shadows();
        outcome.into_result()
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
