//! The error type of msix-model.

use crate::location::BarOffset;

/// Why a table or PBA location was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationFault {
    /// The BIR is above 5.
    BirOutOfRange,
    /// The offset is not QWORD aligned (its low 3 bits would alias the BIR).
    MisalignedOffset,
    /// The table and the PBA are in the same BAR and their ranges overlap.
    Overlap,
}

impl std::fmt::Display for LocationFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LocationFault::BirOutOfRange => "BIR is above 5",
            LocationFault::MisalignedOffset => "offset is not 8-byte aligned",
            LocationFault::Overlap => "table and PBA overlap in one BAR",
        })
    }
}

/// Which MSI-X structure a location error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// The MSI-X table.
    Table,
    /// The Pending Bit Array.
    Pba,
}

impl std::fmt::Display for Structure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Structure::Table => "table",
            Structure::Pba => "PBA",
        })
    }
}

/// Errors of the MSI-X model. Guest accesses never fail; these come from the
/// host-side API (construction, vector-indexed queries, snapshot restore).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The table size is outside 1..=2048.
    #[error("invalid MSI-X table size {size} (must be 1..=2048)")]
    InvalidTableSize {
        /// The refused size.
        size: u16,
    },
    /// A vector number is not below the table size.
    #[error("MSI-X vector {vector} out of range (table size {table_size})")]
    VectorOutOfRange {
        /// The refused vector.
        vector: u16,
        /// The model's table size.
        table_size: u16,
    },
    /// The table or PBA location is invalid.
    #[error("invalid MSI-X {structure} location {location:?}: {fault}")]
    InvalidLocation {
        /// Which structure's location.
        structure: Structure,
        /// The refused location.
        location: BarOffset,
        /// What is wrong with it.
        fault: LocationFault,
    },
    /// The snapshot has a version this crate does not read.
    #[error("MSI-X snapshot version {found}, expected {expected}")]
    SnapshotVersion {
        /// Version in the snapshot.
        found: u32,
        /// Version this crate reads.
        expected: u32,
    },
    /// The snapshot describes a different function layout than the model.
    #[error("MSI-X snapshot {what} is {found}, expected {expected}")]
    SnapshotMismatch {
        /// Which field differs ("table size", "table location", "pba location",
        /// "entry count", "pending qword count", "message control table size").
        what: &'static str,
        /// Value in the snapshot (a location as `(bir << 32) | offset`).
        found: u64,
        /// Value the model requires.
        expected: u64,
    },
    /// The snapshot sets bits that are read-only zero in the model.
    #[error("MSI-X snapshot sets reserved bits in {what} [{index}]: {value:#x}")]
    SnapshotReservedBits {
        /// Which field ("message control", "address low", "vector control", "pending").
        what: &'static str,
        /// Entry or PBA qword index (0 for message control).
        index: usize,
        /// The offending field value.
        value: u64,
    },
}
