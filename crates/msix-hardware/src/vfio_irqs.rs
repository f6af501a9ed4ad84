//! [`VfioIrqs`]: what a VMM that handles MSI-X in userspace does with
//! VFIO_DEVICE_SET_IRQS on the MSI-X index: enable every vector wired to an
//! eventfd, point one vector at another eventfd, disable. Used by the peer
//! handlers; our accelerator goes through `VfioMsixSource` instead.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use vfio_bindings::bindings::vfio::{
    vfio_irq_set, VFIO_BASE, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_TYPE,
};
use vmm_sys_util::ioctl::ioctl_with_ptr;
use vmm_sys_util::ioctl_io_nr;

use crate::Error;

/// Request number of VFIO_DEVICE_SET_IRQS (`_IO(VFIO_TYPE, VFIO_BASE + 10)`).
mod request {
    #![allow(missing_docs)]
    use super::{ioctl_io_nr, VFIO_BASE, VFIO_TYPE};
    ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, VFIO_TYPE as u32, VFIO_BASE + 10);
}
use request::VFIO_DEVICE_SET_IRQS;

const HEADER_WORDS: usize = std::mem::size_of::<vfio_irq_set>() / 4;

/// A `struct vfio_irq_set` for the MSI-X index as u32 words (aligned for
/// the header): argsz, flags, index, start, count, then one i32 eventfd per
/// vector.
fn irq_set_words(flags: u32, start: u32, fds: &[RawFd]) -> Vec<u32> {
    let mut words = vec![0u32; HEADER_WORDS + fds.len()];
    words[0] = (words.len() * 4) as u32;
    words[1] = flags;
    words[2] = VFIO_PCI_MSIX_IRQ_INDEX;
    words[3] = start;
    words[4] = fds.len() as u32;
    for (word, fd) in words[HEADER_WORDS..].iter_mut().zip(fds) {
        *word = *fd as u32;
    }
    words
}

/// VFIO_DEVICE_SET_IRQS on one device's MSI-X index, counted.
#[derive(Debug)]
pub struct VfioIrqs {
    fd: OwnedFd,
    calls: AtomicU64,
}

impl VfioIrqs {
    /// Issues SET_IRQS on a duplicate of the VFIO device fd `fd`.
    pub fn new(fd: RawFd) -> Result<VfioIrqs, Error> {
        // SAFETY: `fd` is an open VFIO device fd for the duration of this
        // borrow (the caller holds the device); we duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| Error::Device {
                what: "dup of the device fd".into(),
                source: e,
            })?;
        Ok(VfioIrqs {
            fd,
            calls: AtomicU64::new(0),
        })
    }

    /// SET_IRQS calls issued so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn set_irqs(&self, flags: u32, start: u32, fds: &[RawFd]) -> Result<(), Error> {
        let words = irq_set_words(flags, start, fds);
        self.calls.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `words` is a complete, 4-byte aligned vfio_irq_set whose
        // argsz covers the header and the `count` i32 eventfds after it;
        // the kernel reads at most argsz bytes.
        let ret = unsafe {
            ioctl_with_ptr(
                &self.fd.as_raw_fd(),
                VFIO_DEVICE_SET_IRQS(),
                words.as_ptr().cast::<vfio_irq_set>(),
            )
        };
        if ret < 0 {
            return Err(Error::Device {
                what: format!(
                    "VFIO_DEVICE_SET_IRQS (MSI-X, start {start}, count {})",
                    fds.len()
                ),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Enables MSI-X with vector *i* wired to `fds[i]`.
    pub fn enable(&self, fds: &[RawFd]) -> Result<(), Error> {
        self.set_irqs(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
            0,
            fds,
        )
    }

    /// Points enabled `vector` at `fd` (the host frees and requests its
    /// IRQ again: what QEMU and crosvm do on a guest mask and unmask).
    pub fn point(&self, vector: u16, fd: RawFd) -> Result<(), Error> {
        self.set_irqs(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
            u32::from(vector),
            &[fd],
        )
    }

    /// Disables MSI-X.
    pub fn disable(&self) -> Result<(), Error> {
        self.set_irqs(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 0, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vector_repoint_is_a_header_and_one_eventfd() {
        let w = irq_set_words(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
            7,
            &[42],
        );
        assert_eq!(w.len(), HEADER_WORDS + 1);
        assert_eq!(
            w[0] as usize,
            (HEADER_WORDS + 1) * 4,
            "argsz covers header and data"
        );
        assert_eq!(w[2], VFIO_PCI_MSIX_IRQ_INDEX);
        assert_eq!((w[3], w[4], w[5]), (7, 1, 42));
    }

    #[test]
    fn disable_has_no_data() {
        let w = irq_set_words(VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE, 0, &[]);
        assert_eq!(w.len(), HEADER_WORDS);
        assert_eq!((w[0] as usize, w[4]), (HEADER_WORDS * 4, 0));
    }

    #[test]
    fn request_number_matches_the_uapi_header() {
        // _IO(';', 100 + 10)
        assert_eq!(VFIO_DEVICE_SET_IRQS(), 0x3b6e);
    }
}
