//! Pending state of a vector read from its eventfd: poll() to look, read() to drain.

use std::io;
use std::os::fd::AsRawFd;

use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Result};

/// Whether `fd` has a nonzero count, without consuming it: `poll()` with
/// POLLIN and a zero timeout. This is how a PBA read learns that a vector
/// whose irqfd is detached has an interrupt waiting; a `read()` would eat
/// the interrupt.
pub fn eventfd_pending(fd: &EventFd) -> Result<bool> {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pollfd` is a valid, initialised pollfd array of length 1
        // that outlives the call, and the fd is owned by `fd` for its
        // duration; a zero timeout never blocks.
        let ret = unsafe { libc::poll(&mut pollfd, 1, 0) };
        if ret >= 0 {
            return Ok(pollfd.revents & libc::POLLIN != 0);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(Error::EventFd(error));
        }
    }
}

/// Reads and resets the count of `fd`; 0 when it was already zero (EAGAIN).
///
/// `fd` must be non-blocking (`EFD_NONBLOCK`), as every vector trigger is:
/// on a blocking eventfd with a zero count this waits for a signal.
pub fn eventfd_drain(fd: &EventFd) -> Result<u64> {
    match fd.read() {
        Ok(count) => Ok(count),
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(error) => Err(Error::EventFd(error)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pending_never_consumes_the_count() {
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        assert!(!eventfd_pending(&fd).unwrap());
        fd.write(3).unwrap();
        assert!(eventfd_pending(&fd).unwrap());
        assert!(eventfd_pending(&fd).unwrap());
        assert_eq!(eventfd_drain(&fd).unwrap(), 3);
        assert!(!eventfd_pending(&fd).unwrap());
    }

    #[test]
    fn drain_of_an_empty_eventfd_is_zero() {
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        assert_eq!(eventfd_drain(&fd).unwrap(), 0);
    }
}
