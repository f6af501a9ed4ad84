//! The MSI-X function model: capability Message Control, table, PBA, and
//! the changes each guest access causes.

use crate::change::{Change, ChangeSet, VectorView};
use crate::entry::TableEntry;
use crate::error::{Error, LocationFault, Structure};
use crate::location::BarOffset;
use crate::registers::{
    ADDRESS_LO_RESERVED_MASK, CAPABILITY_ID, CAPABILITY_LEN, MAX_TABLE_SIZE,
    MESSAGE_CONTROL_ENABLE, MESSAGE_CONTROL_FUNCTION_MASK, MESSAGE_CONTROL_TABLE_SIZE_MASK,
    PBA_QWORD_SIZE, TABLE_ENTRY_SIZE, VECTOR_CONTROL_MASK_BIT,
};

/// Vectors covered by one PBA qword.
const VECTORS_PER_PBA_QWORD: u16 = 64;

/// The MSI-X state of one PCI function, with the guest's view of the
/// capability, the table and the PBA.
///
/// Sans-IO: accesses go in, [`Change`]s come out, nothing else happens.
/// Guest-facing methods (`read_*`, `write_*`) accept any offset and length and
/// never fail or panic; see `docs/semantics.md` for the full access table.
///
/// # Example
///
/// ```
/// use msix_model::{BarOffset, Change, MsixModel};
///
/// let mut msix = MsixModel::new(4, BarOffset::new(0, 0), BarOffset::new(0, 0x800))?;
///
/// // The guest programs vector 1, enables MSI-X, then unmasks vector 1.
/// msix.write_table(16, &0xfee0_0000u32.to_le_bytes());
/// msix.write_table(16 + 8, &0x41u32.to_le_bytes());
/// assert_eq!(msix.write_capability(2, &0x8000u16.to_le_bytes()), vec![Change::Enabled]);
/// assert_eq!(
///     msix.write_table(16 + 12, &0u32.to_le_bytes()),
///     vec![Change::Unmasked { vector: 1 }]
/// );
///
/// // Reads are a byte image of the table, whatever the width.
/// let mut data = [0u8; 8];
/// msix.read_table(16 + 8, &mut data);
/// assert_eq!(data, [0x41, 0, 0, 0, 0, 0, 0, 0]);
/// assert!(!msix.is_masked(1)?);
/// # Ok::<(), msix_model::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsixModel {
    table_size: u16,
    table: BarOffset,
    pba: BarOffset,
    next_pointer: u8,
    enabled: bool,
    function_mask: bool,
    entries: Vec<TableEntry>,
    pending_bits: Vec<u64>,
}

/// Number of PBA qwords for `table_size` vectors: ceil(table_size / 64).
pub(crate) fn pba_qwords(table_size: u16) -> usize {
    usize::from(table_size.div_ceil(VECTORS_PER_PBA_QWORD))
}

/// Fills `data` with the bytes of an image of `image_len` bytes starting at
/// `offset`; bytes at or past the end (or past u64::MAX) read as zero.
fn read_image(image_len: u64, offset: u64, data: &mut [u8], byte_at: impl Fn(u64) -> u8) {
    for (index, out) in (0u64..).zip(data.iter_mut()) {
        *out = match offset.checked_add(index) {
            Some(address) if address < image_len => byte_at(address),
            _ => 0,
        };
    }
}

/// Byte `index` (0 = least significant) of a little-endian value.
fn le_byte(value: u64, index: u64) -> u8 {
    usize::try_from(index)
        .ok()
        .and_then(|index| value.to_le_bytes().get(index).copied())
        .unwrap_or(0)
}

fn check_location(structure: Structure, location: BarOffset) -> Result<(), Error> {
    let fault = if location.bir > BarOffset::MAX_BIR {
        Some(LocationFault::BirOutOfRange)
    } else if location.offset % 8 != 0 {
        Some(LocationFault::MisalignedOffset)
    } else {
        None
    };
    match fault {
        Some(fault) => Err(Error::InvalidLocation {
            structure,
            location,
            fault,
        }),
        None => Ok(()),
    }
}

