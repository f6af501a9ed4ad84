//! Property tests: arbitrary sequences of guest accesses and host calls
//! never panic and keep every invariant of `support/oracle.rs`.

#[path = "support/oracle.rs"]
mod oracle;

use msix_model::{BarOffset, MsixModel};
use oracle::{apply_and_check, check_invariants, Access, Layout};
use proptest::prelude::*;

fn table_size() -> impl Strategy<Value = u16> {
    prop_oneof![
        6 => 1u16..=4,
        3 => 60u16..=70,
        1 => 1u16..=2048,
        1 => Just(2048u16),
    ]
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..200,
        2 => 0u64..1200,
        1 => any::<u64>(),
        1 => (u64::MAX - 16)..=u64::MAX,
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Well-formed dword/qword with interesting mask values.
        3 => prop_oneof![Just(0u32), Just(1u32), any::<u32>()]
            .prop_map(|v| v.to_le_bytes().to_vec()),
        2 => (any::<u32>(), prop_oneof![Just(0u32), Just(1u32), any::<u32>()])
            .prop_map(|(lo, hi)| ((u64::from(hi) << 32) | u64::from(lo)).to_le_bytes().to_vec()),
        2 => proptest::collection::vec(any::<u8>(), 0..=9),
    ]
}

fn aligned_table_write() -> impl Strategy<Value = Access> {
    (0u64..70, 0u64..4, bytes()).prop_map(|(vector, dword, bytes)| {
        let offset = vector * 16
            + if bytes.len() == 8 {
                (dword % 2) * 8
            } else {
                dword * 4
            };
        Access::WriteTable { offset, bytes }
    })
}

fn access() -> impl Strategy<Value = Access> {
    let len = 0usize..=9;
    prop_oneof![
        2 => (offset(), len.clone()).prop_map(|(offset, len)| Access::ReadTable { offset, len }),
        2 => (offset(), len.clone()).prop_map(|(offset, len)| Access::ReadPba { offset, len }),
        2 => (0u64..16, len.clone()).prop_map(|(offset, len)| Access::ReadCapability { offset, len }),
        1 => (any::<u64>(), len).prop_map(|(offset, len)| Access::ReadCapability { offset, len }),
        6 => aligned_table_write(),
        3 => (offset(), bytes()).prop_map(|(offset, bytes)| Access::WriteTable { offset, bytes }),
        1 => (offset(), bytes()).prop_map(|(offset, bytes)| Access::WritePba { offset, bytes }),
        3 => (0u64..16, proptest::collection::vec(any::<u8>(), 0..=5))
            .prop_map(|(offset, bytes)| Access::WriteCapability { offset, bytes }),
        3 => prop_oneof![Just(0u16), Just(0x4000), Just(0x8000), Just(0xc000), any::<u16>()]
            .prop_map(|value| Access::WriteMessageControl { value }),
        3 => (prop_oneof![0u16..70, any::<u16>()], any::<bool>())
            .prop_map(|(vector, pending)| Access::SetPending { vector, pending }),
        1 => Just(Access::Reset),
        1 => Just(Access::SnapshotRoundTrip),
        1 => (any::<u8>(), any::<u64>())
            .prop_map(|(tamper, value)| Access::RestoreTampered { tamper, value }),
    ]
}

fn model() -> impl Strategy<Value = MsixModel> {
    (table_size(), any::<u8>(), 0u8..=5, 0u32..0x100).prop_map(|(size, next, pba_bir, page)| {
        let table = BarOffset::new(0, 0);
        // Put the PBA in another BAR, or after the table in the same one.
        let pba = if pba_bir == 0 {
            BarOffset::new(0, u32::from(size) * 16 + page * 8)
        } else {
            BarOffset::new(pba_bir, page * 8)
        };
        MsixModel::new(size, table, pba)
            .expect("strategy builds valid layouts")
            .with_next_pointer(next)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every access sequence keeps the invariants and the change reports exact.
    #[test]
    fn arbitrary_access_sequences_keep_invariants(
        mut model in model(),
        accesses in proptest::collection::vec(access(), 1..40),
    ) {
        check_invariants(&model, &Layout::of(&model)).map_err(TestCaseError::fail)?;
        for access in &accesses {
            apply_and_check(&mut model, access)
                .map_err(|e| TestCaseError::fail(format!("{access:?}: {e}")))?;
        }
    }

    /// Arbitrary layouts are accepted exactly when they are valid, and never panic.
    #[test]
    fn new_accepts_exactly_valid_layouts(
        size in any::<u16>(),
        table_bir in 0u8..8, table_offset in any::<u32>(),
        pba_bir in 0u8..8, pba_offset in any::<u32>(),
    ) {
        let table = BarOffset::new(table_bir, table_offset);
        let pba = BarOffset::new(pba_bir, pba_offset);
        let result = MsixModel::new(size, table, pba);
        let size_ok = (1..=2048).contains(&size);
        let table_len = u64::from(size) * 16;
        let pba_len = u64::from(size).div_ceil(64) * 8;
        let overlap = table_bir == pba_bir
            && u64::from(table_offset) < u64::from(pba_offset) + pba_len
            && u64::from(pba_offset) < u64::from(table_offset) + table_len;
        let valid = size_ok && table.is_valid() && pba.is_valid() && !overlap;
        prop_assert_eq!(result.is_ok(), valid, "{:?}", result);
    }

    /// Snapshots survive serde_json and from_state unchanged after any history.
    #[test]
    fn snapshots_round_trip_through_json(
        mut model in model(),
        accesses in proptest::collection::vec(access(), 0..30),
    ) {
        for access in &accesses {
            let _ = apply_and_check(&mut model, access);
        }
        let state = model.snapshot();
        let json = serde_json::to_string(&state).expect("state serializes");
        let parsed: msix_model::MsixState = serde_json::from_str(&json).expect("state parses");
        prop_assert_eq!(&parsed, &state);
        let rebuilt = MsixModel::from_state(&parsed).expect("own snapshot restores")
            .with_next_pointer(model.next_pointer());
        prop_assert_eq!(rebuilt, model);
    }
}
