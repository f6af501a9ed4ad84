//! VFIO device regions: VFIO_DEVICE_GET_REGION_INFO with its capability
//! chain, and pread/pwrite at a region offset.
//!
//! The kernel fills `struct vfio_region_info` and, when the region has
//! capabilities (`VFIO_REGION_INFO_FLAG_CAPS`), reports the `argsz` it needs
//! for them; a second call with a buffer that large returns the chain of
//! `struct vfio_info_cap_header` (`id`, `version`, `next`), each `next`
//! being a byte offset from the start of the info buffer, 0 ending it.

use std::os::fd::RawFd;

use vfio_bindings::bindings::vfio::{
    vfio_region_info, VFIO_BASE, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_FLAG_CAPS,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_TYPE,
};
use vmm_sys_util::ioctl::ioctl_with_mut_ptr;
use vmm_sys_util::ioctl_io_nr;

use crate::{Error, Result};

ioctl_io_nr!(VFIO_DEVICE_GET_REGION_INFO, VFIO_TYPE as u32, VFIO_BASE + 8);

const INFO_BYTES: usize = std::mem::size_of::<vfio_region_info>();
/// Largest capability chain we accept from the kernel (a few caps in practice).
const MAX_INFO_BYTES: usize = 64 * 1024;

/// What VFIO says about one device region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// The VFIO region index.
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Size of the region in bytes.
    pub size: u64,
    /// Offset of the region in the device fd (for pread/pwrite/mmap).
    pub offset: u64,
    /// Capability IDs in chain order (`VFIO_REGION_INFO_CAP_*`).
    pub caps: Vec<u16>,
}

impl RegionInfo {
    /// The region can be mmapped.
    pub fn mmap(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_MMAP != 0
    }

    /// The host lets userspace mmap the MSI-X table inside this BAR.
    pub fn msix_mappable(&self) -> bool {
        self.caps
            .contains(&(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16))
    }
}

/// Walks the capability chain of an info buffer starting at `first`
/// (the `cap_offset` field). Stops at offset 0, at a header that would not
/// fit in `info`, or at a loop; returns the IDs seen.
pub(crate) fn cap_chain(info: &[u8], first: u32) -> Vec<u16> {
    let mut ids = Vec::new();
    let mut offset = first as usize;
    let mut seen = Vec::new();
    while offset != 0 && offset + 8 <= info.len() && !seen.contains(&offset) {
        seen.push(offset);
        let id = u16::from_ne_bytes([info[offset], info[offset + 1]]);
        let next = u32::from_ne_bytes([
            info[offset + 4],
            info[offset + 5],
            info[offset + 6],
            info[offset + 7],
        ]);
        ids.push(id);
        offset = next as usize;
    }
    ids
}

fn get_region_info_raw(fd: RawFd, index: u32, argsz: usize) -> Result<Vec<u64>> {
    // u64 words: aligned for vfio_region_info (which holds u64 fields).
    let mut buf = vec![0u64; argsz.div_ceil(8)];
    let info = buf.as_mut_ptr().cast::<vfio_region_info>();
    // SAFETY: `buf` is at least INFO_BYTES long and 8-byte aligned, so the
    // header fields are in bounds and aligned.
    unsafe {
        (*info).argsz = argsz as u32;
        (*info).index = index;
    }
    // SAFETY: the kernel writes at most `argsz` bytes (the value we put in
    // the header) into `buf`, which is that long; the fd is a VFIO device.
    let ret = unsafe { ioctl_with_mut_ptr(&fd, VFIO_DEVICE_GET_REGION_INFO(), info) };
    if ret < 0 {
        return Err(Error::RegionInfo {
            index,
            errno: errno(),
        });
    }
    Ok(buf)
}

