//! Specification tests, one behaviour each, named for the rule they check.
//! Clauses refer to PCI Local Bus 3.0 section 6.8.2 and the PCIe Base
//! "MSI-X Capability and Table Structure" section; "defined here" marks
//! behaviour the spec leaves open and docs/semantics.md fixes.

use msix_model::{
    BarOffset, Change, Error, LocationFault, MsiMessage, MsixModel, TableEntry, SNAPSHOT_VERSION,
};

const ENABLE: u16 = 0x8000;
const FUNCTION_MASK: u16 = 0x4000;

fn model(size: u16) -> MsixModel {
    MsixModel::new(size, BarOffset::new(0, 0), BarOffset::new(4, 0)).expect("valid layout")
}

fn dword(value: u32) -> [u8; 4] {
    value.to_le_bytes()
}

fn vector_control(vector: u64) -> u64 {
    vector * 16 + 12
}

fn read_table_u32(m: &MsixModel, offset: u64) -> u32 {
    let mut data = [0u8; 4];
    m.read_table(offset, &mut data);
    u32::from_le_bytes(data)
}

/// An enabled model with `vector` programmed and unmasked.
fn live_vector(size: u16, vector: u16) -> MsixModel {
    let mut m = model(size);
    m.write_message_control(ENABLE);
    let base = u64::from(vector) * 16;
    m.write_table(base, &dword(0xfee0_1000));
    m.write_table(base + 8, &dword(0x40 + u32::from(vector)));
    m.write_table(base + 12, &dword(0));
    m
}

// --- Reset (spec: Mask bits set, Enable and Function Mask clear after reset) ---

#[test]
fn reset_masks_every_entry_and_disables_msix() {
    let m = model(5);
    assert!(!m.is_enabled());
    assert!(!m.is_function_masked());
    for vector in 0..5 {
        assert_eq!(m.entry(vector), Ok(TableEntry::RESET));
        assert_eq!(m.is_masked(vector), Ok(true));
        assert_eq!(m.is_pending(vector), Ok(false));
    }
}

#[test]
fn reset_reports_disable_masks_and_cleared_messages_in_order() {
    let mut m = live_vector(4, 2);
    m.write_table(0, &dword(0xfee0_0000)); // vector 0: message nonzero, still masked
    m.set_pending(3, true).expect("in range");
    assert_eq!(
        m.reset(),
        vec![
            Change::Disabled,
            Change::Masked { vector: 2 },
            Change::MessageChanged {
                vector: 0,
                message: MsiMessage::default()
            },
            Change::MessageChanged {
                vector: 2,
                message: MsiMessage::default()
            },
        ]
    );
    assert_eq!(m.is_pending(3), Ok(false));
    assert_eq!(m.reset(), vec![]);
}

// --- Capability structure ---

#[test]
fn capability_header_reads_id_next_pointer_and_table_size() {
    let m = MsixModel::new(3, BarOffset::new(2, 0x2000), BarOffset::new(2, 0x3000))
        .expect("valid")
        .with_next_pointer(0x50);
    let mut cap = [0u8; 4];
    m.read_capability(0, &mut cap);
    assert_eq!(cap, [0x11, 0x50, 0x02, 0x00]);
    m.read_capability(4, &mut cap);
    assert_eq!(u32::from_le_bytes(cap), 0x2002);
    m.read_capability(8, &mut cap);
    assert_eq!(u32::from_le_bytes(cap), 0x3002);
}

#[test]
fn table_size_field_is_read_only() {
    let mut m = model(8);
    assert_eq!(m.write_capability(2, &0x07ffu16.to_le_bytes()), vec![]);
    assert_eq!(m.message_control(), 7);
    m.write_capability(0, &dword(0xffff_ffff));
    assert_eq!(m.message_control(), 0xc007, "only bits 15:14 took");
}

#[test]
fn message_control_reserved_bits_read_zero() {
    let mut m = model(1);
    m.write_message_control(0xffff);
    assert_eq!(m.message_control() & 0x3800, 0);
}

#[test]
fn capability_id_next_pointer_and_bir_registers_are_read_only() {
    let mut m = model(2).with_next_pointer(0x60);
    for offset in 0..12 {
        m.write_capability(offset, &[0xff]);
    }
    m.write_capability(4, &dword(0xffff_ffff));
    m.write_capability(8, &dword(0xffff_ffff));
    let mut cap = [0u8; 12];
    for offset in 0..12 {
        m.read_capability(offset, &mut cap[offset as usize..offset as usize + 1]);
    }
    assert_eq!(&cap[..2], &[0x11, 0x60]);
    assert_eq!(
        &cap[4..],
        &[0, 0, 0, 0, 4, 0, 0, 0],
        "table BAR 0 offset 0, PBA BAR 4 offset 0"
    );
}

