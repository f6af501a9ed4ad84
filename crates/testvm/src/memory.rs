//! Guest RAM: one anonymous mapping shared with the guest through memslot 0.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// The guest's RAM, mapped in the host. The host and the guest access it
/// concurrently, so every access goes through atomics or volatile copies.
#[derive(Debug)]
pub(crate) struct GuestRam {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this struct for its whole life;
// all accesses are atomic or volatile, so sharing it between threads is sound.
unsafe impl Send for GuestRam {}
// SAFETY: as above.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    pub(crate) fn new(size: u64) -> Result<Self> {
        let size = usize::try_from(size).map_err(|_| Error::Memory(libc::EINVAL))?;
        // SAFETY: an anonymous private mapping with no address hint; the result
        // is checked against MAP_FAILED before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Error::Memory(errno()));
        }
        let base = NonNull::new(addr.cast::<u8>()).ok_or(Error::Memory(libc::ENOMEM))?;
        Ok(GuestRam { base, size })
    }

    pub(crate) fn host_address(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    pub(crate) fn size(&self) -> u64 {
        self.size as u64
    }

    fn check(&self, gpa: u64, len: usize) -> Result<usize> {
        let start = usize::try_from(gpa).map_err(|_| Error::OutOfRam { gpa })?;
        match start.checked_add(len) {
            Some(end) if end <= self.size => Ok(start),
            _ => Err(Error::OutOfRam { gpa }),
        }
    }

    /// Copies `bytes` into guest RAM at `gpa`.
    pub(crate) fn write_bytes(&self, gpa: u64, bytes: &[u8]) -> Result<()> {
        let start = self.check(gpa, bytes.len())?;
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: start + i < size was checked above; the mapping is live.
            unsafe { std::ptr::write_volatile(self.base.as_ptr().add(start + i), *b) };
        }
        Ok(())
    }

    fn atomic_u64(&self, gpa: u64) -> Result<&AtomicU64> {
        if gpa % 8 != 0 {
            return Err(Error::OutOfRam { gpa });
        }
        let start = self.check(gpa, 8)?;
        // SAFETY: the address is 8-byte aligned (the mapping is page aligned
        // and gpa % 8 == 0), inside the mapping, and lives as long as `self`.
        Ok(unsafe { &*(self.base.as_ptr().add(start).cast::<AtomicU64>()) })
    }

    pub(crate) fn read_u64(&self, gpa: u64) -> Result<u64> {
        Ok(self.atomic_u64(gpa)?.load(Ordering::SeqCst))
    }

    pub(crate) fn write_u64(&self, gpa: u64, value: u64) -> Result<()> {
        self.atomic_u64(gpa)?.store(value, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: base/size describe the mapping created in `new`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}

pub(crate) fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_ram_are_refused() {
        let ram = GuestRam::new(0x2000).unwrap();
        assert!(ram.write_u64(0x1ff8, 7).is_ok());
        assert_eq!(ram.read_u64(0x1ff8).unwrap(), 7);
        assert!(ram.write_u64(0x2000, 1).is_err());
        assert!(ram.read_u64(0x1ffc).is_err());
        assert!(ram.write_bytes(0x1fff, &[1, 2]).is_err());
        assert!(ram.write_bytes(u64::MAX, &[1]).is_err());
    }
}
