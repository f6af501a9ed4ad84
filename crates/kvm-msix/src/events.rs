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

use crate::{Error, Result};

/// One placement's unmask eventfds, up to one per entry, signalled by the
/// hypervisor when the guest writes 0 to that entry's Vector Control, in
/// one level-triggered epoll set.
#[derive(Debug)]
pub struct UnmaskSet {
    epoll: Epoll,
    fds: Vec<Option<EventFd>>,
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

    /// Installs `fd` as `vector`'s unmask eventfd (replacing none). On
    /// failure `fd` comes back with the error, so its registration can still
    /// be undone.
    pub fn install(
        &mut self,
        vector: u16,
        fd: EventFd,
    ) -> std::result::Result<(), (Error, EventFd)> {
        let Some(slot) = self.fds.get_mut(usize::from(vector)) else {
            return Err((Error::State("unmask eventfd past the capacity"), fd));
        };
        if slot.is_some() {
            return Err((Error::State("unmask eventfd already installed"), fd));
        }
        if let Err(e) = self.epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, u64::from(vector)),
        ) {
            return Err((Error::Event(e), fd));
        }
        *slot = Some(fd);
        Ok(())
    }

    /// The unmask eventfd of `vector`, if it has one.
    pub fn get(&self, vector: u16) -> Option<&EventFd> {
        self.fds.get(usize::from(vector))?.as_ref()
    }

    /// Entries with an eventfd installed.
    pub fn installed(&self) -> u16 {
        self.fds.iter().filter(|f| f.is_some()).count() as u16
    }

    /// Every installed eventfd with its entry, emptying the set.
    pub fn drain_fds(&mut self) -> Vec<(u16, EventFd)> {
        self.fds
            .iter_mut()
            .enumerate()
            .filter_map(|(v, slot)| slot.take().map(|fd| (v as u16, fd)))
            .collect()
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
    /// watched).
    pub fn swap(&mut self, set: UnmaskSet) -> Result<UnmaskSet> {
        Self::watch(&self.outer, &set)?;
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

    fn fd() -> EventFd {
        EventFd::new(libc::EFD_NONBLOCK).unwrap()
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
        retired[0].1.write(1).unwrap();
        assert!(!readable(fixed));
        let mut ready = Vec::new();
        events.ready(&mut ready).unwrap();
        assert!(ready.is_empty());
        assert_eq!(events.installed(), 0);
    }
}
