//! Servicing the fast path: an event-manager subscriber, and a ready-made
//! service thread for VMMs (and tests) that do not run an event manager.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{
    EventManager, EventOps, EventSubscriber, Events, MutEventSubscriber, SubscriberOps,
};
use vmm_sys_util::epoll::EventSet;

use crate::{Error, MsixAccelerator, Result};

/// An event-manager subscriber servicing one accelerator's absorbed
/// unmasks. It registers a single fd (the epoll set over the entry's unmask
/// eventfds), whatever the table size, and services all ready entries in one
/// batch per wake-up.
#[derive(Debug, Clone)]
pub struct FastPathSubscriber {
    accel: Arc<MsixAccelerator>,
}

impl FastPathSubscriber {
    /// A subscriber for `accel`.
    pub fn new(accel: Arc<MsixAccelerator>) -> Self {
        FastPathSubscriber { accel }
    }

    /// The subscriber in the shape an
    /// `EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>` takes.
    pub fn shared(accel: Arc<MsixAccelerator>) -> Arc<Mutex<dyn MutEventSubscriber + Send>> {
        Arc::new(Mutex::new(Arc::new(FastPathSubscriber::new(accel))))
    }
}

impl EventSubscriber for FastPathSubscriber {
    fn process(&self, events: Events, _ops: &mut EventOps) {
        if events.event_set().contains(EventSet::IN) {
            // Errors are recorded in the accelerator's statistics and
            // last_error; the service thread must keep running.
            if let Err(e) = self.accel.service_fast_path() {
                self.accel.note_error(e);
            }
        }
    }

    fn init(&self, ops: &mut EventOps) {
        let fd = self.accel.fast_path_fd();
        if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            self.accel.note_error(Error::Service(format!(
                "cannot watch the fast-path fd: {e:?}"
            )));
        }
    }
}

type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// A thread running an event manager with one [`FastPathSubscriber`] per
/// accelerator. Stops (and joins) on drop.
#[derive(Debug)]
pub struct ServiceThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ServiceThread {
    /// Starts servicing `accels`.
    pub fn spawn(accels: &[Arc<MsixAccelerator>]) -> Result<ServiceThread> {
        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(|e| Error::Service(format!("{e:?}")))?;
        for accel in accels {
            let sub: Subscriber =
                Arc::new(Mutex::new(Arc::new(FastPathSubscriber::new(accel.clone()))));
            manager.add_subscriber(sub);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("msix-fast-path".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    // A bounded wait so a stop request is seen promptly.
                    if manager.run_with_timeout(20).is_err() {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
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
        self.stop.store(true, Ordering::SeqCst);
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
