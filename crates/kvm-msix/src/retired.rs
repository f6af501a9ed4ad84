//! Ioeventfd registrations waiting to be undone: unregistering one waits for
//! an SRCU grace period (milliseconds each on KVM), so a BAR move or a
//! decode-off must not do it under the device's lock.

use std::collections::BTreeMap;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use msix_hypervisor::MsixVm;
use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Result};

/// One unmask ioeventfd no longer part of a placement.
#[derive(Debug)]
pub struct Retired {
    /// The address it is registered at (an entry's Vector Control).
    pub gpa: u64,
    /// Its eventfd.
    pub fd: EventFd,
}

/// The queue of retired unmask ioeventfds of one device. A placement
/// retires its registrations here in one step and may reclaim one at the
/// same address (a decode-off then decode-on at the same BAR address); a
/// servicer undoes them one at a time without any lock held across the
/// hypervisor call. [`RetiredIoevents::notify_fd`] is readable while work
/// waits.
#[derive(Debug)]
pub struct RetiredIoevents {
    vm: Arc<dyn MsixVm>,
    state: Mutex<Queue>,
    /// Signalled when an unregistration in flight completes.
    landed: Condvar,
    notify: EventFd,
}

/// The waiting registrations, found by address (reclaim) and by age (undo)
/// in O(log n) each: a guest moving its BAR in a loop must not make every
/// move scan what earlier moves retired.
#[derive(Debug, Default)]
struct Queue {
    /// Waiting registrations by (address, age); an address normally has at
    /// most one (the hypervisor refuses a second registration there).
    items: BTreeMap<(u64, u64), EventFd>,
    /// The same registrations by age: (age -> address).
    order: BTreeMap<u64, u64>,
    next_age: u64,
    /// Registrations the hypervisor refused to undo, by (address, age).
    /// Their eventfds are kept (a guest write there still lands in an
    /// eventfd this queue owns, and a placement at that address takes them
    /// back) and tried again at the next [`RetiredIoevents::retry_stuck`].
    stuck: BTreeMap<(u64, u64), EventFd>,
    /// The address being unregistered right now, outside the lock.
    in_flight: Option<u64>,
}

impl Queue {
    fn push(&mut self, item: Retired) {
        let age = self.next_age;
        self.next_age += 1;
        self.items.insert((item.gpa, age), item.fd);
        self.order.insert(age, item.gpa);
    }

    fn oldest(&mut self) -> Option<Retired> {
        let (age, gpa) = self.order.pop_first()?;
        let fd = self.items.remove(&(gpa, age))?;
        Some(Retired { gpa, fd })
    }

    /// The first registration at `gpa` in `map`, taken out.
    fn take_at(map: &mut BTreeMap<(u64, u64), EventFd>, gpa: u64) -> Option<(u64, EventFd)> {
        let key = *map.range((gpa, 0)..=(gpa, u64::MAX)).next()?.0;
        map.remove(&key).map(|fd| (key.1, fd))
    }
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // Whole items are pushed and popped: consistent after any panic.
    q.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RetiredIoevents {
    /// An empty queue for `vm`'s registrations.
    pub fn new(vm: Arc<dyn MsixVm>) -> Result<Self> {
        Ok(RetiredIoevents {
            vm,
            state: Mutex::new(Queue::default()),
            landed: Condvar::new(),
            notify: EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Event)?,
        })
    }

    /// Queues `items` for unregistration.
    pub fn retire(&self, items: Vec<Retired>) {
        if items.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        for item in items {
            state.push(item);
        }
        drop(state);
        // A full counter only means the servicer is already due to wake.
        let _ = self.notify.write(1);
    }

