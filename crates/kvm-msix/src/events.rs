//! The per-entry unmask eventfds (`U[i]`) and the epoll set over them.

use std::os::unix::io::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Result};

/// Up to one non-blocking eventfd per entry, signalled by KVM when the guest
/// writes 0 to that entry's Vector Control, and one level-triggered epoll
/// set over all of them: a service thread waits on [`AsRawFd::as_raw_fd`]
/// and collects every ready entry with [`UnmaskEvents::ready`].
///
/// Eventfds are installed per placement and taken out when a placement goes
/// away, so a signal from an old address never reaches a new placement.
#[derive(Debug)]
pub struct UnmaskEvents {
    epoll: Epoll,
    fds: Vec<Option<EventFd>>,
}

impl UnmaskEvents {
    /// Room for entries `0..count`, none installed.
    pub fn new(count: u16) -> Result<Self> {
        Ok(UnmaskEvents {
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

    /// Takes `vector`'s unmask eventfd out (and out of the epoll set).
    pub fn take(&mut self, vector: u16) -> Option<EventFd> {
        let fd = self.fds.get_mut(usize::from(vector))?.take()?;
        // Closing would remove it too; removing now keeps a retired eventfd
        // that is still signalled from waking the service thread.
        let _ = self.epoll.ctl(
            ControlOperation::Delete,
            fd.as_raw_fd(),
            EpollEvent::default(),
        );
        Some(fd)
    }

    /// The unmask eventfd of `vector`, if it has one.
    pub fn get(&self, vector: u16) -> Option<&EventFd> {
        self.fds.get(usize::from(vector))?.as_ref()
    }

    /// Entries with an eventfd installed.
    pub fn installed(&self) -> u16 {
        self.fds.iter().filter(|f| f.is_some()).count() as u16
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
            let n = match self.epoll.wait(0, &mut events) {
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
        self.epoll.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> EventFd {
        EventFd::new(libc::EFD_NONBLOCK).unwrap()
    }

    #[test]
    fn ready_lists_signalled_entries_and_drain_consumes_them() {
        let mut events = UnmaskEvents::new(4).unwrap();
        for v in 0..4 {
            events.install(v, fd()).unwrap();
        }
        events.get(1).unwrap().write(1).unwrap();
        events.get(3).unwrap().write(2).unwrap();
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
    fn a_taken_eventfd_no_longer_wakes_the_set() {
        let mut events = UnmaskEvents::new(2).unwrap();
        events.install(0, fd()).unwrap();
        assert!(events.install(0, fd()).is_err());
        assert!(events.install(2, fd()).is_err());
        let old = events.take(0).unwrap();
        old.write(1).unwrap();
        let mut ready = Vec::new();
        events.ready(&mut ready).unwrap();
        assert!(ready.is_empty());
        assert_eq!(events.installed(), 0);
    }
}
