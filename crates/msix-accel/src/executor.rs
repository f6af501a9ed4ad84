//! The executor: carries out a plan's steps on the source, the routes and
//! the irqfds. A step that fails never stops the others: the vector
//! concerned keeps a state that is true (held when in doubt), is marked for
//! a retry at the next exit, and the failure is reported once. One vector's
//! trouble stays with that vector.

use irqfd_routes::{eventfd_drain, RouteState};

use crate::device::{Device, Outcome};
use crate::plan::Step;
use crate::stats::Counters;
use crate::vector::MaskPath;
use crate::{Error, EventKind};

impl Device {
    pub(crate) fn execute(&mut self, steps: &[Step]) -> Outcome {
        let mut outcome = Outcome::default();
        for step in steps {
            let result = match *step {
                Step::Hold(v) => self.hold(v),
                Step::DisableSource => self.disable_source(),
                Step::ForgetParked => self.forget_parked(),
                Step::ReleaseGsis => self.release_gsis(),
                Step::Stage(v) => self.stage(v),
                Step::Commit => self.commit(),
                Step::EnableSource => self.enable_source(),
                Step::Deliver(v) => self.deliver(v),
            };
            if let Err(e) = result {
                outcome.first_error.get_or_insert(e);
            }
        }
        outcome
    }

    fn mark_retry(&mut self, vector: u16, retry: bool) {
        if let Some(v) = self.vectors.get_mut(usize::from(vector)) {
            v.retry = retry;
        }
    }

    /// Stops `vector` delivering: at the source when it can mask, else by
    /// detaching the irqfd. Both failing leaves it delivering (the truth),
    /// to retry.
    pub(crate) fn hold(&mut self, vector: u16) -> Result<(), Error> {
        let i = usize::from(vector);
        if self.vectors[i].mask != MaskPath::Unmasked {
            return Ok(());
        }
        let mut source_error = None;
        if self.source_masking {
            match self.source.mask(vector) {
                Ok(()) => {
                    self.vectors[i].mask = MaskPath::Source;
                    self.mark_retry(vector, false);
                    Counters::bump(&self.counters.masks_at_source);
                    return Ok(());
                }
                Err(vfio_vectors::Error::MaskUnsupported { .. }) => {
                    Counters::bump(&self.counters.source_mask_fallbacks);
                }
                Err(e) => source_error = Some(e),
            }
        }
        let detached = self
            .source
            .trigger(vector)
            .map_err(Error::from)
            .and_then(|trigger| self.vectors[i].irqfd.detach(trigger).map_err(Error::from));
        match detached {
            Ok(()) => {
                self.vectors[i].mask = MaskPath::IrqfdDetached;
                self.mark_retry(vector, false);
                Counters::bump(&self.counters.masks_by_irqfd_detach);
                Ok(())
            }
            Err(e) => {
                let detail = match &source_error {
                    Some(s) => format!("source mask: {s}; irqfd detach: {e}"),
                    None => format!("irqfd detach: {e}"),
                };
                self.reporter
                    .report(Some(vector), EventKind::MaskFailed, errno(&e), detail);
                self.mark_retry(vector, true);
                Err(e)
            }
        }
    }

    fn disable_source(&mut self) -> Result<(), Error> {
        self.source.disable().map_err(|e| {
            self.reporter.report(
                None,
                EventKind::SourceFailed,
                None,
                format!("MSI-X disable at the source: {e}"),
            );
            Error::from(e)
        })
    }

