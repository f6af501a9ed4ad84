//! Snapshot and restore of the model (live migration, save/restore).

use serde::{Deserialize, Serialize};

use crate::change::Change;
use crate::entry::TableEntry;
use crate::error::Error;
use crate::location::BarOffset;
use crate::model::{pba_qwords, MsixModel};
use crate::registers::{
    ADDRESS_LO_RESERVED_MASK, MESSAGE_CONTROL_ENABLE, MESSAGE_CONTROL_FUNCTION_MASK,
    MESSAGE_CONTROL_RESERVED_MASK, MESSAGE_CONTROL_TABLE_SIZE_MASK, VECTOR_CONTROL_MASK_BIT,
};

/// Version of [`MsixState`] this crate writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Serializable state of an [`MsixModel`].
///
/// The layout fields (`table_size`, `table`, `pba`) must match the model a
/// snapshot is restored into; the capability's Next Pointer is configuration,
/// not state, and is not part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixState {
    /// Always [`SNAPSHOT_VERSION`] when written by this crate.
    pub version: u32,
    /// Number of vectors.
    pub table_size: u16,
    /// Table location.
    pub table: BarOffset,
    /// PBA location.
    pub pba: BarOffset,
    /// Message Control as the guest reads it (table size - 1, Function Mask, Enable).
    pub message_control: u16,
    /// Every table entry, vector 0 first; `table_size` of them.
    pub entries: Vec<TableEntry>,
    /// The Pending Bit Array, ceil(table_size / 64) qwords.
    pub pending: Vec<u64>,
}

/// A location as one number for [`Error::SnapshotMismatch`]: `(bir << 32) | offset`.
fn location_code(location: BarOffset) -> u64 {
    (u64::from(location.bir) << 32) | u64::from(location.offset)
}

fn mismatch(what: &'static str, found: u64, expected: u64) -> Result<(), Error> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::SnapshotMismatch {
            what,
            found,
            expected,
        })
    }
}

impl MsixModel {
    /// The model's state, for [`restore`](Self::restore) or
    /// [`from_state`](Self::from_state).
    pub fn snapshot(&self) -> MsixState {
        MsixState {
            version: SNAPSHOT_VERSION,
            table_size: self.table_size(),
            table: self.table_location(),
            pba: self.pba_location(),
            message_control: self.message_control(),
            entries: self.entries().to_vec(),
            pending: self.pending_bits().to_vec(),
        }
    }

    /// Checks that `state` can be restored into this model.
    fn validate(&self, state: &MsixState) -> Result<(), Error> {
        if state.version != SNAPSHOT_VERSION {
            return Err(Error::SnapshotVersion {
                found: state.version,
                expected: SNAPSHOT_VERSION,
            });
        }
        let table_size = self.table_size();
        mismatch(
            "table size",
            u64::from(state.table_size),
            u64::from(table_size),
        )?;
        mismatch(
            "table location",
            location_code(state.table),
            location_code(self.table_location()),
        )?;
        mismatch(
            "pba location",
            location_code(state.pba),
            location_code(self.pba_location()),
        )?;
        mismatch(
            "entry count",
            u64::try_from(state.entries.len()).unwrap_or(u64::MAX),
            u64::from(table_size),
        )?;
        mismatch(
            "pending qword count",
            u64::try_from(state.pending.len()).unwrap_or(u64::MAX),
            u64::try_from(pba_qwords(table_size)).unwrap_or(u64::MAX),
        )?;
        mismatch(
            "message control table size",
            u64::from(state.message_control & MESSAGE_CONTROL_TABLE_SIZE_MASK),
            u64::from(table_size.saturating_sub(1)),
        )?;
        if state.message_control & MESSAGE_CONTROL_RESERVED_MASK != 0 {
            return Err(Error::SnapshotReservedBits {
                what: "message control",
                index: 0,
                value: u64::from(state.message_control),
            });
        }
        for (index, entry) in state.entries.iter().enumerate() {
            if entry.address_lo & ADDRESS_LO_RESERVED_MASK != 0 {
                return Err(Error::SnapshotReservedBits {
                    what: "address low",
                    index,
                    value: u64::from(entry.address_lo),
                });
            }
            if entry.vector_control & !VECTOR_CONTROL_MASK_BIT != 0 {
                return Err(Error::SnapshotReservedBits {
                    what: "vector control",
                    index,
                    value: u64::from(entry.vector_control),
                });
            }
        }
        for (index, &bits) in state.pending.iter().enumerate() {
            // Vectors index*64 .. index*64+63; those >= table_size must be clear.
            let first_vector = u64::try_from(index).unwrap_or(u64::MAX).saturating_mul(64);
            let valid_vectors = u64::from(table_size).saturating_sub(first_vector);
            let valid_mask = match valid_vectors {
                0 => 0,
                1..=63 => (1u64 << valid_vectors) - 1,
                _ => u64::MAX,
            };
            if bits & !valid_mask != 0 {
                return Err(Error::SnapshotReservedBits {
                    what: "pending",
                    index,
                    value: bits,
                });
            }
        }
        Ok(())
    }

    /// Restores `state` into this model, all or nothing: on error the model
    /// is unchanged.
    ///
    /// Refuses a different [`SNAPSHOT_VERSION`], a different table size or
    /// table/PBA location, entry or PBA qword counts that do not match the
    /// table size, pending bits of vectors past the table size, and set
    /// read-only bits (Message Control 13:11, Message Address 1:0, Vector
    /// Control 31:1).
    ///
    /// Returns the changes from the current state to the restored one, in the
    /// usual order. Pending bits are restored as they are, even for vectors
    /// the restore unmasks: the binding decides whether to deliver them.
    pub fn restore(&mut self, state: &MsixState) -> Result<Vec<Change>, Error> {
        self.validate(state)?;
        let before = self.views();
        let was_enabled = self.is_enabled();
        self.replace_state(
            state.message_control & MESSAGE_CONTROL_ENABLE != 0,
            state.message_control & MESSAGE_CONTROL_FUNCTION_MASK != 0,
            &state.entries,
            &state.pending,
        );
        Ok(self
            .changes_since(&before)
            .finish(was_enabled, self.is_enabled()))
    }

    /// Builds a model from a snapshot (Next Pointer 0; chain
    /// [`with_next_pointer`](Self::with_next_pointer) to set it).
    pub fn from_state(state: &MsixState) -> Result<Self, Error> {
        if state.version != SNAPSHOT_VERSION {
            return Err(Error::SnapshotVersion {
                found: state.version,
                expected: SNAPSHOT_VERSION,
            });
        }
        let mut model = MsixModel::new(state.table_size, state.table, state.pba)?;
        model.restore(state)?;
        Ok(model)
    }
}
