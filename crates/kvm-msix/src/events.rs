//! The per-entry unmask eventfds (`U[i]`) and the epoll sets over them.
//!
//! A placement's eventfds live in an [`UnmaskSet`] (one epoll set over
//! them), built and registered before the device's lock is taken; the
//! device's [`UnmaskEvents`] holds the current set behind one stable epoll
//! fd that a service thread waits on, and swaps sets in two `epoll_ctl`
//! calls when the table moves. A signal from an old address never reaches
//! a new placement.

use std::os::unix::io::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Result, Retired};

/// One placement's unmask eventfds, up to one per entry, signalled by the
/// hypervisor when the guest writes 0 to that entry's Vector Control, in
/// one level-triggered epoll set. Each is kept with the address it is
/// registered at, so that whoever takes it out of the set (to retire it)
/// undoes the registration where it really is.
#[derive(Debug)]
pub struct UnmaskSet {
    epoll: Epoll,
    fds: Vec<Option<Retired>>,
}

impl UnmaskSet {
    /// Room for entries `0..count`, none installed.
    pub fn new(count: u16) -> Result<Self> {
        Ok(UnmaskSet {
            epoll: Epoll::new().map_err(Error::Event)?,
            fds: (0..count).map(|_| None).collect(),
        })
    }

    /// Entries that can hold an unmask eventfd.
    pub fn capacity(&self) -> u16 {
        self.fds.len() as u16
    }

    /// Installs `registration` (an eventfd and the address it is
    /// registered at) as `vector`'s unmask eventfd, replacing none. On
    /// failure it comes back with the error, so it can still be undone.
    pub fn install(
        &mut self,
        vector: u16,
        registration: Retired,
    ) -> std::result::Result<(), (Error, Retired)> {
        let Some(slot) = self.fds.get_mut(usize::from(vector)) else {
            return Err((
                Error::State("unmask eventfd past the capacity"),
                registration,
            ));
        };
        if slot.is_some() {
            return Err((
                Error::State("unmask eventfd already installed"),
                registration,
            ));
        }
        if let Err(e) = self.epoll.ctl(
            ControlOperation::Add,
            registration.fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, u64::from(vector)),
        ) {
            return Err((Error::Event(e), registration));
        }
        *slot = Some(registration);
        Ok(())
    }

    /// The unmask eventfd of `vector`, if it has one.
    pub fn get(&self, vector: u16) -> Option<&EventFd> {
        self.fds.get(usize::from(vector))?.as_ref().map(|r| &r.fd)
    }

    /// The address `vector`'s unmask eventfd is registered at, if it has one.
    pub fn address(&self, vector: u16) -> Option<u64> {
        self.fds.get(usize::from(vector))?.as_ref().map(|r| r.gpa)
    }

    /// Entries with an eventfd installed.
    pub fn installed(&self) -> u16 {
        self.fds.iter().filter(|f| f.is_some()).count() as u16
    }

    /// Every installed registration, each with the address it is registered
    /// at, emptying the set. Needs no new fd, so it cannot fail for want of
    /// one: the eventfds leave the epoll set here (they stay open, in the
    /// caller's hands, so closing would not remove them), and a signal on
    /// one never wakes this set's watcher again.
    pub fn drain_fds(&mut self) -> Vec<Retired> {
        let mut out = Vec::new();
        for slot in &mut self.fds {
            if let Some(r) = slot.take() {
                // EPOLL_CTL_DEL of a watched fd frees memory, never needs it.
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    r.fd.as_raw_fd(),
                    EpollEvent::default(),
                );
                out.push(r);
            }
        }
        out
    }
}

/// The device's unmask eventfds: the current [`UnmaskSet`] behind one epoll
/// fd that stays the same for the device's life (what a servicer watches).
#[derive(Debug)]
pub struct UnmaskEvents {
    outer: Epoll,
    set: UnmaskSet,
    /// Wakes the servicer for unmasks that reached the device another way
    /// (an exit that left its unmask to the servicer).
    kick: EventFd,
}

