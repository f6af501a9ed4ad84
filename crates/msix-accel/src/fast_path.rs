//! What a servicer calls: the unmasks KVM absorbed under `fast` are
//! applied, and the retired unmask ioeventfds undone, off the vCPU threads.
//! [`crate::ServiceThread`] and [`crate::FastPathSubscriber`] drive these.

use std::os::unix::io::RawFd;
use std::sync::atomic::Ordering;

use crate::absorbed::Scope;
use crate::{EventKind, MsixAccelerator};

impl MsixAccelerator {
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
    /// of them once [`crate::AccelConfig::unmask_batch`] wait). Returns whether
    /// some still wait: the servicer then calls
    /// [`MsixAccelerator::service_fast_path`] after
    /// [`crate::AccelConfig::unmask_coalescing`] (or earlier). With a zero window
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

    /// What a servicer about to defer the absorbed unmasks
    /// ([`crate::AccelConfig::unmask_deferral`]) does first: takes them in
    /// (drained, each shown unmasked in the shadow, so the guest reads back
    /// what it wrote from this look on) and says whether one of them must
    /// not be deferred: a message held behind it (or the source cannot
    /// say), or a route commit it needs. They are then applied as without
    /// deferral.
    pub(crate) fn look_before_deferring(&self) -> bool {
        self.lock().look_at_absorbed()
    }

    /// The fd a servicer waits on for held vectors to retry (see
    /// [`crate::RETRY_MAX`]); then call [`MsixAccelerator::retry_held`].
    /// None when the host refused a timer: retries then wait for the
    /// device's next exit.
    pub fn retry_fd(&self) -> Option<RawFd> {
        self.retry_fd
    }

    /// Retries the vectors a failure left held (no GSI, a refused commit,
    /// irqfd or source call), without any guest access: what they held is
    /// delivered once the cause has cleared. Retired unmask ioeventfds KVM
    /// refused to undo are queued for the servicer again. Returns whether some still
    /// wait (the timer is then armed again, with a longer delay).
    pub fn retry_held(&self) -> bool {
        // Retired registrations KVM refused to undo get another try too
        // (the servicer undoes them; a new failure arms the timer again).
        if self.retired.stuck() > 0 {
            self.retired.retry_stuck();
        }
        let mut device = self.lock();
        device.retry_timer.fired();
        device.apply(&[]);
        device.vectors.iter().any(|v| v.retry)
    }

    /// Undoes the retired unmask ioeventfds, without the device's lock held
    /// across the hypervisor calls. Failures are reported as events. A
    /// table the BAR-move throttle placed under `strict` is placed again
    /// under `fast` once the backlog is under the cap.
    pub fn undo_retired(&self) {
        self.undo_backlog();
        self.resume_after_throttle();
    }

    /// Undoes the retired unmask ioeventfds (what [`MsixAccelerator::undo_retired`]
    /// does, without placing the table again: for callers holding the BAR
    /// bases' lock).
    pub(crate) fn undo_backlog(&self) {
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
            let mut device = self.lock();
            device
                .reporter
                .report(None, EventKind::TeardownFailed, errno, e.to_string());
            // Tried again by the retry timer, with its back-off.
            device.retry_timer.update(true);
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
}