#[test]
fn byte_write_to_message_control_high_byte_enables() {
    let mut m = model(1);
    assert_eq!(m.write_capability(3, &[0x80]), vec![Change::Enabled]);
    assert_eq!(m.message_control(), 0x8000);
}

#[test]
fn misaligned_or_oversized_capability_accesses_read_zero_and_write_nothing() {
    let mut m = model(1).with_next_pointer(0x40);
    for (offset, len) in [
        (1u64, 2usize),
        (2, 4),
        (3, 2),
        (0, 3),
        (0, 8),
        (10, 4),
        (12, 1),
        (u64::MAX, 1),
    ] {
        let mut data = vec![0xee; len];
        m.read_capability(offset, &mut data);
        assert!(data.iter().all(|&b| b == 0), "{offset}/{len}");
        assert_eq!(
            m.write_capability(offset, &vec![0xff; len]),
            vec![],
            "{offset}/{len}"
        );
    }
    assert_eq!(m.message_control(), 0);
}

// --- Enable and Function Mask (effective mask = Mask || Function Mask || !Enable) ---

#[test]
fn entries_are_masked_while_msix_is_disabled() {
    let mut m = model(2);
    assert_eq!(m.write_table(vector_control(0), &dword(0)), vec![]);
    assert_eq!(m.is_masked(0), Ok(true));
    assert_eq!(
        m.write_message_control(ENABLE),
        vec![Change::Enabled, Change::Unmasked { vector: 0 }]
    );
}

#[test]
fn disable_reports_disabled_then_masks_of_unmasked_vectors() {
    let mut m = live_vector(3, 1);
    assert_eq!(
        m.write_message_control(0),
        vec![Change::Disabled, Change::Masked { vector: 1 }]
    );
    assert_eq!(
        m.entry(1).map(|e| e.is_masked()),
        Ok(false),
        "entry Mask bit untouched"
    );
}

#[test]
fn function_mask_masks_all_vectors_without_touching_entry_mask_bits() {
    let mut m = live_vector(3, 0);
    m.write_table(vector_control(2), &dword(0));
    assert_eq!(
        m.write_message_control(ENABLE | FUNCTION_MASK),
        vec![Change::Masked { vector: 0 }, Change::Masked { vector: 2 }]
    );
    for vector in 0..3 {
        assert_eq!(m.is_masked(vector), Ok(true));
    }
    assert_eq!(read_table_u32(&m, vector_control(0)), 0);
    assert_eq!(read_table_u32(&m, vector_control(1)), 1);
    assert_eq!(
        m.write_message_control(ENABLE),
        vec![
            Change::Unmasked { vector: 0 },
            Change::Unmasked { vector: 2 }
        ]
    );
}

#[test]
fn enable_with_function_mask_set_reports_enabled_only() {
    let mut m = model(2);
    m.write_table(vector_control(0), &dword(0));
    assert_eq!(
        m.write_message_control(ENABLE | FUNCTION_MASK),
        vec![Change::Enabled]
    );
}

#[test]
fn writing_the_same_message_control_reports_nothing() {
    let mut m = live_vector(2, 0);
    assert_eq!(m.write_message_control(ENABLE), vec![]);
    assert_eq!(m.write_capability(2, &ENABLE.to_le_bytes()), vec![]);
}

// --- Table entry fields ---

#[test]
fn message_address_low_bits_are_read_only_zero() {
    let mut m = model(1);
    assert_eq!(
        m.write_table(0, &dword(0xfee0_0003)),
        vec![Change::MessageChanged {
            vector: 0,
            message: MsiMessage {
                address: 0xfee0_0000,
                data: 0
            }
        }]
    );
    assert_eq!(read_table_u32(&m, 0), 0xfee0_0000);
}

#[test]
fn vector_control_reserved_bits_read_zero() {
    let mut m = model(1);
    m.write_table(vector_control(0), &dword(0xffff_fffe));
    assert_eq!(read_table_u32(&m, vector_control(0)), 0);
    m.write_table(vector_control(0), &dword(0xffff_ffff));
    assert_eq!(read_table_u32(&m, vector_control(0)), 1);
}

#[test]
fn upper_address_and_data_are_fully_writable() {
    let mut m = model(1);
    m.write_table(4, &dword(0xffff_ffff));
    m.write_table(8, &dword(0xffff_ffff));
    assert_eq!(
        m.entry(0).map(|e| e.message()),
        Ok(MsiMessage {
            address: 0xffff_ffff_0000_0000,
            data: u32::MAX
        })
    );
}

