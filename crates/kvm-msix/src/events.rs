//! The per-entry unmask eventfds (`U[i]`) and the epoll set over them.

use std::os::unix::io::{AsRawFd, RawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Result};

/// One non-blocking eventfd per fast-path entry, signalled by KVM when the
/// guest writes 0 to that entry's Vector Control, and one level-triggered
/// epoll set over all of them: a service thread waits on [`AsRawFd::as_raw_fd`]
/// and collects every ready entry with [`UnmaskEvents::ready`].
#[derive(Debug)]
pub struct UnmaskEvents {
    epoll: Epoll,
    fds: Vec<EventFd>,
}

impl UnmaskEvents {
    /// Eventfds for entries `0..count`.
    pub fn new(count: u16) -> Result<Self> {
        let epoll = Epoll::new().map_err(Error::Event)?;
        let mut fds = Vec::with_capacity(usize::from(count));
        for vector in 0..count {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::Event)?;
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd.as_raw_fd(),
                    EpollEvent::new(EventSet::IN, u64::from(vector)),
                )
                .map_err(Error::Event)?;
            fds.push(fd);
        }
        Ok(UnmaskEvents { epoll, fds })
    }

    /// Number of entries with an unmask eventfd.
    pub fn len(&self) -> u16 {
        self.fds.len() as u16
    }

    /// Whether no entry has one.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The unmask eventfd of `vector`, if it has one.
    pub fn get(&self, vector: u16) -> Option<&EventFd> {
        self.fds.get(usize::from(vector))
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

    #[test]
    fn ready_lists_signalled_entries_and_drain_consumes_them() {
        let events = UnmaskEvents::new(4).unwrap();
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
}
