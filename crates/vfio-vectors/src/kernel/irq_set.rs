//! `struct vfio_irq_set` argument buffers for VFIO_DEVICE_SET_IRQS.
//!
//! The kernel structure is a 20-byte header (`argsz`, `flags`, `index`,
//! `start`, `count`) followed by `count` data elements whose type depends on
//! the DATA flag: an `i32` eventfd per vector (DATA_EVENTFD), a `u8` per
//! vector (DATA_BOOL), or nothing (DATA_NONE). `argsz` covers header and
//! data and is checked by the kernel (`vfio_set_irqs_validate_and_prepare`).
//! The buffer is built from `u32` words so it is aligned for the header.

use vfio_bindings::bindings::vfio::{
    vfio_irq_set, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE,
};

/// Size of the `vfio_irq_set` header in bytes.
pub(crate) const HEADER_BYTES: usize = std::mem::size_of::<vfio_irq_set>();
const HEADER_WORDS: usize = HEADER_BYTES / 4;

/// One VFIO_DEVICE_SET_IRQS argument, header and trailing data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IrqSetBuf {
    words: Vec<u32>,
}

impl IrqSetBuf {
    fn with_data(flags: u32, index: u32, start: u32, count: u32, data: &[u8]) -> Self {
        let argsz = HEADER_BYTES + data.len();
        let mut words = vec![0u32; argsz.div_ceil(4)];
        words[0] = argsz as u32;
        words[1] = flags;
        words[2] = index;
        words[3] = start;
        words[4] = count;
        for (i, byte) in data.iter().enumerate() {
            let word = &mut words[HEADER_WORDS + i / 4];
            // The kernel reads the data as bytes in memory order; build the
            // word so its native-endian bytes are exactly `data`.
            let mut bytes = word.to_ne_bytes();
            bytes[i % 4] = *byte;
            *word = u32::from_ne_bytes(bytes);
        }
        IrqSetBuf { words }
    }

    /// ACTION_TRIGGER | DATA_EVENTFD: wire vectors `start..start+fds.len()`
    /// to `fds` (an fd of -1 unwires and frees that vector's host IRQ).
    pub(crate) fn eventfds(index: u32, start: u32, fds: &[i32]) -> Self {
        let data: Vec<u8> = fds.iter().flat_map(|fd| fd.to_ne_bytes()).collect();
        Self::with_data(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD,
            index,
            start,
            fds.len() as u32,
            &data,
        )
    }

    /// ACTION_TRIGGER | DATA_BOOL: the kernel signals the trigger eventfd of
    /// each vector whose bool is true (a loopback, no device involved).
    pub(crate) fn bools(index: u32, start: u32, fire: &[bool]) -> Self {
        let data: Vec<u8> = fire.iter().map(|b| u8::from(*b)).collect();
        Self::with_data(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL,
            index,
            start,
            fire.len() as u32,
            &data,
        )
    }

    /// ACTION_TRIGGER | DATA_NONE with count 0: disables the IRQ index.
    pub(crate) fn disable(index: u32) -> Self {
        Self::with_data(
            VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE,
            index,
            0,
            0,
            &[],
        )
    }

    /// Value of `argsz`: header plus data, in bytes.
    #[cfg(test)]
    pub(crate) fn argsz(&self) -> u32 {
        self.words[0]
    }

    /// Pointer to the header, for the ioctl.
    pub(crate) fn as_ptr(&self) -> *const vfio_irq_set {
        self.words.as_ptr().cast()
    }

    /// The argument as the kernel reads it: `argsz` bytes.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let all: Vec<u8> = self.words.iter().flat_map(|w| w.to_ne_bytes()).collect();
        all[..self.argsz() as usize].to_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn header(buf: &IrqSetBuf) -> [u32; 5] {
        let b = buf.bytes();
        std::array::from_fn(|i| u32::from_ne_bytes(b[4 * i..4 * i + 4].try_into().unwrap()))
    }

    #[test]
    fn header_is_twenty_bytes_like_the_kernel_struct() {
        assert_eq!(HEADER_BYTES, 20);
    }

    #[test]
    fn eventfd_set_carries_one_i32_per_vector_after_the_header() {
        let buf = IrqSetBuf::eventfds(2, 3, &[10, 11, -1]);
        assert_eq!(buf.argsz(), 20 + 3 * 4);
        assert_eq!(buf.bytes().len(), 32);
        assert_eq!(header(&buf), [32, (1 << 5) | (1 << 2), 2, 3, 3]);
        let data = &buf.bytes()[20..];
        let fds: Vec<i32> = data
            .chunks(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(fds, vec![10, 11, -1]);
    }

    #[test]
    fn bool_set_carries_one_byte_per_vector() {
        let buf = IrqSetBuf::bools(2, 1, &[false, true, true]);
        assert_eq!(buf.argsz(), 23);
        assert_eq!(header(&buf), [23, (1 << 5) | (1 << 1), 2, 1, 3]);
        assert_eq!(&buf.bytes()[20..], &[0, 1, 1]);
    }

    #[test]
    fn disable_is_data_none_with_count_zero() {
        let buf = IrqSetBuf::disable(2);
        assert_eq!(buf.argsz(), 20);
        assert_eq!(header(&buf), [20, (1 << 5) | 1, 2, 0, 0]);
    }

    #[test]
    fn single_vector_rewire_sets_start_and_count_one() {
        let buf = IrqSetBuf::eventfds(2, 7, &[42]);
        assert_eq!(header(&buf), [24, (1 << 5) | (1 << 2), 2, 7, 1]);
        assert_eq!(&buf.bytes()[20..], &42i32.to_ne_bytes());
    }
}