#[test]
fn message_write_to_unmasked_entry_takes_effect() {
    // Spec: undefined; defined here: the new message applies and is reported.
    let mut m = live_vector(1, 0);
    assert_eq!(
        m.write_table(8, &dword(0x99)),
        vec![Change::MessageChanged {
            vector: 0,
            message: MsiMessage {
                address: 0xfee0_1000,
                data: 0x99
            }
        }]
    );
}

#[test]
fn writing_the_same_table_value_reports_nothing() {
    let mut m = live_vector(1, 0);
    assert_eq!(m.write_table(8, &dword(0x40)), vec![]);
    assert_eq!(m.write_table(vector_control(0), &dword(0)), vec![]);
}

// --- Table access widths (spec: aligned DWORD or QWORD) ---

#[test]
fn sub_dword_table_writes_are_ignored() {
    let mut m = model(2);
    for (offset, len) in [(0u64, 1usize), (12, 1), (12, 2), (8, 2), (14, 2)] {
        assert_eq!(
            m.write_table(offset, &vec![0; len]),
            vec![],
            "{offset}/{len}"
        );
    }
    assert_eq!(m.entry(0), Ok(TableEntry::RESET));
}

#[test]
fn misaligned_and_odd_length_table_writes_are_ignored() {
    let mut m = model(2);
    for (offset, len) in [
        (2u64, 4usize),
        (4, 8),
        (12, 8),
        (0, 3),
        (0, 5),
        (0, 16),
        (0, 0),
    ] {
        assert_eq!(
            m.write_table(offset, &vec![0xff; len]),
            vec![],
            "{offset}/{len}"
        );
    }
    assert_eq!(m.entries(), &[TableEntry::RESET; 2]);
}

#[test]
fn table_writes_past_the_end_are_ignored() {
    let mut m = model(2);
    assert_eq!(m.write_table(32, &dword(0)), vec![]);
    assert_eq!(m.write_table(u64::MAX - 3, &dword(0)), vec![]);
    assert_eq!(m.write_table(u64::MAX - 7, &[0; 8]), vec![]);
    assert_eq!(m.write_table(28, &[0; 8]), vec![], "half inside");
}

#[test]
fn qword_write_at_offset_0_sets_full_address() {
    let mut m = model(1);
    let address = 0x0000_0001_fee0_0000u64;
    assert_eq!(
        m.write_table(0, &address.to_le_bytes()),
        vec![Change::MessageChanged {
            vector: 0,
            message: MsiMessage { address, data: 0 }
        }]
    );
}

#[test]
fn qword_write_at_offset_8_changes_data_then_unmasks() {
    let mut m = model(2);
    m.write_message_control(ENABLE);
    let value = 0x0000_0000_0000_0041u64; // data 0x41, Vector Control 0
    assert_eq!(
        m.write_table(16 + 8, &value.to_le_bytes()),
        vec![
            Change::MessageChanged {
                vector: 1,
                message: MsiMessage {
                    address: 0,
                    data: 0x41
                }
            },
            Change::Unmasked { vector: 1 },
        ]
    );
}

#[test]
fn mask_then_message_change_in_one_qword_reports_masked_first() {
    let mut m = live_vector(1, 0);
    let value = (1u64 << 32) | 0x77; // data 0x77, Mask 1
    assert_eq!(
        m.write_table(8, &value.to_le_bytes()),
        vec![
            Change::Masked { vector: 0 },
            Change::MessageChanged {
                vector: 0,
                message: MsiMessage {
                    address: 0xfee0_1000,
                    data: 0x77
                }
            },
        ]
    );
}

#[test]
fn table_reads_are_a_byte_image_at_any_width() {
    let mut m = model(2);
    m.write_table(16, &0x0000_0002_fee0_1004u64.to_le_bytes());
    m.write_table(24, &dword(0x1234_5678));
    let mut qword = [0u8; 8];
    m.read_table(16, &mut qword);
    assert_eq!(u64::from_le_bytes(qword), 0x0000_0002_fee0_1004);
    let mut byte = [0u8; 1];
    m.read_table(25, &mut byte);
    assert_eq!(byte, [0x56]);
    let mut odd = [0u8; 3];
    m.read_table(27, &mut odd);
    assert_eq!(odd, [0x12, 0x01, 0x00], "crosses data into vector control");
    let mut all = vec![0u8; 40];
    m.read_table(0, &mut all);
    assert_eq!(&all[12..16], &[1, 0, 0, 0]);
    assert_eq!(&all[32..], &[0; 8], "past table_len reads zero");
}

