//! Where the MSI-X table or PBA lives: a BAR Indicator Register (BIR) and an offset into that BAR.

use serde::{Deserialize, Serialize};

/// Location of the MSI-X table or of the Pending Bit Array: BAR number and offset in that BAR.
///
/// In the capability the two share one dword (`offset | bir`): the offset is
/// QWORD aligned so its low 3 bits carry the BIR. A valid location has
/// `bir <= 5` and `offset % 8 == 0`; [`MsixModel::new`](crate::MsixModel::new) checks this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BarOffset {
    /// BAR Indicator Register: which BAR (0..=5) holds the structure.
    pub bir: u8,
    /// Offset of the structure from the start of the BAR; 8-byte aligned.
    pub offset: u32,
}

impl BarOffset {
    /// Highest valid BAR Indicator value (BARs 0..=5).
    pub const MAX_BIR: u8 = 5;

    /// Creates a location from a BAR number and an offset (not validated here).
    pub const fn new(bir: u8, offset: u32) -> Self {
        Self { bir, offset }
    }

    /// The capability register value: `offset | bir` (bits 31:3 offset, bits 2:0 BIR).
    pub const fn register(&self) -> u32 {
        (self.offset & !0x7) | (self.bir as u32 & 0x7)
    }

    /// Decodes a capability register value (`offset | bir`), e.g. one read from a physical device.
    pub const fn from_register(register: u32) -> Self {
        Self {
            bir: (register & 0x7) as u8,
            offset: register & !0x7,
        }
    }

    /// Whether the BIR names a BAR (0..=5) and the offset is QWORD aligned.
    pub const fn is_valid(&self) -> bool {
        self.bir <= Self::MAX_BIR && self.offset % 8 == 0
    }
}