    /// Takes back the registration at `gpa` if it is still queued: it stays
    /// registered and its eventfd is returned (drained: a write while it was
    /// retired was not an unmask of the new placement). When that address
    /// is being unregistered right now, waits for it (one grace period at
    /// most) and returns `None`: the address is then free to register again.
    pub fn reclaim(&self, gpa: u64) -> Option<EventFd> {
        let mut state = lock(&self.state);
        while state.in_flight == Some(gpa) {
            state = self
                .landed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let fd = match Queue::take_at(&mut state.items, gpa) {
            Some((age, fd)) => {
                state.order.remove(&age);
                fd
            }
            None => Queue::take_at(&mut state.stuck, gpa)?.1,
        };
        drop(state);
        let _ = fd.read();
        Some(fd)
    }

    /// Whether an unregistration is being made right now.
    pub fn in_flight(&self) -> bool {
        lock(&self.state).in_flight.is_some()
    }

    /// Registrations waiting.
    pub fn pending(&self) -> usize {
        lock(&self.state).items.len()
    }

    /// Registrations the hypervisor refused to undo, kept for a retry.
    pub fn stuck(&self) -> usize {
        lock(&self.state).stuck.len()
    }

    /// Registrations waiting or stuck at addresses in `range` (what a
    /// placement there would take back), counted in O(k log n).
    pub fn waiting_in(&self, range: std::ops::Range<u64>) -> usize {
        let state = lock(&self.state);
        let keys = (range.start, 0)..(range.end, 0);
        state.items.range(keys.clone()).count() + state.stuck.range(keys).count()
    }

    /// Registrations not undone yet, waiting or stuck: each holds an
    /// eventfd. What a caller bounds (see `msix-accel`'s BAR-move throttle).
    pub fn backlog(&self) -> usize {
        let state = lock(&self.state);
        state.items.len() + state.stuck.len()
    }

    /// Queues the registrations that failed to undo for another try.
    pub fn retry_stuck(&self) {
        let mut state = lock(&self.state);
        if state.stuck.is_empty() {
            return;
        }
        let stuck = std::mem::take(&mut state.stuck);
        for ((gpa, _), fd) in stuck {
            state.push(Retired { gpa, fd });
        }
        drop(state);
        let _ = self.notify.write(1);
    }

    /// Unregisters the oldest waiting registration; `None` when none waits.
    /// The queue's lock is not held across the hypervisor call.
    pub fn undo_one(&self) -> Option<Result<()>> {
        let item = {
            let mut state = lock(&self.state);
            let item = state.oldest()?;
            state.in_flight = Some(item.gpa);
            item
        };
        let result = self
            .vm
            .unregister_ioeventfd(&item.fd, item.gpa, 0)
            .map_err(|e| Error::Ioeventfd {
                op: "deassign",
                gpa: item.gpa,
                errno: e.errno,
            });
        let mut state = lock(&self.state);
        state.in_flight = None;
        if result.is_err() {
            // Still registered: keep its eventfd rather than let the
            // hypervisor signal one nobody owns.
            let age = state.next_age;
            state.next_age += 1;
            state.stuck.insert((item.gpa, age), item.fd);
        }
        drop(state);
        self.landed.notify_all();
        Some(result)
    }

    /// Consumes the notification (before undoing what waits, so a retire
    /// racing with the undo wakes the servicer again).
    pub fn clear_notification(&self) {
        let _ = self.notify.read();
    }

    /// Unregisters everything waiting, the stuck ones included; the first
    /// error is returned after every registration was tried once.
    pub fn undo_all(&self) -> Result<()> {
        self.retry_stuck();
        self.clear_notification();
        let mut first = None;
        let mut left = self.pending();
        while left > 0 {
            match self.undo_one() {
                Some(Err(e)) => {
                    first.get_or_insert(e);
                }
                Some(Ok(())) => {}
                None => break,
            }
            left -= 1;
        }
        first.map_or(Ok(()), Err)
    }

    /// Readable while registrations wait (consumed by [`RetiredIoevents::undo_all`]).
    pub fn notify_fd(&self) -> RawFd {
        self.notify.as_raw_fd()
    }
}