    /// A disabled function forgets what was pending: the source's latches
    /// went with its disable, and what vectors held by a detached irqfd
    /// parked in their eventfds is dropped here, so both mask paths show the
    /// guest the same PBA and deliveries.
    fn forget_parked(&mut self) -> Result<(), Error> {
        let mut first = None;
        for i in 0..self.vectors.len() {
            if self.vectors[i].mask == MaskPath::IrqfdDetached {
                let drained = self
                    .source
                    .trigger(i as u16)
                    .map_err(Error::from)
                    .and_then(|t| eventfd_drain(t).map_err(Error::from));
                if let Err(e) = drained {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Gives every GSI back (MSI-X disabled: no vector delivers until it is
    /// enabled and unmasked again). An irqfd still attached (a vector held
    /// at the source) is detached first; a vector whose detach fails keeps
    /// its GSI.
    fn release_gsis(&mut self) -> Result<(), Error> {
        let mut first = None;
        for i in 0..self.vectors.len() {
            let Some(gsi) = self.vectors[i].gsi else {
                continue;
            };
            if self.vectors[i].irqfd.is_attached() {
                let detached = self
                    .source
                    .trigger(i as u16)
                    .map_err(Error::from)
                    .and_then(|t| self.vectors[i].irqfd.detach(t).map_err(Error::from));
                if let Err(e) = detached {
                    self.reporter.report(
                        Some(i as u16),
                        EventKind::MaskFailed,
                        errno(&e),
                        format!("irqfd detach before releasing GSI {gsi}: {e}"),
                    );
                    first.get_or_insert(e);
                    continue;
                }
            }
            match self.routes.release(gsi) {
                Ok(()) => self.vectors[i].gsi = None,
                Err(e) => {
                    first.get_or_insert(e.into());
                }
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Gives `vector` a GSI if it has none, and stages its entry's message.
    fn stage(&mut self, vector: u16) -> Result<(), Error> {
        let i = usize::from(vector);
        let gsi = match self.vectors[i].gsi {
            Some(gsi) => gsi,
            None => match self.routes.allocate() {
                Ok(gsi) => {
                    self.vectors[i].gsi = Some(gsi);
                    gsi
                }
                Err(e) => {
                    self.reporter.report(
                        Some(vector),
                        EventKind::GsiExhausted,
                        None,
                        format!("no GSI for the route: {e}"),
                    );
                    self.mark_retry(vector, true);
                    return Err(e.into());
                }
            },
        };
        let message = self.route_message(vector)?;
        self.routes.stage(gsi, message).map_err(Error::from)
    }

    fn commit(&mut self) -> Result<(), Error> {
        match self.routes.commit() {
            Ok(_) => {
                self.reporter.clear(EventKind::CommitFailed);
                Ok(())
            }
            Err(e) => {
                self.reporter.report(
                    None,
                    EventKind::CommitFailed,
                    e.errno(),
                    format!("routing commit: {e}"),
                );
                Err(e.into())
            }
        }
    }

    /// MSI-X enable at the source, with only the vectors in use: up to the
    /// highest one unmasked now (one at least: the host needs one to enable
    /// MSI-X). The others are added as the guest unmasks them (see
    /// [`Device::grow_source`]): a host IRQ for each of a 2048-entry table
    /// would be taken for nothing.
    fn enable_source(&mut self) -> Result<(), Error> {
        let count = (0..self.model.table_size())
            .rev()
            .find(|&v| !self.model.is_masked(v).unwrap_or(true))
            .map_or(1, |v| v + 1);
        self.source.enable(count).map_err(|e| {
            self.reporter.report(
                None,
                EventKind::SourceFailed,
                None,
                format!("MSI-X enable at the source: {e}"),
            );
            Error::from(e)
        })
    }

    /// Lets `vector` deliver when the hypervisor holds its current route:
    /// the irqfd is attached (route first, then irqfd), what the eventfd
    /// counted meanwhile is drained (KVM injected it at assignment), and the
    /// source unmasked. Otherwise the vector stays (or becomes) held, and
    /// the reason is reported.
    pub(crate) fn deliver(&mut self, vector: u16) -> Result<(), Error> {
        let i = usize::from(vector);
        if self.model.is_masked(vector)? {
            return Ok(());
        }
        let wanted = self.route_message(vector)?;
        match self.route_state(vector) {
            RouteState::Committed(m) if m == wanted => {}
            RouteState::Rejected { message, errno } if message == wanted => {
                // Not retried: the guest must write a message the
                // hypervisor accepts, which names the vector again.
                let held = self.hold(vector);
                self.mark_retry(vector, held.is_err());
                self.reporter.report(
                    Some(vector),
                    EventKind::RouteRejected,
                    Some(errno),
                    format!(
                        "the hypervisor refused the route to address {:#x} data {:#x}; \
                         interrupts are held until the guest writes a valid message",
                        message.address, message.data
                    ),
                );
                return held;
            }
            _ => {
                // No GSI, or a commit that failed: held, and tried again.
                let held = self.hold(vector);
                self.mark_retry(vector, true);
                return held;
            }
        }
        if let Err(e) = self.grow_source(vector) {
            // Not enabled at the source: it cannot signal, nothing to hold.
            self.reporter.report(
                Some(vector),
                EventKind::SourceFailed,
                None,
                format!("adding the vector at the source: {e}"),
            );
            self.mark_retry(vector, true);
            return Err(e);
        }
        let path = self.vectors[i].mask;
        if path == MaskPath::Unmasked {
            self.mark_retry(vector, false);
            self.reporter.clear_vector(vector);
            return Ok(());
        }
        let was_pending = self.pending_at(vector, path).unwrap_or(false);
        let gsi = self.vectors[i]
            .gsi
            .ok_or(Error::NotReady("GSI of a routed vector"))?;
        let attached = self
            .source
            .trigger(vector)
            .map_err(Error::from)
            .and_then(|trigger| {
                if self.vectors[i].irqfd.is_attached() {
                    return Ok(0);
                }
                // What the eventfd counted while held is taken out before the
                // assignment and delivered below, to the message the entry
                // has at this unmask (docs/semantics.md, "Held interrupts").
                // Left in the count, KVM would inject it from a workqueue
                // with whatever route is current when that runs: a message
                // the guest writes right after the unmask, unlike source
                // masking, where the source sends it at the unmask.
                let held = eventfd_drain(trigger)?;
                if let Err(e) = self.vectors[i].irqfd.attach(trigger, gsi) {
                    if held > 0 {
                        // Still held: put it back for the retry.
                        let _ = trigger.write(1);
                    }
                    return Err(e.into());
                }
                Ok(held)
            });
        let held = match attached {
            Ok(held) => held,
            Err(e) => {
                self.reporter.report(
                    Some(vector),
                    EventKind::UnmaskFailed,
                    errno(&e),
                    format!("irqfd attach: {e}"),
                );
                self.mark_retry(vector, true);
                return Err(e);
            }
        };
        if held > 0 {
            // Once, now, to the current message. If KVM refuses, the
            // attached irqfd delivers it instead (later, never lost).
            if self.vm.signal_msi(&wanted).is_err() {
                if let Ok(trigger) = self.source.trigger(vector) {
                    let _ = trigger.write(1);
                }
            }
        }
        if path == MaskPath::Source {
            if let Err(e) = self.source.unmask(vector) {
                // Attached but still masked at the source: held, to retry.
                self.reporter.report(
                    Some(vector),
                    EventKind::UnmaskFailed,
                    None,
                    format!("source unmask: {e}"),
                );
                self.mark_retry(vector, true);
                return Err(e.into());
            }
        }
        self.vectors[i].mask = MaskPath::Unmasked;
        self.mark_retry(vector, false);
        self.reporter.clear_vector(vector);
        Counters::bump(&self.counters.unmasks);
        if was_pending {
            Counters::bump(&self.counters.pending_deliveries);
        }
        Ok(())
    }
}

impl Device {
    /// Makes sure `vector` is enabled at the source before it may deliver.
    /// A source that can add vectors while MSI-X stays enabled does so; one
    /// that cannot (VFIO without dynamic MSI-X allocation) is disabled and
    /// enabled again with more, which forgets what it held: each vector
    /// masked at the source is moved first to the irqfd path (irqfd
    /// detached), with its pending interrupt parked in its eventfd, so none
    /// is lost and none reaches the guest while the host has the entry
    /// unmasked; it returns to source masking at its next mask after an
    /// unmask.
    pub(crate) fn grow_source(&mut self, vector: u16) -> Result<(), Error> {
        if vector < self.source.enabled_count() {
            return Ok(());
        }
        if !self.source.features().dynamic {
            for v in 0..self.model.table_size() {
                let pending = self.source.pending(v).unwrap_or(false);
                match self.vectors[usize::from(v)].mask {
                    // Off the source for the re-enable: the host unmasks every
                    // wired entry at enable, before the source can mask it
                    // again, so an attached irqfd could deliver meanwhile.
                    MaskPath::Source => self.hold_on_eventfd(v, pending)?,
                    // Not enabled yet, held by the host: park it the same way.
                    MaskPath::IrqfdDetached if pending => self
                        .source
                        .trigger(v)?
                        .write(1)
                        .map_err(|e| Error::Source(vfio_vectors::Error::EventFd(e)))?,
                    MaskPath::IrqfdDetached | MaskPath::Unmasked => {}
                }
            }
        }
        self.source.grow(vector + 1)?;
        Ok(())
    }

    /// Moves `vector` to the irqfd path (irqfd detached, source mask
    /// released) and, when `park`, leaves an interrupt in its eventfd to be
    /// delivered at its unmask. When the irqfd cannot be detached the
    /// vector keeps its mask path; once it is detached the vector is on the
    /// irqfd path even if releasing the source's mask fails.
    pub(crate) fn hold_on_eventfd(&mut self, vector: u16, park: bool) -> Result<(), Error> {
        let i = usize::from(vector);
        if self.vectors[i].irqfd.is_attached() {
            let trigger = self.source.trigger(vector)?;
            self.vectors[i].irqfd.detach(trigger)?;
        }
        // Detached, the eventfd path owns this vector until its next mask.
        let was_at_source = self.vectors[i].mask == MaskPath::Source;
        self.vectors[i].mask = MaskPath::IrqfdDetached;
        if was_at_source {
            // The source's own latch cannot be set from outside: unmasked,
            // the source sends what it holds to the eventfd. Where its
            // mapping is already gone (MaskUnsupported) a reset clears the
            // mask anyway.
            match self.source.unmask(vector) {
                Ok(()) | Err(vfio_vectors::Error::MaskUnsupported { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if park {
            self.source
                .trigger(vector)?
                .write(1)
                .map_err(|e| Error::Source(vfio_vectors::Error::EventFd(e)))?;
        }
        Ok(())
    }
}

fn errno(e: &Error) -> Option<i32> {
    match e {
        Error::Routing(r) => r.errno(),
        _ => None,
    }
}
