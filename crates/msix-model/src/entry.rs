//! One MSI-X table entry and the MSI message it describes.

use serde::{Deserialize, Serialize};

use crate::registers::VECTOR_CONTROL_MASK_BIT;

/// An MSI message: the address the function writes to and the data it writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsiMessage {
    /// Message Address: Upper Address in bits 63:32, Message Address in bits 31:0.
    pub address: u64,
    /// Message Data.
    pub data: u32,
}

/// One 16-byte MSI-X table entry, as the guest sees it (little-endian dwords 0..=3).
///
/// `Default` is the all-zero entry, which is *unmasked*; the entry a reset
/// leaves behind is [`TableEntry::RESET`] (masked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Message Address (dword 0); bits 1:0 are always zero.
    pub address_lo: u32,
    /// Message Upper Address (dword 1).
    pub address_hi: u32,
    /// Message Data (dword 2).
    pub data: u32,
    /// Vector Control (dword 3); only bit 0 (Mask) is implemented, bits 31:1 are zero.
    pub vector_control: u32,
}

impl TableEntry {
    /// The entry after reset: address and data zero, Mask bit set
    /// (PCIe Base, "Vector Control for MSI-X Table Entries": Mask bit default 1).
    pub const RESET: TableEntry = TableEntry {
        address_lo: 0,
        address_hi: 0,
        data: 0,
        vector_control: VECTOR_CONTROL_MASK_BIT,
    };

    /// The message this entry makes the function send.
    pub fn message(&self) -> MsiMessage {
        MsiMessage {
            address: (u64::from(self.address_hi) << 32) | u64::from(self.address_lo),
            data: self.data,
        }
    }

    /// Whether this entry's own Mask bit is set.
    ///
    /// This ignores Function Mask and MSI-X Enable; for the mask that decides
    /// delivery use [`MsixModel::is_masked`](crate::MsixModel::is_masked).
    pub fn is_masked(&self) -> bool {
        self.vector_control & VECTOR_CONTROL_MASK_BIT != 0
    }

    /// Dword `index` (0..=3) of the entry; `None` past the entry.
    pub(crate) fn dword(&self, index: u64) -> Option<u32> {
        match index {
            0 => Some(self.address_lo),
            1 => Some(self.address_hi),
            2 => Some(self.data),
            3 => Some(self.vector_control),
            _ => None,
        }
    }
}
