//! The shadow table: the userspace pages the guest reads through a read-only
//! memslot.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use crate::{page_align_up, Error, Result};

/// Page-aligned userspace memory holding the table image, updated with
/// atomic dword stores so a guest reading concurrently through the memslot
/// never sees a torn dword. Bytes past the table read as zero, as the model
/// defines reads past the table's end.
#[derive(Debug)]
pub struct TableShadow {
    region: MmapRegion<()>,
    table_len: u64,
}

impl TableShadow {
    /// Maps zeroed pages for a table of `table_len` bytes.
    pub fn new(table_len: u64) -> Result<Self> {
        let size = usize::try_from(page_align_up(table_len.max(1)))
            .map_err(|_| Error::Shadow("table too large".into()))?;
        let region = MmapRegion::new(size).map_err(|e| Error::Shadow(e.to_string()))?;
        Ok(TableShadow { region, table_len })
    }

    /// Host address of the pages (for the memslot).
    pub fn host_address(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// Size of the pages in bytes.
    pub fn size(&self) -> u64 {
        self.region.size() as u64
    }

    /// Length of the table image in bytes.
    pub fn table_len(&self) -> u64 {
        self.table_len
    }

    fn check(&self, offset: u64) -> Result<usize> {
        if offset % 4 != 0 || offset + 4 > self.table_len {
            return Err(Error::OutOfRange {
                offset,
                len: self.table_len,
            });
        }
        Ok(offset as usize)
    }

    /// Stores one aligned dword of the table image.
    pub fn store_dword(&self, offset: u64, value: u32) -> Result<()> {
        let at = self.check(offset)?;
        self.region
            .as_volatile_slice()
            .store(value, at, Ordering::SeqCst)
            .map_err(|e| Error::Shadow(e.to_string()))
    }

    /// Loads one aligned dword of the table image.
    pub fn load_dword(&self, offset: u64) -> Result<u32> {
        let at = self.check(offset)?;
        self.region
            .as_volatile_slice()
            .load(at, Ordering::SeqCst)
            .map_err(|e| Error::Shadow(e.to_string()))
    }

    /// Stores the four dwords of one 16-byte entry. Vector Control goes last
    /// when the entry is being unmasked and first when masked, so a guest
    /// reading concurrently never sees an unmasked entry with a stale message.
    pub fn store_entry(&self, vector: u16, dwords: [u32; 4]) -> Result<()> {
        let base = u64::from(vector) * 16;
        let masking = dwords[3] & 1 == 1;
        if masking {
            self.store_dword(base + 12, dwords[3])?;
        }
        for (i, dword) in dwords.iter().enumerate().take(3) {
            self.store_dword(base + 4 * i as u64, *dword)?;
        }
        if !masking {
            self.store_dword(base + 12, dwords[3])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_is_page_sized_zeroed_and_bounds_checked() {
        let s = TableShadow::new(16 * 3).unwrap();
        assert_eq!(s.size(), 4096);
        assert_eq!(s.load_dword(0).unwrap(), 0);
        s.store_entry(2, [0xFEE0_0000, 0, 0x41, 1]).unwrap();
        assert_eq!(s.load_dword(32).unwrap(), 0xFEE0_0000);
        assert_eq!(s.load_dword(44).unwrap(), 1);
        assert!(s.store_dword(48, 1).is_err());
        assert!(s.store_dword(2, 1).is_err());
    }
}
