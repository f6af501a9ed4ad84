//! Fuzz target `model_access`: arbitrary layouts and arbitrary sequences of
//! guest accesses and host calls on an `MsixModel`, checked against the same
//! invariant oracle as the proptest properties
//! (`crates/msix-model/tests/support/oracle.rs`).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use msix_model::{BarOffset, MsixModel};

#[path = "../../crates/msix-model/tests/support/oracle.rs"]
mod oracle;

use oracle::{apply_and_check, check_invariants, Access, Layout};

/// Upper bound on read lengths, to keep each input fast.
const MAX_READ_LEN: usize = 64;

#[derive(Arbitrary, Debug)]
enum FuzzAccess {
    ReadCapability {
        offset: u64,
        len: u8,
    },
    WriteCapability {
        offset: u64,
        bytes: Vec<u8>,
    },
    ReadTable {
        offset: u64,
        len: u8,
    },
    WriteTable {
        offset: u64,
        bytes: Vec<u8>,
    },
    /// A well-formed table write (aligned dword or qword inside a small table).
    WriteTableField {
        vector: u8,
        dword: u8,
        value: u64,
        qword: bool,
    },
    ReadPba {
        offset: u64,
        len: u8,
    },
    WritePba {
        offset: u64,
        bytes: Vec<u8>,
    },
    WriteMessageControl {
        value: u16,
    },
    SetPending {
        vector: u16,
        pending: bool,
    },
    Reset,
    SnapshotRoundTrip,
    RestoreTampered {
        tamper: u8,
        value: u64,
    },
}

impl FuzzAccess {
    fn into_access(self) -> Access {
        let len = |len: u8| usize::from(len) % (MAX_READ_LEN + 1);
        match self {
            FuzzAccess::ReadCapability { offset, len: l } => Access::ReadCapability {
                offset,
                len: len(l),
            },
            FuzzAccess::WriteCapability { offset, bytes } => {
                Access::WriteCapability { offset, bytes }
            }
            FuzzAccess::ReadTable { offset, len: l } => Access::ReadTable {
                offset,
                len: len(l),
            },
            FuzzAccess::WriteTable { offset, bytes } => Access::WriteTable { offset, bytes },
            FuzzAccess::WriteTableField {
                vector,
                dword,
                value,
                qword,
            } => {
                let base = u64::from(vector) * 16;
                if qword {
                    Access::WriteTable {
                        offset: base + u64::from(dword % 2) * 8,
                        bytes: value.to_le_bytes().to_vec(),
                    }
                } else {
                    Access::WriteTable {
                        offset: base + u64::from(dword % 4) * 4,
                        bytes: (value as u32).to_le_bytes().to_vec(),
                    }
                }
            }
            FuzzAccess::ReadPba { offset, len: l } => Access::ReadPba {
                offset,
                len: len(l),
            },
            FuzzAccess::WritePba { offset, bytes } => Access::WritePba { offset, bytes },
            FuzzAccess::WriteMessageControl { value } => Access::WriteMessageControl { value },
            FuzzAccess::SetPending { vector, pending } => Access::SetPending { vector, pending },
            FuzzAccess::Reset => Access::Reset,
            FuzzAccess::SnapshotRoundTrip => Access::SnapshotRoundTrip,
            FuzzAccess::RestoreTampered { tamper, value } => {
                Access::RestoreTampered { tamper, value }
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Use the layout fields as they are (mostly invalid) instead of
    /// normalising them into a valid layout.
    raw_layout: bool,
    table_size: u16,
    next_pointer: u8,
    table_bir: u8,
    table_offset: u32,
    pba_bir: u8,
    pba_offset: u32,
    accesses: Vec<FuzzAccess>,
}

fuzz_target!(|input: Input| {
    let (table_size, table, pba) = if input.raw_layout {
        (
            input.table_size,
            BarOffset::new(input.table_bir, input.table_offset),
            BarOffset::new(input.pba_bir, input.pba_offset),
        )
    } else {
        // Small tables most of the time: they reach interesting states faster.
        let table_size = if input.table_size & 0x8000 != 0 {
            input.table_size % 2048 + 1
        } else {
            input.table_size % 80 + 1
        };
        (
            table_size,
            BarOffset::new(input.table_bir % 6, input.table_offset & !7),
            BarOffset::new(input.pba_bir % 6, input.pba_offset & !7),
        )
    };
    // Layouts may be invalid: construction must then fail, not panic.
    let Ok(model) = MsixModel::new(table_size, table, pba) else {
        return;
    };
    let mut model = model.with_next_pointer(input.next_pointer);
    if let Err(violation) = check_invariants(&model, &Layout::of(&model)) {
        panic!("fresh model: {violation}");
    }
    for access in input.accesses {
        let access = access.into_access();
        if let Err(violation) = apply_and_check(&mut model, &access) {
            panic!("{access:?}: {violation}");
        }
    }
});