/// VFIO_DEVICE_GET_REGION_INFO for `index`, with its capability chain.
pub(crate) fn region_info(fd: RawFd, index: u32) -> Result<RegionInfo> {
    let mut buf = get_region_info_raw(fd, index, INFO_BYTES)?;
    let header = |buf: &Vec<u64>| {
        // SAFETY: `buf` holds at least one whole, aligned vfio_region_info.
        unsafe { std::ptr::read(buf.as_ptr().cast::<vfio_region_info>()) }
    };
    let mut info = header(&buf);
    let wanted = info.argsz as usize;
    if info.flags & VFIO_REGION_INFO_FLAG_CAPS != 0
        && wanted > INFO_BYTES
        && wanted <= MAX_INFO_BYTES
    {
        buf = get_region_info_raw(fd, index, wanted)?;
        info = header(&buf);
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let caps = if info.flags & VFIO_REGION_INFO_FLAG_CAPS != 0 {
        cap_chain(&bytes[..wanted.min(bytes.len())], info.cap_offset)
    } else {
        Vec::new()
    };
    Ok(RegionInfo {
        index,
        flags: info.flags,
        size: info.size,
        offset: info.offset,
        caps,
    })
}

/// Reads `buf.len()` bytes at `offset` inside `region`.
pub(crate) fn region_read(
    fd: RawFd,
    region: &RegionInfo,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    let fail = |errno| Error::RegionAccess {
        index: region.index,
        offset,
        errno,
    };
    if offset.saturating_add(buf.len() as u64) > region.size {
        return Err(fail(libc::EINVAL));
    }
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; pread writes
    // at most that many.
    let n = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            (region.offset + offset) as libc::off_t,
        )
    };
    transferred(n, buf.len()).map_err(fail)
}

/// Writes `buf` at `offset` inside `region`.
pub(crate) fn region_write(fd: RawFd, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<()> {
    let fail = |errno| Error::RegionAccess {
        index: region.index,
        offset,
        errno,
    };
    if offset.saturating_add(buf.len() as u64) > region.size {
        return Err(fail(libc::EINVAL));
    }
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    let n = unsafe {
        libc::pwrite(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            (region.offset + offset) as libc::off_t,
        )
    };
    transferred(n, buf.len()).map_err(fail)
}

/// A pread/pwrite result: Ok for a full transfer, else the errno (EIO for a
/// short one).
fn transferred(n: isize, len: usize) -> std::result::Result<(), i32> {
    if n < 0 {
        Err(errno())
    } else if n as usize != len {
        Err(libc::EIO)
    } else {
        Ok(())
    }
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put_cap(buf: &mut [u8], at: usize, id: u16, next: u32) {
        buf[at..at + 2].copy_from_slice(&id.to_ne_bytes());
        buf[at + 2..at + 4].copy_from_slice(&1u16.to_ne_bytes());
        buf[at + 4..at + 8].copy_from_slice(&next.to_ne_bytes());
    }

    #[test]
    fn chain_is_walked_in_order_until_next_is_zero() {
        let mut info = vec![0u8; 64];
        put_cap(&mut info, 32, 1, 48); // sparse mmap
        put_cap(&mut info, 48, 3, 0); // MSIX_MAPPABLE
        assert_eq!(cap_chain(&info, 32), vec![1, 3]);
    }

    #[test]
    fn msix_mappable_is_recognised_anywhere_in_the_chain() {
        let mut info = vec![0u8; 64];
        put_cap(&mut info, 32, 3, 40);
        put_cap(&mut info, 40, 2, 0);
        let region = RegionInfo {
            index: 3,
            flags: VFIO_REGION_INFO_FLAG_MMAP | VFIO_REGION_INFO_FLAG_CAPS,
            size: 0x4000,
            offset: 3 << 40,
            caps: cap_chain(&info, 32),
        };
        assert!(region.msix_mappable() && region.mmap());
        let plain = RegionInfo {
            caps: vec![2],
            ..region
        };
        assert!(!plain.msix_mappable());
    }

    #[test]
    fn chain_pointing_outside_the_buffer_stops() {
        let mut info = vec![0u8; 48];
        put_cap(&mut info, 32, 3, 44); // next header would end past the buffer
        assert_eq!(cap_chain(&info, 32), vec![3]);
        assert_eq!(cap_chain(&info, 200), Vec::<u16>::new());
    }

    #[test]
    fn looping_chain_stops() {
        let mut info = vec![0u8; 64];
        put_cap(&mut info, 32, 3, 40);
        put_cap(&mut info, 40, 1, 32);
        assert_eq!(cap_chain(&info, 32), vec![3, 1]);
    }

    #[test]
    fn no_caps_when_first_offset_is_zero() {
        assert!(cap_chain(&[0u8; 64], 0).is_empty());
    }
}
