//! The MSI-X table as a peer VMM stores it: raw entries, Function Mask and
//! Enable, and nothing derived. Each model decides from these (and from an
//! entry's value before and after a write) what to do, as its VMM does.

use crate::model::PeerModel;
use msix_model::{
    MESSAGE_CONTROL_ENABLE as MSIX_ENABLE, MESSAGE_CONTROL_FUNCTION_MASK as FUNCTION_MASK,
};

/// Entries (address low, address high, data, Vector Control), MSI-X Enable
/// and Function Mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTable {
    entries: Vec<[u32; 4]>,
    /// MSI-X Enable as the model last saw it.
    pub enabled: bool,
    /// Function Mask as the model keeps it.
    pub function_mask: bool,
}

/// The table a model starts with: every entry masked (the PCI reset value)
/// except in Dragonball, whose entries start at zero; cloud-hypervisor
/// starts with its Function Mask state set.
pub fn initial(model: PeerModel, vectors: u16) -> RawTable {
    let control = match model {
        PeerModel::DragonballLike => 0,
        _ => 1,
    };
    RawTable {
        entries: vec![[0, 0, 0, control]; usize::from(vectors)],
        enabled: false,
        function_mask: model == PeerModel::CloudHypervisorLike,
    }
}

/// An entry's 16 bytes, little endian, as the guest sees them.
fn entry_bytes(entry: &[u32; 4]) -> [u8; 16] {
    let mut bytes = [0; 16];
    for (chunk, dword) in bytes.chunks_mut(4).zip(entry) {
        chunk.copy_from_slice(&dword.to_le_bytes());
    }
    bytes
}

/// What one table write did to its entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryWrite {
    /// The entry.
    pub vector: u16,
    /// Offset of the write in the entry (0, 4, 8, 12).
    pub offset_in_entry: u64,
    /// Bytes written.
    pub len: usize,
    /// The entry before.
    pub old: [u32; 4],
    /// The entry after.
    pub new: [u32; 4],
}

impl EntryWrite {
    /// A write of `len` bytes at table offset `offset` that turned `old`
    /// into `new`.
    fn at(offset: u64, len: usize, old: [u32; 4], new: [u32; 4]) -> EntryWrite {
        EntryWrite {
            vector: (offset / 16) as u16,
            offset_in_entry: offset % 16,
            len,
            old,
            new,
        }
    }

    /// The Mask bit before.
    pub fn was_masked(&self) -> bool {
        self.old[3] & 1 == 1
    }
    /// The Mask bit after.
    pub fn is_masked(&self) -> bool {
        self.new[3] & 1 == 1
    }
    /// Whether address or data changed.
    pub fn message_changed(&self) -> bool {
        self.old[..3] != self.new[..3]
    }
}

impl RawTable {
    /// Keeps Message Control's Function Mask and MSI-X Enable bits from
    /// `value`; returns what they were, `(function_mask, enabled)`.
    pub fn set_message_control(&mut self, value: u16) -> (bool, bool) {
        let old = (self.function_mask, self.enabled);
        self.function_mask = value & FUNCTION_MASK != 0;
        self.enabled = value & MSIX_ENABLE != 0;
        old
    }

    /// Number of entries.
    pub fn len(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `v`'s Mask bit (true for an entry past the end).
    pub fn masked(&self, v: u16) -> bool {
        self.entries
            .get(usize::from(v))
            .is_none_or(|e| e[3] & 1 == 1)
    }

    /// Entry `v`'s message: address and data.
    pub fn message(&self, v: u16) -> (u64, u32) {
        self.entries.get(usize::from(v)).map_or((0, 0), |e| {
            (u64::from(e[0]) | (u64::from(e[1]) << 32), e[2])
        })
    }

    /// A dword or qword read at `offset` (zeros past the end or for another
    /// size).
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let index = (offset / 16) as usize;
        let at = (offset % 16 / 4) as usize;
        let Some(entry) = self.entries.get(index) else {
            return;
        };
        match data.len() {
            4 => data.copy_from_slice(&entry[at].to_le_bytes()),
            8 if at % 2 == 0 => {
                data[..4].copy_from_slice(&entry[at].to_le_bytes());
                data[4..].copy_from_slice(&entry[at + 1].to_le_bytes());
            }
            _ => {}
        }
    }