impl MsixModel {
    /// Creates the model of a function with `table_size` vectors (1..=2048)
    /// whose table and PBA live at the given BAR locations, in the reset state.
    ///
    /// Errors: [`Error::InvalidTableSize`]; [`Error::InvalidLocation`] when a
    /// BIR is above 5, an offset is not 8-byte aligned, or table and PBA share
    /// a BAR and overlap (PCIe Base: they may share a page but must not overlap).
    pub fn new(table_size: u16, table: BarOffset, pba: BarOffset) -> Result<Self, Error> {
        if table_size == 0 || table_size > MAX_TABLE_SIZE {
            return Err(Error::InvalidTableSize { size: table_size });
        }
        check_location(Structure::Table, table)?;
        check_location(Structure::Pba, pba)?;
        // Built directly in the reset state (see `reset`).
        let model = MsixModel {
            table_size,
            table,
            pba,
            next_pointer: 0,
            enabled: false,
            function_mask: false,
            entries: vec![TableEntry::RESET; usize::from(table_size)],
            pending_bits: vec![0; pba_qwords(table_size)],
        };
        if table.bir == pba.bir {
            let table_start = u64::from(table.offset);
            let pba_start = u64::from(pba.offset);
            // Both ends fit in u64: u32 offset plus at most 32 KiB.
            let overlap = table_start < pba_start + model.pba_len()
                && pba_start < table_start + model.table_len();
            if overlap {
                return Err(Error::InvalidLocation {
                    structure: Structure::Pba,
                    location: pba,
                    fault: LocationFault::Overlap,
                });
            }
        }
        Ok(model)
    }

    /// Sets the capability's Next Pointer byte (read-only to the guest).
    pub fn with_next_pointer(mut self, next: u8) -> Self {
        self.next_pointer = next;
        self
    }

    /// The capability's Next Pointer byte.
    pub fn next_pointer(&self) -> u8 {
        self.next_pointer
    }

    /// Number of table entries (vectors).
    pub fn table_size(&self) -> u16 {
        self.table_size
    }

    /// Size in bytes of the table: 16 per vector.
    pub fn table_len(&self) -> u64 {
        u64::from(self.table_size) * TABLE_ENTRY_SIZE
    }

    /// Size in bytes of the PBA: one qword per 64 vectors, rounded up.
    pub fn pba_len(&self) -> u64 {
        u64::from(self.table_size.div_ceil(VECTORS_PER_PBA_QWORD)) * PBA_QWORD_SIZE
    }

    /// Where the table lives (BIR and offset).
    pub fn table_location(&self) -> BarOffset {
        self.table
    }

    /// Where the PBA lives (BIR and offset).
    pub fn pba_location(&self) -> BarOffset {
        self.pba
    }

    /// Function reset: MSI-X disabled, Function Mask clear, every entry
    /// masked with address and data zero, nothing pending.
    ///
    /// Returns the changes from the state before: `Disabled` if MSI-X was
    /// enabled, `Masked` for vectors that were effectively unmasked,
    /// `MessageChanged` for entries whose message was nonzero.
    pub fn reset(&mut self) -> Vec<Change> {
        let before = self.views();
        let was_enabled = self.enabled;
        self.enabled = false;
        self.function_mask = false;
        self.entries.fill(TableEntry::RESET);
        self.pending_bits.fill(0);
        self.changes_since(&before)
            .finish(was_enabled, self.enabled)
    }

    /// Whether MSI-X Enable is set.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether Function Mask is set.
    pub fn is_function_masked(&self) -> bool {
        self.function_mask
    }

