//! Servicing the fast path: an event-manager subscriber, and a ready-made
//! service thread for VMMs (and tests) that do not run an event manager.
//!
//! A servicer applies the unmasks the ioeventfds absorbed (so a guest's
//! unmask takes effect without waiting for its next exit; those that need a
//! route commit within the coalescing window, see `absorbed.rs`) and undoes
//! the unmask ioeventfds a BAR move or decode-off retired (each waits for an
//! SRCU grace period, so never under the device's lock). It sleeps until
//! one of its fds is readable; with [`crate::AccelConfig::unmask_polling`]
//! set, a [`ServiceThread`] keeps polling for a self-tuned window after
//! applying an unmask that followed a mask exit (`poll_window.rs`), so that
//! the next unmask of a guest cycling its mask does not have to wake it.

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{
    EventManager, EventOps, EventSubscriber, Events, MutEventSubscriber, SubscriberOps,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use crate::deferral::{Deferral, OnTimer, OnUnmask};
use crate::poll_window::PollWindow;
use crate::service_scheduling::{set_batch, ServiceScheduling};
use crate::stats::Counters;
use crate::{Error, MsixAccelerator, Result};

/// A subscriber's polling state (see `poll_window.rs`).
#[derive(Debug)]
struct Polling {
    window: PollWindow,
    /// When the last pass that applied unmasks ended.
    since: Option<Instant>,
    /// Poll until then (None: sleep).
    until: Option<Instant>,
    /// The device's mask exits at the last pass.
    masks: u64,
}

/// An event-manager subscriber servicing one accelerator. It registers
/// four fds whatever the table size (the epoll set over the entries' unmask
/// eventfds, the retired-ioeventfd queue, the coalescing window's timer and
/// the held vectors' retry timer; a fifth, the deferral's timer, with
/// [`crate::AccelConfig::unmask_deferral`]) and declares itself the
/// accelerator's servicer once both are registered; dropping it withdraws
/// that (a table under `fast` is then placed again under `strict`).
#[derive(Debug)]
pub struct FastPathSubscriber {
    accel: Arc<MsixAccelerator>,
    registered: AtomicBool,
    /// Ends the coalescing window of unmasks that wait for a commit.
    window: Mutex<Option<TimerFd>>,
    armed: AtomicBool,
    polling: Mutex<Polling>,
    deferral: Deferral,
}

impl FastPathSubscriber {
    /// A subscriber for `accel`.
    pub fn new(accel: Arc<MsixAccelerator>) -> Self {
        FastPathSubscriber {
            registered: AtomicBool::new(false),
            window: Mutex::new(TimerFd::new().ok()),
            armed: AtomicBool::new(false),
            polling: Mutex::new(Polling {
                window: PollWindow::new(accel.config().unmask_polling),
                since: None,
                until: None,
                masks: 0,
            }),
            deferral: Deferral::new(accel.config().unmask_deferral),
            accel,
        }
    }

    fn polling(&self) -> std::sync::MutexGuard<'_, Polling> {
        // Times and a window: no invariant a panic could break.
        self.polling.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Until when the thread running this subscriber should keep polling
    /// (non-blocking looks at every fd) instead of sleeping; None: sleep.
    /// [`ServiceThread`] does this; a VMM's own event loop may too, by
    /// waiting with a zero timeout until then.
    pub fn poll_until(&self) -> Option<Instant> {
        self.polling().until
    }

    /// The thread made one non-blocking look while polling for this
    /// device.
    fn polled(&self) {
        Counters::bump(&self.accel.counters.unmask_poll_iterations);
    }

    /// Before a pass: how long the unmask took to come tunes the window.
    fn before_pass(&self, now: Instant) {
        let mut p = self.polling();
        let caught = p.until.is_some_and(|until| now <= until);
        if caught {
            Counters::bump(&self.accel.counters.unmasks_caught_polling);
        }
        if let Some(since) = p.since {
            p.window.record(now.saturating_duration_since(since));
        }
    }

    /// After a pass: poll for the window when the guest made a mask exit
    /// since the previous pass (mask traffic), else sleep.
    fn after_pass(&self) {
        let masks = self.accel.counters.mask_write_exits.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut p = self.polling();
        let traffic = masks != p.masks;
        p.masks = masks;
        p.since = Some(now);
        let window = p.window.window();
        p.until = (traffic && !window.is_zero()).then(|| now + window);
        self.accel
            .counters
            .unmask_poll_window_ns
            .store(window.as_nanos() as u64, Ordering::Relaxed);
        if p.until.is_some() {
            Counters::bump(&self.accel.counters.unmask_poll_windows);
        }
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Option<TimerFd>> {
        // A timer is a plain handle: no invariant a panic could break.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guest unmasked entries: apply what needs no commit now, and
    /// start the coalescing window for the rest (when not started yet).
    fn on_unmasks(&self) {
        self.before_pass(Instant::now());
        let waiting = self.accel.service_fast_path_cheap();
        self.after_pass();
        if !waiting || self.armed.load(Ordering::SeqCst) {
            return;
        }
        let window = self.accel.config().unmask_coalescing;
        let armed = self
            .window()
            .as_mut()
            .is_some_and(|timer| timer.reset(window, None).is_ok());
        if armed {
            self.armed.store(true, Ordering::SeqCst);
        } else {
            // No timer: no waiting either.
            self.accel.service_fast_path();
        }
    }

    /// The coalescing window ended: apply every absorbed unmask.
    fn on_window(&self) {
        if let Some(timer) = self.window().as_mut() {
            let _ = timer.wait();
        }
        self.armed.store(false, Ordering::SeqCst);
        self.accel.service_fast_path();
    }

    fn window_fd(&self) -> Option<std::os::unix::io::RawFd> {
        self.window().as_ref().map(|t| t.as_raw_fd())
    }

    /// The subscriber in the shape an
    /// `EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>` takes.
    pub fn shared(accel: Arc<MsixAccelerator>) -> Arc<Mutex<dyn MutEventSubscriber + Send>> {
        Arc::new(Mutex::new(Arc::new(FastPathSubscriber::new(accel))))
    }

    /// The window polling grows to at most, for every subscriber of a
    /// thread: polling never runs longer than this past the last pass.
    fn max_window(subscribers: &[Arc<FastPathSubscriber>]) -> Duration {
        subscribers
            .iter()
            .map(|s| s.accel.config().unmask_polling)
            .max()
            .unwrap_or_default()
    }
}

impl EventSubscriber for FastPathSubscriber {
    fn process(&self, events: Events, ops: &mut EventOps) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        Counters::bump(&self.accel.counters.servicer_dispatches);
        let unmask_fd = self.accel.fast_path_fd();
        if events.fd() == unmask_fd {
            let since = self.accel.since_mask_exit();
            let look = || self.accel.look_before_deferring();
            match self.deferral.on_unmask(ops, unmask_fd, since, look) {
                OnUnmask::Apply => self.on_unmasks(),
                OnUnmask::Deferred => {
                    Counters::bump(&self.accel.counters.unmask_deferrals);
                }
            }
        } else if Some(events.fd()) == self.deferral.timer_fd() {
            let since = self.accel.since_mask_exit();
            match self.deferral.on_timer(ops, unmask_fd, since) {
                OnTimer::Rearmed => {}
                OnTimer::Ended => self.on_unmasks(),
                OnTimer::EndedAtLimit => {
                    Counters::bump(&self.accel.counters.unmask_deferral_limits);
                    self.on_unmasks();
                }
            }
        } else if events.fd() == self.accel.retired_fd() {
            self.accel.undo_retired();
        } else if Some(events.fd()) == self.window_fd() {
            self.on_window();
        } else if Some(events.fd()) == self.accel.retry_fd() {
            self.accel.retry_held();
        }
    }

    fn init(&self, ops: &mut EventOps) {
        let unmasks = ops.add(Events::new_raw(self.accel.fast_path_fd(), EventSet::IN));
        let retired = ops.add(Events::new_raw(self.accel.retired_fd(), EventSet::IN));
        // Without a window timer every unmask is applied at once.
        let window = match self.window_fd() {
            Some(fd) => ops.add(Events::new_raw(fd, EventSet::IN)).is_ok(),
            None => true,
        };
        if !window {
            *self.window() = None;
        }
        // Without its timer, unmasks are never deferred.
        if let Some(fd) = self.deferral.timer_fd() {
            if ops.add(Events::new_raw(fd, EventSet::IN)).is_err() {
                self.deferral.disable();
            }
        }
        // Without it, held vectors are retried at the device's exits only.
        if let Some(fd) = self.accel.retry_fd() {
            let _ = ops.add(Events::new_raw(fd, EventSet::IN));
        }
        if unmasks.is_ok() && retired.is_ok() {
            self.accel.register_servicer();
            self.registered.store(true, Ordering::SeqCst);
        }
        // Otherwise the accelerator has no servicer: a placement under
        // `fast` runs under `strict` and says so (FastPathUnserviced).
    }
}

impl Drop for FastPathSubscriber {
    fn drop(&mut self) {
        if self.registered.load(Ordering::SeqCst) {
            self.accel.unregister_servicer();
        }
    }
}

/// While a subscriber asks for it, one non-blocking look at every fd
/// (dispatching what is ready, the stop eventfd included); false when none
/// asks, and the thread may sleep.
fn poll_once(
    manager: &mut EventManager<Subscriber>,
    subscribers: &[Arc<FastPathSubscriber>],
) -> bool {
    let now = Instant::now();
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let mut polling = false;
    for s in subscribers {
        // Never on the CPU of the guest's last mask exit: there polling
        // would only take the CPU from the vCPU thread that writes the
        // unmask (the thread sleeps instead, and is woken as without
        // polling).
        let beside_vcpu = s.accel.mask_exit_cpu.load(Ordering::Relaxed) == cpu;
        if !beside_vcpu && s.poll_until().is_some_and(|until| now < until) {
            s.polled();
            polling = true;
        }
    }
    if polling {
        let _ = manager.run_with_timeout(0);
        std::hint::spin_loop();
    }
    polling
}

/// Ends the service loop when its eventfd is written.
#[derive(Debug)]
struct Stop {
    fd: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
}

impl EventSubscriber for Stop {
    fn process(&self, _events: Events, _ops: &mut EventOps) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    fn init(&self, ops: &mut EventOps) {
        // Without it the thread could not be stopped: spawn checks below.
        if ops
            .add(Events::new(self.fd.as_ref(), EventSet::IN))
            .is_err()
        {
            self.stopping.store(true, Ordering::SeqCst);
        }
    }
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A thread running an event manager with one [`FastPathSubscriber`] per
/// accelerator; it sleeps until an event. Spawn it before placing the
/// accelerators' tables (a table under `fast` needs its servicer). Stops
/// (and joins) on drop, after which the accelerators have no servicer.
#[derive(Debug)]
pub struct ServiceThread {
    stop: Arc<EventFd>,
    handle: Option<JoinHandle<()>>,
}

impl ServiceThread {
    /// Starts servicing `accels`; they are registered as serviced before
    /// this returns.
    pub fn spawn(accels: &[Arc<MsixAccelerator>]) -> Result<ServiceThread> {
        Self::spawn_with(accels, ServiceScheduling::default())
    }

    /// [`ServiceThread::spawn`], the thread scheduled as `scheduling` says.
    pub fn spawn_with(
        accels: &[Arc<MsixAccelerator>],
        scheduling: ServiceScheduling,
    ) -> Result<ServiceThread> {
        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(|e| Error::Service(format!("{e:?}")))?;
        let stop =
            Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Error::Service(e.to_string()))?);
        let stopping = Arc::new(AtomicBool::new(false));
        manager.add_subscriber(Arc::new(Mutex::new(Arc::new(Stop {
            fd: stop.clone(),
            stopping: stopping.clone(),
        }))));
        if stopping.load(Ordering::SeqCst) {
            return Err(Error::Service("cannot watch the stop eventfd".into()));
        }
        let mut subscribers = Vec::new();
        for accel in accels {
            let subscriber = Arc::new(FastPathSubscriber::new(accel.clone()));
            subscribers.push(subscriber.clone());
            manager.add_subscriber(Arc::new(Mutex::new(subscriber)));
        }
        let polls = !FastPathSubscriber::max_window(&subscribers).is_zero();
        let handle = std::thread::Builder::new()
            .name("msix-fast-path".into())
            .spawn(move || {
                if scheduling == ServiceScheduling::Batch {
                    // Refused (a seccomp filter, say): it runs as spawned,
                    // which is only slower.
                    let _ = set_batch();
                }
                while !stopping.load(Ordering::SeqCst) {
                    // EINTR or a transient epoll error: wait again.
                    if polls && poll_once(&mut manager, &subscribers) {
                        continue;
                    }
                    let _ = manager.run();
                }
                drop(subscribers);
                // Dropping the manager drops the subscribers, which withdraw
                // as servicers.
            })
            .map_err(|e| Error::Service(e.to_string()))?;
        Ok(ServiceThread {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        // The counter cannot be full: it is written once.
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ServiceThread {
    fn drop(&mut self) {
        self.halt();
    }
}
