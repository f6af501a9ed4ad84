//! The physical MSI-X table and PBA seen through a shared memory mapping.
//!
//! [`Mapping`] owns an mmap (of a VFIO BAR region, or anonymous memory in
//! tests); [`MsixTableMap`] locates the table and the PBA inside it and does
//! the only accesses we make to them: 32-bit reads and read-modify-writes of
//! Vector Control (entry offset 16*v+12) and 32-bit reads of the PBA. It
//! never writes Message Address or Data: with interrupt remapping they hold
//! the host's remap handles.

use std::os::fd::RawFd;
use std::ptr::NonNull;

use super::msix_cap::{MsixCapability, ENTRY_BYTES, VECTOR_CONTROL, VECTOR_CONTROL_MASK};
use super::region::RegionInfo;
use crate::{Error, Result};

/// An owned `MAP_SHARED` read/write memory mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory (device MMIO or anonymous)
// owned by this value; nothing in it is tied to the creating thread, and all
// accesses go through `&self`/`&mut self` of the owner.
unsafe impl Send for Mapping {}
// SAFETY: accesses through `&Mapping` are volatile reads only.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` at file offset `offset` (page aligned).
    pub(crate) fn device(fd: RawFd, offset: u64, len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh mapping at an address the kernel picks; it does not
        // alias any Rust object. The result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        Self::from_mmap(ptr, len)
    }

    /// Maps `len` bytes of zeroed anonymous shared memory (a stand-in BAR
    /// for tests).
    #[cfg(test)]
    pub fn anonymous(len: usize) -> std::io::Result<Self> {
        // SAFETY: as above, a fresh anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        Self::from_mmap(ptr, len)
    }

    fn from_mmap(ptr: *mut libc::c_void, len: usize) -> std::io::Result<Self> {
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Mapping { base, len })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Pointer to the aligned dword at `offset`, or None when it is not
    /// entirely inside the mapping or not 4-byte aligned.
    fn dword(&self, offset: usize) -> Option<*mut u32> {
        if offset % 4 != 0 || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: `offset + 4 <= len`, so the result stays inside the mapping.
        Some(unsafe { self.base.as_ptr().add(offset) }.cast::<u32>())
    }

    fn read_u32(&self, offset: usize) -> Option<u32> {
        let ptr = self.dword(offset)?;
        // SAFETY: `ptr` is an aligned dword inside our live mapping; volatile
        // because it is device memory another agent changes.
        Some(unsafe { ptr.read_volatile() })
    }

    fn write_u32(&mut self, offset: usize, value: u32) -> Option<()> {
        let ptr = self.dword(offset)?;
        // SAFETY: as in `read_u32`; the mapping is writable (PROT_WRITE).
        unsafe { ptr.write_volatile(value) };
        Some(())
    }

    /// Test access to arbitrary dwords of the mapping.
    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    pub(crate) fn peek(&self, offset: usize) -> u32 {
        self.read_u32(offset).unwrap()
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    pub(crate) fn poke(&mut self, offset: usize, value: u32) {
        self.write_u32(offset, value).unwrap()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe a mapping we created and still own;
        // no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The MSI-X table (and, when it is in the mapped range, the PBA) inside a
/// [`Mapping`]. Offsets are relative to the start of the mapping and were
/// bounds-checked at construction.
#[derive(Debug)]
pub struct MsixTableMap {
    mapping: Mapping,
    table_start: usize,
    entries: u16,
    pba_start: Option<usize>,
}

impl MsixTableMap {
    /// Maps the page range of the table's BAR (VFIO region
    /// `table_region` of device fd `fd`) that covers the MSI-X table, and
    /// the PBA when it is in the same BAR. Err says why it cannot be
    /// mapped: table or PBA outside its BAR, no MSIX_MAPPABLE capability,
    /// a region that cannot be mmapped, or the mmap failing.
    pub(crate) fn map(
        fd: RawFd,
        msix: &MsixCapability,
        table_region: &RegionInfo,
        pba_region: &RegionInfo,
        vector_count: u16,
    ) -> std::result::Result<MsixTableMap, String> {
        let region = table_region;
        if u64::from(msix.table_offset) + msix.table_bytes() > region.size
            || u64::from(msix.pba_offset) + msix.pba_bytes() > pba_region.size
        {
            return Err(format!(
                "table {:#x}+{:#x} in BAR{} ({:#x} bytes) or PBA {:#x}+{:#x} in BAR{} ({:#x} bytes) out of bounds",
                msix.table_offset,
                msix.table_bytes(),
                msix.table_bir,
                region.size,
                msix.pba_offset,
                msix.pba_bytes(),
                msix.pba_bir,
                pba_region.size
            ));
        }
        if !region.msix_mappable() {
            return Err(format!(
                "BAR{} has no VFIO_REGION_INFO_CAP_MSIX_MAPPABLE (caps {:?})",
                region.index, region.caps
            ));
        }
        if !region.mmap() {
            return Err(format!("BAR{} region is not mmap-able", region.index));
        }
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        };
        let table_start = u64::from(msix.table_offset);
        let mut start = table_start / page * page;
        let mut end = (table_start + msix.table_bytes()).div_ceil(page) * page;
        let pba_here = msix.pba_bir == msix.table_bir;
        if pba_here {
            let pba = u64::from(msix.pba_offset);
            start = start.min(pba / page * page);
            end = end.max((pba + msix.pba_bytes()).div_ceil(page) * page);
        }
        // vfio-pci allows mmap up to the page-aligned BAR size.
        if end > region.size.div_ceil(page) * page {
            return Err(format!(
                "table/PBA pages {start:#x}..{end:#x} exceed BAR{} ({:#x} bytes)",
                region.index, region.size
            ));
        }
        let mapping = Mapping::device(fd, region.offset + start, (end - start) as usize)
            .map_err(|e| format!("mmap of BAR{} {start:#x}..{end:#x}: {e}", region.index))?;
        let pba = pba_here.then(|| (u64::from(msix.pba_offset) - start) as usize);
        MsixTableMap::new(mapping, (table_start - start) as usize, vector_count, pba)
            .map_err(|e| e.to_string())
    }

    /// Locates a table of `entries` entries at `table_start` and optionally
    /// the PBA at `pba_start` inside `mapping`. Fails when either does not
    /// fit or is not dword aligned.
    pub fn new(
        mapping: Mapping,
        table_start: usize,
        entries: u16,
        pba_start: Option<usize>,
    ) -> Result<Self> {
        let bad = |what: &str| {
            Error::InvalidMsixCapability(format!(
                "{what} outside the {} byte mapping (table at {table_start:#x}, {entries} entries, PBA at {pba_start:?})",
                mapping.len()
            ))
        };
        let table_end = table_start as u64 + u64::from(entries) * ENTRY_BYTES;
        if table_start % 4 != 0 || table_end > mapping.len() as u64 {
            return Err(bad("table"));
        }
        if let Some(pba) = pba_start {
            let pba_end = pba as u64 + u64::from(entries).div_ceil(64) * 8;
            if pba % 4 != 0 || pba_end > mapping.len() as u64 {
                return Err(bad("PBA"));
            }
        }
        Ok(MsixTableMap {
            mapping,
            table_start,
            entries,
            pba_start,
        })
    }

    fn vector_control_offset(&self, vector: u16) -> Option<usize> {
        (vector < self.entries).then(|| {
            self.table_start + usize::from(vector) * ENTRY_BYTES as usize + VECTOR_CONTROL as usize
        })
    }

    /// Reads Vector Control of `vector` (None when out of range).
    pub fn vector_control(&self, vector: u16) -> Option<u32> {
        self.mapping.read_u32(self.vector_control_offset(vector)?)
    }

    /// Sets or clears the Mask bit of `vector` with a 32-bit
    /// read-modify-write that keeps the other (reserved/steering) bits, then
    /// reads the dword back so the posted write reaches the device before we
    /// return (PCI ordering: a read flushes earlier posted writes). Returns
    /// the value read back, None when `vector` is out of range.
    pub fn set_masked(&mut self, vector: u16, masked: bool) -> Option<u32> {
        let offset = self.vector_control_offset(vector)?;
        let old = self.mapping.read_u32(offset)?;
        let new = if masked {
            old | VECTOR_CONTROL_MASK
        } else {
            old & !VECTOR_CONTROL_MASK
        };
        if new != old {
            self.mapping.write_u32(offset, new)?;
        }
        self.mapping.read_u32(offset)
    }

    /// The Pending bit of `vector` in the PBA; None when the PBA is not in
    /// this mapping or `vector` is out of range.
    pub fn pending(&self, vector: u16) -> Option<bool> {
        if vector >= self.entries {
            return None;
        }
        let dword = self.pba_start? + usize::from(vector / 32) * 4;
        Some(self.mapping.read_u32(dword)? & (1 << (vector % 32)) != 0)
    }

    /// The mapping, for tests that play the device.
    #[cfg(test)]
    pub(crate) fn mapping_mut(&mut self) -> &mut Mapping {
        &mut self.mapping
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An igb-like BAR3: 10 entries at 0, PBA at 0x2000, in 16 KiB.
    fn bar3() -> MsixTableMap {
        let mut mapping = Mapping::anonymous(0x4000).unwrap();
        for v in 0..10usize {
            // What the host leaves: remapped address, data 0, masked.
            mapping.poke(v * 16, 0xfee0_0218);
            mapping.poke(v * 16 + 4, 0);
            mapping.poke(v * 16 + 8, 0x1234);
            mapping.poke(v * 16 + 12, 1);
        }
        MsixTableMap::new(mapping, 0, 10, Some(0x2000)).unwrap()
    }

    #[test]
    fn unmask_clears_only_the_mask_bit_and_reads_back() {
        let mut table = bar3();
        table.mapping_mut().poke(3 * 16 + 12, 0x8000_0001);
        assert_eq!(table.set_masked(3, false), Some(0x8000_0000));
        assert_eq!(table.vector_control(3), Some(0x8000_0000));
        assert_eq!(table.set_masked(3, true), Some(0x8000_0001));
    }

    #[test]
    fn masking_never_touches_address_or_data_or_other_entries() {
        let mut table = bar3();
        table.set_masked(4, false);
        table.set_masked(4, true);
        let m = table.mapping_mut();
        assert_eq!(m.peek(4 * 16), 0xfee0_0218);
        assert_eq!(m.peek(4 * 16 + 4), 0);
        assert_eq!(m.peek(4 * 16 + 8), 0x1234);
        assert_eq!(m.peek(5 * 16 + 12), 1);
        assert_eq!(m.peek(3 * 16 + 12), 1);
    }

    #[test]
    fn vectors_past_the_table_are_refused() {
        let mut table = bar3();
        assert_eq!(table.set_masked(10, true), None);
        assert_eq!(table.vector_control(10), None);
        assert_eq!(table.pending(10), None);
    }

    #[test]
    fn pending_reads_the_vector_bit_of_the_pba() {
        let mut table = bar3();
        table.mapping_mut().poke(0x2000, 1 << 7);
        assert_eq!(table.pending(7), Some(true));
        assert_eq!(table.pending(6), Some(false));
    }

    #[test]
    fn pending_bits_past_32_use_the_next_dword() {
        let mut mapping = Mapping::anonymous(0x1000).unwrap();
        mapping.poke(0x804, 1 << 1); // vector 33
        let table = MsixTableMap::new(mapping, 0, 64, Some(0x800)).unwrap();
        assert_eq!(table.pending(33), Some(true));
        assert_eq!(table.pending(1), Some(false));
    }

    #[test]
    fn table_or_pba_outside_the_mapping_is_rejected() {
        let mapping = Mapping::anonymous(0x1000).unwrap();
        assert!(MsixTableMap::new(mapping, 0xf80, 10, None).is_err());
        let mapping = Mapping::anonymous(0x1000).unwrap();
        assert!(MsixTableMap::new(mapping, 0, 10, Some(0xff8)).is_ok());
        let mapping = Mapping::anonymous(0x1000).unwrap();
        assert!(MsixTableMap::new(mapping, 0, 10, Some(0xffc)).is_err());
    }

    #[test]
    fn table_without_pba_in_the_mapping_reports_no_pending_state() {
        let mapping = Mapping::anonymous(0x1000).unwrap();
        let table = MsixTableMap::new(mapping, 0, 10, None).unwrap();
        assert_eq!(table.pending(0), None);
    }
}