    /// The Message Control register as the guest reads it: Table Size - 1 in
    /// bits 10:0, Function Mask in bit 14, MSI-X Enable in bit 15.
    pub fn message_control(&self) -> u16 {
        let mut value = self.table_size.saturating_sub(1) & MESSAGE_CONTROL_TABLE_SIZE_MASK;
        if self.function_mask {
            value |= MESSAGE_CONTROL_FUNCTION_MASK;
        }
        if self.enabled {
            value |= MESSAGE_CONTROL_ENABLE;
        }
        value
    }

    /// Writes the Message Control register. Only bits 14 (Function Mask) and
    /// 15 (MSI-X Enable) are writable; the rest of `value` is ignored.
    ///
    /// Reports `Enabled`/`Disabled` for the Enable bit and `Masked`/`Unmasked`
    /// for every vector whose effective mask flipped. Vectors that become
    /// unmasked have their pending bit cleared.
    pub fn write_message_control(&mut self, value: u16) -> Vec<Change> {
        let enabled = value & MESSAGE_CONTROL_ENABLE != 0;
        let function_mask = value & MESSAGE_CONTROL_FUNCTION_MASK != 0;
        if enabled == self.enabled && function_mask == self.function_mask {
            return Vec::new();
        }
        let before = self.views();
        let was_enabled = self.enabled;
        self.enabled = enabled;
        self.function_mask = function_mask;
        let changes = self.changes_since(&before);
        self.clear_pending_of_unmasked(&changes);
        changes.finish(was_enabled, enabled)
    }

    /// The 12-byte capability image.
    fn capability_image(&self) -> [u8; 12] {
        let control = self.message_control().to_le_bytes();
        let table = self.table.register().to_le_bytes();
        let pba = self.pba.register().to_le_bytes();
        [
            CAPABILITY_ID,
            self.next_pointer,
            control[0],
            control[1],
            table[0],
            table[1],
            table[2],
            table[3],
            pba[0],
            pba[1],
            pba[2],
            pba[3],
        ]
    }

