//! A servicer that does nothing: the part of an absorbed unmask that is
//! not our code. `floor-1exit-wake` and `floor-1exit-spin` add it to
//! `floor-1exit` to isolate what a thread watching the unmask eventfd costs
//! the guest, apart from what the accelerator does once it runs:
//!
//! - [`ServicerMode::Wake`]: the thread sleeps in `poll()` on the unmask
//!   eventfd; every unmask the ioeventfd absorbs wakes it (the waker is the
//!   vCPU thread, inside KVM's emulation of the guest's write), it reads
//!   the eventfd, notes on which CPU it runs, and sleeps again;
//! - [`ServicerMode::Spin`]: the thread is kept awake while its row is
//!   measured, reading the (non-blocking) eventfd in a loop, so that the
//!   ioeventfd's signal finds no sleeper to wake.
//!
//! Both note, per unmask seen, whether the thread ran on the CPU the vCPU
//! thread last exited on (the floor's mask handler records it).

use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use vmm_sys_util::eventfd::EventFd;

use crate::Error;

/// How the do-nothing servicer waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServicerMode {
    /// Sleeps until the unmask eventfd is readable.
    Wake,
    /// Polls it while the row is measured.
    Spin,
}

/// What the servicer and the floor's mask handler share.
#[derive(Debug, Default)]
pub struct ServicerShared {
    /// The CPU of the vCPU thread at its last mask exit.
    pub vcpu_cpu: AtomicI32,
    stopping: AtomicBool,
    active: Mutex<bool>,
    changed: Condvar,
    /// Unmasks seen on the vCPU thread's CPU.
    same_cpu: AtomicU64,
    /// Unmasks seen on another CPU.
    other_cpu: AtomicU64,
}

impl ServicerShared {
    /// The vCPU thread exits for a mask: note its CPU.
    pub fn note_vcpu_cpu(&self) {
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        self.vcpu_cpu.store(cpu, Ordering::Relaxed);
    }

    fn note_unmask(&self) {
        // SAFETY: as above.
        let cpu = unsafe { libc::sched_getcpu() };
        if cpu == self.vcpu_cpu.load(Ordering::Relaxed) {
            self.same_cpu.fetch_add(1, Ordering::Relaxed);
        } else {
            self.other_cpu.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Unmasks seen so far on the vCPU thread's CPU and on another.
    pub fn placement(&self) -> [u64; 2] {
        [
            self.same_cpu.load(Ordering::Relaxed),
            self.other_cpu.load(Ordering::Relaxed),
        ]
    }

    fn active(&self) -> std::sync::MutexGuard<'_, bool> {
        // A flag: no invariant a panic could break.
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The do-nothing servicer's thread; stopped and joined on drop.
#[derive(Debug)]
pub struct FloorServicer {
    mode: ServicerMode,
    shared: Arc<ServicerShared>,
    stop: Arc<EventFd>,
    handle: Option<JoinHandle<()>>,
}

impl FloorServicer {
    /// Starts the thread (named `floor-servicer`) on a duplicate of
    /// `unmask`, which must be non-blocking.
    pub fn spawn(mode: ServicerMode, unmask: &EventFd) -> Result<FloorServicer, Error> {
        let err = |e: std::io::Error| Error::Check(format!("floor servicer: {e}"));
        let unmask = unmask.try_clone().map_err(err)?;
        let stop = Arc::new(EventFd::new(libc::EFD_NONBLOCK).map_err(err)?);
        let shared = Arc::new(ServicerShared {
            vcpu_cpu: AtomicI32::new(-1),
            ..ServicerShared::default()
        });
        let (s, stop_fd) = (shared.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("floor-servicer".into())
            .spawn(move || match mode {
                ServicerMode::Wake => wake_loop(&s, &unmask, &stop_fd),
                ServicerMode::Spin => spin_loop(&s, &unmask),
            })
            .map_err(err)?;
        Ok(FloorServicer {
            mode,
            shared,
            stop,
            handle: Some(handle),
        })
    }

    /// What it shares with the mask handler.
    pub fn shared(&self) -> Arc<ServicerShared> {
        self.shared.clone()
    }

    /// The row is measured (`on`) or not: a spinning servicer spins only
    /// meanwhile, so that it takes no CPU from the other rows.
    pub fn measuring(&self, on: bool) {
        if self.mode == ServicerMode::Spin {
            *self.shared.active() = on;
            self.shared.changed.notify_all();
        }
    }
}

fn wake_loop(shared: &ServicerShared, unmask: &EventFd, stop: &EventFd) {
    let mut fds = [
        libc::pollfd {
            fd: unmask.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    while !shared.stopping.load(Ordering::SeqCst) {
        // SAFETY: two valid pollfds that outlive the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n > 0 && fds[0].revents & libc::POLLIN != 0 && unmask.read().is_ok() {
            shared.note_unmask();
        }
    }
}

fn spin_loop(shared: &ServicerShared, unmask: &EventFd) {
    loop {
        let mut active = shared.active();
        while !*active && !shared.stopping.load(Ordering::SeqCst) {
            active = shared
                .changed
                .wait(active)
                .unwrap_or_else(PoisonError::into_inner);
        }
        drop(active);
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        while *shared.active() {
            if unmask.read().is_ok() {
                shared.note_unmask();
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for FloorServicer {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        *self.shared.active() = false;
        self.shared.changed.notify_all();
        // The counter cannot be full: it is written once.
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
