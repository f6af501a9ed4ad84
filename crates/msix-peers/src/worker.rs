//! The VMM thread that handles a masked vector's userspace eventfd: QEMU's
//! main loop (`vfio_msi_interrupt`, a `qemu_set_fd_handler` handler) and
//! crosvm's VFIO worker (`VfioPciWorker::run`, which calls the MSI-X
//! config's `trigger`). It waits on every vector's eventfd with epoll; for
//! each one that became readable it takes the device's lock, reads (and so
//! resets) the eventfd and lets the model handle the message.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use irqfd_routes::eventfd_drain;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::state::{lock, record, PeerState};
use msix_rig::Error;

/// What a model does with one message that reached vector `v`'s userspace
/// eventfd.
pub type UserEvent = fn(&mut PeerState, u16) -> Result<(), Error>;

/// The token of the stop eventfd (vectors use their number).
const STOP: u64 = u64::MAX;

/// The running thread; stopped and joined on drop.
#[derive(Debug)]
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread over `fds` (vector `v`'s at index `v`).
    pub fn spawn(
        state: Arc<Mutex<PeerState>>,
        fds: Vec<Arc<EventFd>>,
        handle: UserEvent,
    ) -> Result<Worker, Error> {
        let io = |what: &str, source: std::io::Error| Error::Device {
            what: format!("userspace eventfd thread: {what}"),
            source,
        };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| io("eventfd", e))?;
        let epoll = Epoll::new().map_err(|e| io("epoll", e))?;
        epoll
            .ctl(
                ControlOperation::Add,
                stop.as_raw_fd(),
                EpollEvent::new(EventSet::IN, STOP),
            )
            .map_err(|e| io("epoll_ctl", e))?;
        for (v, fd) in fds.iter().enumerate() {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, v as u64),
                )
                .map_err(|e| io("epoll_ctl", e))?;
        }
        let thread = std::thread::Builder::new()
            .name("peer-userspace-irq".into())
            .spawn(move || run(&epoll, &state, &fds, handle))
            .map_err(|e| io("spawn", e))?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

fn run(epoll: &Epoll, state: &Mutex<PeerState>, fds: &[Arc<EventFd>], handle: UserEvent) {
    let mut events = vec![EpollEvent::default(); 64];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                lock(state)
                    .last_error
                    .get_or_insert_with(|| format!("userspace eventfd thread: epoll_wait: {e}"));
                return;
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token == STOP {
                return;
            }
            let Some(fd) = fds.get(token as usize) else {
                continue;
            };
            let mut state = lock(state);
            let result = match eventfd_drain(fd) {
                Ok(0) => Ok(()),
                Ok(_) => handle(&mut state, token as u16),
                Err(e) => Err(e.into()),
            };
            record(&mut state, result);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
