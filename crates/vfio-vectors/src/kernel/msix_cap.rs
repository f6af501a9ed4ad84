//! The MSI-X capability in PCI config space (PCI Local Bus spec 3.0, 6.8.2).
//!
//! Parsed from a copy of the first 256 bytes of config space (read through
//! the VFIO config region, where vfio-pci passes the MSI-X capability
//! registers through unchanged).

use crate::{Error, Result};

/// PCI capability ID of MSI-X.
const CAP_ID_MSIX: u8 = 0x11;
/// Status register bit: the function has a capability list.
const STATUS_CAP_LIST: u16 = 1 << 4;
const STATUS: usize = 0x06;
const CAP_POINTER: usize = 0x34;
/// Bytes of one MSI-X table entry.
pub(crate) const ENTRY_BYTES: u64 = 16;
/// Offset of Vector Control inside a table entry.
pub(crate) const VECTOR_CONTROL: u64 = 12;
/// Vector Control bit 0: the vector is masked.
pub(crate) const VECTOR_CONTROL_MASK: u32 = 1;

/// Where a function's MSI-X table and PBA live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCapability {
    /// Config-space offset of the capability.
    pub cap_offset: u8,
    /// Table Size (Message Control bits 10:0, plus one).
    pub table_size: u16,
    /// BAR indicator of the table (0..=5).
    pub table_bir: u8,
    /// Offset of the table inside its BAR.
    pub table_offset: u32,
    /// BAR indicator of the Pending Bit Array (0..=5).
    pub pba_bir: u8,
    /// Offset of the PBA inside its BAR.
    pub pba_offset: u32,
}

impl MsixCapability {
    /// Finds and decodes the MSI-X capability in `config` (at least the 64
    /// byte header; normally 256 bytes). `Ok(None)` when the function has no
    /// MSI-X capability.
    pub fn find(config: &[u8]) -> Result<Option<Self>> {
        let u16_at = |off: usize| -> Option<u16> {
            Some(u16::from_le_bytes(
                config.get(off..off + 2)?.try_into().ok()?,
            ))
        };
        let u32_at = |off: usize| -> Option<u32> {
            Some(u32::from_le_bytes(
                config.get(off..off + 4)?.try_into().ok()?,
            ))
        };
        let status =
            u16_at(STATUS).ok_or_else(|| invalid("config space shorter than its header"))?;
        if status & STATUS_CAP_LIST == 0 {
            return Ok(None);
        }
        let mut next = usize::from(config.get(CAP_POINTER).copied().unwrap_or(0) & 0xfc);
        // A capability list has at most (256 - 64) / 4 entries; anything
        // longer loops, and a malformed device must not hang us.
        for _ in 0..48 {
            if next < 0x40 {
                return Ok(None);
            }
            let (Some(&id), Some(&ptr)) = (config.get(next), config.get(next + 1)) else {
                return Ok(None);
            };
            if id == CAP_ID_MSIX {
                let control = u16_at(next + 2).ok_or_else(|| invalid("capability truncated"))?;
                let table = u32_at(next + 4).ok_or_else(|| invalid("capability truncated"))?;
                let pba = u32_at(next + 8).ok_or_else(|| invalid("capability truncated"))?;
                let cap = MsixCapability {
                    cap_offset: next as u8,
                    table_size: (control & 0x7ff) + 1,
                    table_bir: (table & 7) as u8,
                    table_offset: table & !7,
                    pba_bir: (pba & 7) as u8,
                    pba_offset: pba & !7,
                };
                if cap.table_bir > 5 || cap.pba_bir > 5 {
                    return Err(invalid(&format!(
                        "reserved BIR (table {}, PBA {})",
                        cap.table_bir, cap.pba_bir
                    )));
                }
                return Ok(Some(cap));
            }
            next = usize::from(ptr & 0xfc);
        }
        Err(invalid("capability list loops"))
    }

    /// Bytes the table occupies in its BAR.
    pub fn table_bytes(&self) -> u64 {
        u64::from(self.table_size) * ENTRY_BYTES
    }

    /// Bytes the PBA occupies in its BAR (whole QWORDs).
    pub fn pba_bytes(&self) -> u64 {
        u64::from(self.table_size).div_ceil(64) * 8
    }
}

fn invalid(why: &str) -> Error {
    Error::InvalidMsixCapability(why.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// A config space with a PM capability at 0x40 chained to MSI-X at 0x70.
    pub(crate) fn synthetic_config(table: u32, pba: u32, table_size: u16) -> Vec<u8> {
        let mut cfg = vec![0u8; 256];
        cfg[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
        cfg[STATUS..STATUS + 2].copy_from_slice(&STATUS_CAP_LIST.to_le_bytes());
        cfg[CAP_POINTER] = 0x40;
        cfg[0x40] = 0x01; // power management
        cfg[0x41] = 0x70;
        cfg[0x70] = CAP_ID_MSIX;
        cfg[0x71] = 0x00;
        cfg[0x72..0x74].copy_from_slice(&(table_size - 1).to_le_bytes());
        cfg[0x74..0x78].copy_from_slice(&table.to_le_bytes());
        cfg[0x78..0x7c].copy_from_slice(&pba.to_le_bytes());
        cfg
    }

    #[test]
    fn igb_like_capability_decodes_table_and_pba_in_bar3() {
        let cfg = synthetic_config(0x0000_0003, 0x0000_2003, 10);
        let cap = MsixCapability::find(&cfg).unwrap().unwrap();
        assert_eq!(
            cap,
            MsixCapability {
                cap_offset: 0x70,
                table_size: 10,
                table_bir: 3,
                table_offset: 0,
                pba_bir: 3,
                pba_offset: 0x2000,
            }
        );
        assert_eq!(cap.table_bytes(), 160);
        assert_eq!(cap.pba_bytes(), 8);
    }

    #[test]
    fn table_size_uses_eleven_bits_of_message_control() {
        let mut cfg = synthetic_config(0x1000, 0x1804, 2048);
        // Enable and Function Mask bits must not leak into the size.
        cfg[0x73] |= 0xc0;
        let cap = MsixCapability::find(&cfg).unwrap().unwrap();
        assert_eq!(cap.table_size, 2048);
        assert_eq!((cap.table_bir, cap.table_offset), (0, 0x1000));
        assert_eq!((cap.pba_bir, cap.pba_offset), (4, 0x1800));
        assert_eq!(cap.pba_bytes(), 256);
    }

    #[test]
    fn function_without_capability_list_has_no_msix() {
        let mut cfg = synthetic_config(3, 0x2003, 4);
        cfg[STATUS] = 0;
        assert_eq!(MsixCapability::find(&cfg).unwrap(), None);
    }

    #[test]
    fn list_without_msix_ends_at_null_pointer() {
        let mut cfg = synthetic_config(3, 0x2003, 4);
        cfg[0x41] = 0;
        assert_eq!(MsixCapability::find(&cfg).unwrap(), None);
    }

    #[test]
    fn looping_capability_list_is_an_error_not_a_hang() {
        let mut cfg = synthetic_config(3, 0x2003, 4);
        cfg[0x41] = 0x40;
        assert!(matches!(
            MsixCapability::find(&cfg),
            Err(Error::InvalidMsixCapability(_))
        ));
    }

    #[test]
    fn reserved_bir_is_rejected() {
        let cfg = synthetic_config(6, 0x2003, 4);
        assert!(MsixCapability::find(&cfg).is_err());
    }
}