    /// The byte range of a well-formed capability access: width 1, 2 or 4,
    /// naturally aligned, inside the 12 bytes.
    fn capability_range(offset: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let len = u64::try_from(len).ok()?;
        if !matches!(len, 1 | 2 | 4) || offset % len != 0 {
            return None;
        }
        let end = offset.checked_add(len)?;
        if end > CAPABILITY_LEN {
            return None;
        }
        Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?)
    }

    /// Reads `data.len()` bytes of the capability at `offset` (from the
    /// capability start). An access that is not width 1, 2 or 4 naturally
    /// aligned inside the 12 bytes reads all zeros.
    pub fn read_capability(&self, offset: u64, data: &mut [u8]) {
        let image = self.capability_image();
        match Self::capability_range(offset, data.len()).and_then(|range| image.get(range)) {
            Some(bytes) => data.copy_from_slice(bytes),
            None => data.fill(0),
        }
    }

    /// Writes `data` to the capability at `offset`. The bytes merge into the
    /// register image and only Function Mask and MSI-X Enable can change; an
    /// access that is not width 1, 2 or 4 naturally aligned inside the 12
    /// bytes is ignored.
    pub fn write_capability(&mut self, offset: u64, data: &[u8]) -> Vec<Change> {
        let mut image = self.capability_image();
        let Some(bytes) =
            Self::capability_range(offset, data.len()).and_then(|range| image.get_mut(range))
        else {
            return Vec::new();
        };
        bytes.copy_from_slice(data);
        self.write_message_control(u16::from_le_bytes([image[2], image[3]]))
    }

    /// Reads the table's little-endian byte image at `offset` (from the table
    /// start), any length, any alignment. Bytes at or past
    /// [`table_len`](Self::table_len) read as zero.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        read_image(self.table_len(), offset, data, |address| {
            usize::try_from(address / TABLE_ENTRY_SIZE)
                .ok()
                .and_then(|vector| self.entries.get(vector))
                .and_then(|entry| entry.dword((address % TABLE_ENTRY_SIZE) / 4))
                .map_or(0, |dword| le_byte(u64::from(dword), address % 4))
        });
    }

    /// Writes the table at `offset` (from the table start).
    ///
    /// Applies an aligned DWORD (`offset % 4 == 0`, 4 bytes) or an aligned
    /// QWORD (`offset % 8 == 0`, 8 bytes, as the low dword then the high
    /// dword) that lies wholly inside the table; every other write is ignored
    /// (PCIe Base: software accesses the table with aligned DWORD or QWORD
    /// transactions only). Read-only bits (Message Address 1:0, Vector
    /// Control 31:1) ignore what is written.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Vec<Change> {
        let in_table = u64::try_from(data.len())
            .ok()
            .and_then(|len| offset.checked_add(len))
            .is_some_and(|end| end <= self.table_len());
        if !in_table {
            return Vec::new();
        }
        match *data {
            [b0, b1, b2, b3] if offset % 4 == 0 => {
                self.write_table_dwords(offset, &[u32::from_le_bytes([b0, b1, b2, b3])])
            }
            [b0, b1, b2, b3, b4, b5, b6, b7] if offset % 8 == 0 => self.write_table_dwords(
                offset,
                &[
                    u32::from_le_bytes([b0, b1, b2, b3]),
                    u32::from_le_bytes([b4, b5, b6, b7]),
                ],
            ),
            _ => Vec::new(),
        }
    }

    /// Applies consecutive dwords starting at the dword-aligned `offset`, all
    /// inside one entry (an aligned QWORD never crosses a 16-byte entry).
    fn write_table_dwords(&mut self, offset: u64, dwords: &[u32]) -> Vec<Change> {
        let Ok(vector) = u16::try_from(offset / TABLE_ENTRY_SIZE) else {
            return Vec::new();
        };
        let Some(before) = self.view(vector) else {
            return Vec::new();
        };
        let Some(entry) = self.entries.get_mut(usize::from(vector)) else {
            return Vec::new();
        };
        let first_dword = (offset % TABLE_ENTRY_SIZE) / 4;
        for (index, &value) in (first_dword..).zip(dwords) {
            match index {
                0 => entry.address_lo = value & !ADDRESS_LO_RESERVED_MASK,
                1 => entry.address_hi = value,
                2 => entry.data = value,
                3 => entry.vector_control = value & VECTOR_CONTROL_MASK_BIT,
                _ => {}
            }
        }
        let Some(after) = self.view(vector) else {
            return Vec::new();
        };
        let mut changes = ChangeSet::default();
        changes.vector(vector, before, after);
        self.clear_pending_of_unmasked(&changes);
        changes.finish(self.enabled, self.enabled)
    }

    /// Reads the PBA's little-endian byte image at `offset` (from the PBA
    /// start): bit `v % 64` of qword `v / 64` is vector `v`'s pending bit.
    /// Bits of vectors at or past the table size and bytes at or past
    /// [`pba_len`](Self::pba_len) read as zero.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) {
        read_image(self.pba_len(), offset, data, |address| {
            usize::try_from(address / PBA_QWORD_SIZE)
                .ok()
                .and_then(|qword| self.pending_bits.get(qword))
                .map_or(0, |&bits| le_byte(bits, address % PBA_QWORD_SIZE))
        });
    }

    /// Guest write to the PBA: ignored, the PBA is read-only. Always returns
    /// no change.
    pub fn write_pba(&mut self, _offset: u64, _data: &[u8]) -> Vec<Change> {
        Vec::new()
    }

    fn check_vector(&self, vector: u16) -> Result<usize, Error> {
        if vector < self.table_size {
            Ok(usize::from(vector))
        } else {
            Err(Error::VectorOutOfRange {
                vector,
                table_size: self.table_size,
            })
        }
    }

    /// The table entry of `vector`.
    pub fn entry(&self, vector: u16) -> Result<TableEntry, Error> {
        let index = self.check_vector(vector)?;
        self.entries
            .get(index)
            .copied()
            .ok_or(Error::VectorOutOfRange {
                vector,
                table_size: self.table_size,
            })
    }

    /// All table entries, vector 0 first.
    pub fn entries(&self) -> &[TableEntry] {
        &self.entries
    }

    /// Whether `vector` is *effectively* masked: its entry's Mask bit, or
    /// Function Mask, or MSI-X disabled.
    pub fn is_masked(&self, vector: u16) -> Result<bool, Error> {
        let entry = self.entry(vector)?;
        Ok(self.effectively_masked(&entry))
    }

    fn effectively_masked(&self, entry: &TableEntry) -> bool {
        entry.is_masked() || self.function_mask || !self.enabled
    }

    /// Sets or clears `vector`'s pending bit (host side: the binding sets it
    /// when the vector fired while masked). The model does not refuse setting
    /// the bit of an unmasked vector; it is cleared at the next unmask.
    pub fn set_pending(&mut self, vector: u16, pending: bool) -> Result<(), Error> {
        self.check_vector(vector)?;
        let bit = 1u64 << (vector % VECTORS_PER_PBA_QWORD);
        let qword = usize::from(vector / VECTORS_PER_PBA_QWORD);
        let Some(bits) = self.pending_bits.get_mut(qword) else {
            return Err(Error::VectorOutOfRange {
                vector,
                table_size: self.table_size,
            });
        };
        if pending {
            *bits |= bit;
        } else {
            *bits &= !bit;
        }
        Ok(())
    }

    /// Whether `vector`'s pending bit is set.
    pub fn is_pending(&self, vector: u16) -> Result<bool, Error> {
        self.check_vector(vector)?;
        let bit = 1u64 << (vector % VECTORS_PER_PBA_QWORD);
        let qword = usize::from(vector / VECTORS_PER_PBA_QWORD);
        Ok(self
            .pending_bits
            .get(qword)
            .is_some_and(|bits| bits & bit != 0))
    }

    /// The Pending Bit Array, qword 0 first.
    pub fn pending_bits(&self) -> &[u64] {
        &self.pending_bits
    }

    fn view(&self, vector: u16) -> Option<VectorView> {
        self.entries
            .get(usize::from(vector))
            .map(|entry| VectorView {
                masked: self.effectively_masked(entry),
                message: entry.message(),
            })
    }

    pub(crate) fn views(&self) -> Vec<VectorView> {
        self.entries
            .iter()
            .map(|entry| VectorView {
                masked: self.effectively_masked(entry),
                message: entry.message(),
            })
            .collect()
    }

    /// Differences of every vector from `before` to now.
    pub(crate) fn changes_since(&self, before: &[VectorView]) -> ChangeSet {
        let mut changes = ChangeSet::default();
        for ((vector, before), after) in (0u16..).zip(before).zip(self.views()) {
            changes.vector(vector, *before, after);
        }
        changes
    }

    /// Spec: when a vector is unmasked with its pending bit set, the function
    /// sends the message and clears the bit. The model clears it; the binding
    /// delivers the message.
    fn clear_pending_of_unmasked(&mut self, changes: &ChangeSet) {
        for vector in changes.unmasked_vectors() {
            if let Some(bits) = self
                .pending_bits
                .get_mut(usize::from(vector / VECTORS_PER_PBA_QWORD))
            {
                *bits &= !(1u64 << (vector % VECTORS_PER_PBA_QWORD));
            }
        }
    }

    /// Replaces the whole state (used by restore after validation).
    pub(crate) fn replace_state(
        &mut self,
        enabled: bool,
        function_mask: bool,
        entries: &[TableEntry],
        pending_bits: &[u64],
    ) {
        self.enabled = enabled;
        self.function_mask = function_mask;
        self.entries.clear();
        self.entries.extend_from_slice(entries);
        self.pending_bits.clear();
        self.pending_bits.extend_from_slice(pending_bits);
    }
}