#[test]
fn table_reads_at_huge_offsets_read_zero() {
    let m = model(1);
    let mut data = [0xffu8; 8];
    m.read_table(u64::MAX - 2, &mut data);
    assert_eq!(data, [0; 8]);
}

// --- Pending Bit Array ---

#[test]
fn pba_reflects_pending_bits() {
    let mut m = model(70);
    m.set_pending(0, true).expect("in range");
    m.set_pending(9, true).expect("in range");
    m.set_pending(69, true).expect("in range");
    let mut pba = [0u8; 16];
    m.read_pba(0, &mut pba);
    assert_eq!(
        u64::from_le_bytes(pba[..8].try_into().expect("8 bytes")),
        (1 << 9) | 1
    );
    assert_eq!(
        u64::from_le_bytes(pba[8..].try_into().expect("8 bytes")),
        1 << 5
    );
    let mut byte = [0u8; 1];
    m.read_pba(1, &mut byte);
    assert_eq!(byte, [0x02]);
    let mut past = [0xffu8; 4];
    m.read_pba(16, &mut past);
    assert_eq!(past, [0; 4]);
    assert_eq!(m.pba_len(), 16);
}

#[test]
fn pba_writes_are_ignored() {
    let mut m = model(2);
    m.set_pending(1, true).expect("in range");
    assert_eq!(m.write_pba(0, &[0; 8]), vec![]);
    assert_eq!(m.write_pba(0, &dword(0xffff_ffff)), vec![]);
    assert_eq!(m.is_pending(1), Ok(true));
    assert_eq!(m.is_pending(0), Ok(false));
}

#[test]
fn unmask_clears_pending_bit() {
    let mut m = model(2);
    m.write_message_control(ENABLE);
    m.set_pending(1, true).expect("in range");
    assert_eq!(
        m.write_table(vector_control(1), &dword(0)),
        vec![Change::Unmasked { vector: 1 }]
    );
    assert_eq!(m.is_pending(1), Ok(false));
}

#[test]
fn function_unmask_clears_pending_bits_of_unmasked_entries_only() {
    let mut m = live_vector(2, 0);
    m.write_message_control(ENABLE | FUNCTION_MASK);
    m.set_pending(0, true).expect("in range");
    m.set_pending(1, true).expect("in range");
    assert_eq!(
        m.write_message_control(ENABLE),
        vec![Change::Unmasked { vector: 0 }]
    );
    assert_eq!(m.is_pending(0), Ok(false));
    assert_eq!(m.is_pending(1), Ok(true), "entry 1 is still masked");
}

#[test]
fn vector_queries_refuse_out_of_range_vectors() {
    let mut m = model(3);
    let refused = Err(Error::VectorOutOfRange {
        vector: 3,
        table_size: 3,
    });
    assert_eq!(m.entry(3).map(|_| ()), refused);
    assert_eq!(m.is_masked(3).map(|_| ()), refused);
    assert_eq!(m.is_pending(3).map(|_| ()), refused);
    assert_eq!(m.set_pending(3, true), refused);
}

// --- Change ordering ---

#[test]
fn changes_are_ordered_disabled_masked_messages_enabled_unmasked() {
    let mut m = live_vector(4, 3);
    m.write_table(16, &dword(0xfee0_0000));
    let mut state = m.snapshot();
    // Target: disabled... then compare against an enabling restore.
    state.message_control = 0x0003; // disabled
    assert_eq!(
        m.restore(&state),
        Ok(vec![Change::Disabled, Change::Masked { vector: 3 }])
    );
    let mut target = m.snapshot();
    target.message_control = 0x8003;
    target.entries[0] = TableEntry {
        address_lo: 0xfee0_2000,
        address_hi: 0,
        data: 7,
        vector_control: 0,
    };
    target.entries[3].vector_control = 1;
    target.entries[2].vector_control = 0;
    assert_eq!(
        m.restore(&target),
        Ok(vec![
            Change::MessageChanged {
                vector: 0,
                message: MsiMessage {
                    address: 0xfee0_2000,
                    data: 7
                }
            },
            Change::Enabled,
            Change::Unmasked { vector: 0 },
            Change::Unmasked { vector: 2 },
        ])
    );
}

// --- Construction ---

#[test]
fn table_size_must_be_1_to_2048() {
    assert_eq!(
        MsixModel::new(0, BarOffset::new(0, 0), BarOffset::new(1, 0)).err(),
        Some(Error::InvalidTableSize { size: 0 })
    );
    assert!(MsixModel::new(2049, BarOffset::new(0, 0), BarOffset::new(1, 0)).is_err());
    let m = MsixModel::new(2048, BarOffset::new(0, 0), BarOffset::new(1, 0)).expect("max size");
    assert_eq!(
        (m.table_len(), m.pba_len(), m.message_control()),
        (32768, 256, 0x7ff)
    );
}