impl UnmaskEvents {
    /// An empty set of `count` entries behind a new stable epoll fd.
    pub fn new(count: u16) -> Result<Self> {
        let outer = Epoll::new().map_err(Error::Event)?;
        let set = UnmaskSet::new(count)?;
        Self::watch(&outer, &set)?;
        let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Event)?;
        outer
            .ctl(
                ControlOperation::Add,
                kick.as_raw_fd(),
                EpollEvent::new(EventSet::IN, u64::MAX),
            )
            .map_err(Error::Event)?;
        Ok(UnmaskEvents { outer, set, kick })
    }

    /// Makes the stable fd readable until [`UnmaskEvents::clear_kick`]: an
    /// unmask is waiting that no eventfd of the set shows.
    pub fn kick(&self) {
        // A full counter is still readable.
        let _ = self.kick.write(1);
    }

    /// Consumes a [`UnmaskEvents::kick`].
    pub fn clear_kick(&self) {
        let _ = self.kick.read();
    }

    fn watch(outer: &Epoll, set: &UnmaskSet) -> Result<()> {
        outer
            .ctl(
                ControlOperation::Add,
                set.epoll.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(Error::Event)
    }

    /// Makes `set` the current one and returns the previous one (no longer
    /// watched). On failure `set` comes back with the error (its
    /// registrations must still be undone) and the current set stays.
    pub fn swap(&mut self, set: UnmaskSet) -> std::result::Result<UnmaskSet, (Error, UnmaskSet)> {
        if let Err(e) = Self::watch(&self.outer, &set) {
            return Err((e, set));
        }
        let old = std::mem::replace(&mut self.set, set);
        // Closing would remove it too; removing now keeps retired eventfds
        // that are still signalled from waking the servicer.
        let _ = self.outer.ctl(
            ControlOperation::Delete,
            old.epoll.as_raw_fd(),
            EpollEvent::default(),
        );
        Ok(old)
    }

    /// Entries that can hold an unmask eventfd.
    pub fn capacity(&self) -> u16 {
        self.set.capacity()
    }

    /// Takes every registration out of the current set, which stays current
    /// and empty (see [`UnmaskSet::drain_fds`]: this cannot fail).
    pub fn take_registrations(&mut self) -> Vec<Retired> {
        self.set.drain_fds()
    }

    /// Installs `registration` in the current set (see
    /// [`UnmaskSet::install`]).
    pub fn install(
        &mut self,
        vector: u16,
        registration: Retired,
    ) -> std::result::Result<(), (Error, Retired)> {
        self.set.install(vector, registration)
    }

    /// The address `vector`'s unmask eventfd is registered at, if it has one.
    pub fn address(&self, vector: u16) -> Option<u64> {
        self.set.address(vector)
    }

    /// The unmask eventfd of `vector` in the current set, if any.
    pub fn get(&self, vector: u16) -> Option<&EventFd> {
        self.set.get(vector)
    }

    /// Entries of the current set with an eventfd installed.
    pub fn installed(&self) -> u16 {
        self.set.installed()
    }

    /// Consumes the unmask signals of `vector`; true when the guest had
    /// written an unmask that was not yet serviced.
    pub fn drain(&self, vector: u16) -> Result<bool> {
        let Some(fd) = self.get(vector) else {
            return Ok(false);
        };
        match fd.read() {
            Ok(count) => Ok(count > 0),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(Error::Event(e)),
        }
    }

    /// Appends the entries whose eventfd is readable now (without blocking
    /// and without consuming anything) to `out`.
    pub fn ready(&self, out: &mut Vec<u16>) -> Result<()> {
        // On the stack: this runs at the start of every synchronous exit.
        let mut events = [EpollEvent::default(); 64];
        loop {
            let n = match self.set.epoll.wait(0, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Event(e)),
            };
            let before = out.len();
            for event in &events[..n] {
                let vector = event.data() as u16;
                if !out.contains(&vector) {
                    out.push(vector);
                }
            }
            // Level-triggered: the same ready fds come back until drained, so
            // stop once a round brings nothing new.
            if n < events.len() || out.len() == before {
                return Ok(());
            }
        }
    }
}

impl AsRawFd for UnmaskEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.outer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Retired {
        Retired {
            gpa: 0x1000,
            fd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        }
    }

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that outlives the call; zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) > 0 }
    }

    #[test]
    fn ready_lists_signalled_entries_and_drain_consumes_them() {
        let mut set = UnmaskSet::new(4).unwrap();
        for v in 0..4 {
            set.install(v, fd()).unwrap();
        }
        let mut events = UnmaskEvents::new(4).unwrap();
        events.swap(set).unwrap();
        events.get(1).unwrap().write(1).unwrap();
        events.get(3).unwrap().write(2).unwrap();
        assert!(
            readable(events.as_raw_fd()),
            "the stable fd wakes a servicer"
        );
        let mut ready = Vec::new();
        events.ready(&mut ready).unwrap();
        ready.sort();
        assert_eq!(ready, vec![1, 3]);
        assert!(events.drain(1).unwrap());
        assert!(!events.drain(1).unwrap());
        assert!(!events.drain(2).unwrap());
        assert!(!events.drain(9).unwrap());
        let mut ready = Vec::new();
        events.ready(&mut ready).unwrap();
        assert_eq!(ready, vec![3]);
    }

    #[test]
    fn a_swapped_out_set_no_longer_wakes_the_stable_fd() {
        let mut first = UnmaskSet::new(2).unwrap();
        first.install(0, fd()).unwrap();
        assert!(first.install(0, fd()).is_err());
        assert!(first.install(2, fd()).is_err());
        let mut events = UnmaskEvents::new(2).unwrap();
        events.swap(first).unwrap();
        let fixed = events.as_raw_fd();
        let mut old = events.swap(UnmaskSet::new(2).unwrap()).unwrap();
        assert_eq!(events.as_raw_fd(), fixed);
        let retired = old.drain_fds();
        assert_eq!(retired.len(), 1);
        retired[0].fd.write(1).unwrap();
        assert!(!readable(fixed));
        let mut ready = Vec::new();
        events.ready(&mut ready).unwrap();
        assert!(ready.is_empty());
        assert_eq!(events.installed(), 0);
    }
}