    /// Any access of up to 8 bytes inside one entry, byte for byte, as
    /// Dragonball's `MsixState::read_table` serves it; one that crosses the
    /// entry's end reads all ones, one past the table zeros.
    pub fn read_bytes(&self, offset: u64, data: &mut [u8]) {
        let Some(entry) = self.entries.get((offset / 16) as usize) else {
            data.fill(0);
            return;
        };
        let at = (offset % 16) as usize;
        if data.len() > 8 || at + data.len() > 16 {
            data.fill(0xff);
            return;
        }
        data.copy_from_slice(&entry_bytes(entry)[at..at + data.len()]);
    }

    /// Any write of up to 8 bytes inside one entry, byte for byte, as
    /// Dragonball's `MsixState::write_table` stores it; `None` (ignored)
    /// past the table or across the entry's end.
    pub fn write_bytes(&mut self, offset: u64, data: &[u8]) -> Option<EntryWrite> {
        let index = (offset / 16) as usize;
        let at = (offset % 16) as usize;
        if data.len() > 8 || at + data.len() > 16 {
            return None;
        }
        let entry = self.entries.get_mut(index)?;
        let old = *entry;
        let mut bytes = entry_bytes(entry);
        bytes[at..at + data.len()].copy_from_slice(data);
        for (dword, chunk) in entry.iter_mut().zip(bytes.chunks(4)) {
            *dword = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(EntryWrite::at(offset, data.len(), old, *entry))
    }

    /// A dword or aligned qword write at `offset`; `None` (ignored) past the
    /// end or for another size.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Option<EntryWrite> {
        let index = (offset / 16) as usize;
        let at = (offset % 16 / 4) as usize;
        let entry = self.entries.get_mut(index)?;
        let old = *entry;
        let dword = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        match data.len() {
            4 => entry[at] = dword(data),
            8 if at % 2 == 0 => {
                entry[at] = dword(&data[..4]);
                entry[at + 1] = dword(&data[4..]);
            }
            _ => return None,
        }
        Some(EntryWrite::at(offset, data.len(), old, *entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_report_the_entry_before_and_after() {
        let mut t = initial(PeerModel::QemuLike, 2);
        assert!(t.masked(1) && t.masked(7));
        let w = t.write(16 + 12, &0u32.to_le_bytes()).unwrap();
        assert_eq!(w.vector, 1);
        assert!(w.was_masked() && !w.is_masked() && !w.message_changed());
        let w = t
            .write(16, &0x1122_3344_FEE0_0000u64.to_le_bytes())
            .unwrap();
        assert!(w.message_changed());
        assert_eq!(t.message(1), (0x1122_3344_FEE0_0000, 0));
        let mut data = [0u8; 4];
        t.read(16 + 4, &mut data);
        assert_eq!(u32::from_le_bytes(data), 0x1122_3344);
        assert_eq!(t.write(32, &[0; 4]), None, "past the end");
        assert_eq!(t.write(0, &[0; 2]), None, "not a dword");
        assert!(!initial(PeerModel::DragonballLike, 1).masked(0));
        assert!(initial(PeerModel::CloudHypervisorLike, 1).function_mask);
    }

    #[test]
    fn byte_accesses_reach_the_entry_byte_for_byte() {
        let mut t = initial(PeerModel::DragonballLike, 2);
        t.write(16, &0xFEE0_0000u32.to_le_bytes()).unwrap();
        let mut two = [0u8; 2];
        t.read_bytes(16 + 2, &mut two);
        assert_eq!(two, [0xE0, 0xFE]);
        let w = t.write_bytes(16 + 12, &[1]).unwrap();
        assert!(!w.was_masked() && w.is_masked());
        assert_eq!((w.offset_in_entry, w.len), (12, 1));
        let mut across = [0u8; 4];
        t.read_bytes(14, &mut across);
        assert_eq!(across, [0xff; 4], "across an entry's end");
        assert_eq!(t.write_bytes(14, &[0; 4]), None);
        t.read_bytes(64, &mut across);
        assert_eq!(across, [0; 4], "past the table");
    }
}