#[test]
fn locations_need_bir_up_to_5_aligned_offsets_and_no_overlap() {
    let fault = |table, pba| match MsixModel::new(64, table, pba) {
        Err(Error::InvalidLocation { fault, .. }) => Some(fault),
        _ => None,
    };
    assert_eq!(
        fault(BarOffset::new(6, 0), BarOffset::new(0, 0x1000)),
        Some(LocationFault::BirOutOfRange)
    );
    assert_eq!(
        fault(BarOffset::new(0, 4), BarOffset::new(0, 0x1000)),
        Some(LocationFault::MisalignedOffset)
    );
    assert_eq!(
        fault(BarOffset::new(0, 0), BarOffset::new(0, 0x3f8)),
        Some(LocationFault::Overlap)
    );
    assert_eq!(
        fault(BarOffset::new(0, 0x100), BarOffset::new(0, 0x200)),
        Some(LocationFault::Overlap)
    );
    assert_eq!(
        fault(BarOffset::new(0, 0), BarOffset::new(0, 0x400)),
        None,
        "adjacent is fine"
    );
    assert_eq!(
        fault(BarOffset::new(0, 0x8), BarOffset::new(0, 0)),
        None,
        "PBA first, adjacent"
    );
}

// --- Snapshot ---

#[test]
fn snapshot_restores_into_a_fresh_model_with_changes() {
    let m = live_vector(3, 1);
    let state = m.snapshot();
    assert_eq!(state.version, SNAPSHOT_VERSION);
    let mut fresh = model(3);
    assert_eq!(
        fresh.restore(&state),
        Ok(vec![
            Change::MessageChanged {
                vector: 1,
                message: MsiMessage {
                    address: 0xfee0_1000,
                    data: 0x41
                }
            },
            Change::Enabled,
            Change::Unmasked { vector: 1 },
        ])
    );
    assert_eq!(fresh, m);
    assert_eq!(MsixModel::from_state(&state), Ok(m));
}

#[test]
fn restore_refuses_foreign_version() {
    let mut m = model(2);
    let mut state = m.snapshot();
    state.version = 2;
    assert_eq!(
        m.restore(&state),
        Err(Error::SnapshotVersion {
            found: 2,
            expected: 1
        })
    );
}

#[test]
fn restore_refuses_other_layouts() {
    let mut m = model(2);
    let good = m.snapshot();
    let mut cases = Vec::new();
    let mut s = good.clone();
    s.table_size = 3;
    cases.push(("table size", s));
    let mut s = good.clone();
    s.table.offset = 0x100;
    cases.push(("table location", s));
    let mut s = good.clone();
    s.pba.bir = 5;
    cases.push(("pba location", s));
    let mut s = good.clone();
    s.entries.pop();
    cases.push(("entry count", s));
    let mut s = good.clone();
    s.pending.push(0);
    cases.push(("pending qword count", s));
    let mut s = good.clone();
    s.message_control = 0x8000;
    cases.push(("message control table size", s));
    for (what, state) in cases {
        match m.restore(&state) {
            Err(Error::SnapshotMismatch { what: found, .. }) => assert_eq!(found, what),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn restore_refuses_reserved_bits_and_leaves_model_unchanged() {
    let mut m = live_vector(2, 0);
    let before = m.clone();
    let good = m.snapshot();
    let mut cases = Vec::new();
    let mut s = good.clone();
    s.message_control |= 0x0800;
    cases.push(("message control", s));
    let mut s = good.clone();
    s.entries[1].address_lo = 1;
    cases.push(("address low", s));
    let mut s = good.clone();
    s.entries[1].vector_control = 3;
    cases.push(("vector control", s));
    let mut s = good.clone();
    s.entries[0].data = 5;
    s.pending[0] = 1 << 2;
    cases.push(("pending", s));
    for (what, state) in cases {
        match m.restore(&state) {
            Err(Error::SnapshotReservedBits { what: found, .. }) => assert_eq!(found, what),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(m, before, "{what}: model changed by a refused restore");
    }
}

#[test]
fn snapshot_round_trips_through_json() {
    let mut m = live_vector(65, 64);
    m.set_pending(3, true).expect("in range");
    let json = serde_json::to_string(&m.snapshot()).expect("serializes");
    let state: msix_model::MsixState = serde_json::from_str(&json).expect("parses");
    assert_eq!(MsixModel::from_state(&state), Ok(m));
}
