//! Invariant oracle shared by the proptest properties (`tests/properties.rs`)
//! and the cargo-fuzz target (`fuzz/fuzz_targets/model_access.rs`, which
//! includes this file by path). It applies one access to an `MsixModel` and
//! checks, independently of the model's own bookkeeping, that:
//! - read-only fields never change (capability ID, Next Pointer, Table Size,
//!   reserved bits, table/PBA locations, Message Address 1:0, Vector Control 31:1);
//! - reads are a pure byte image (any read equals its bytes read one by one);
//! - a write reports exactly the vectors whose effective mask or message
//!   differ, in the documented order, and repeating it reports nothing;
//! - ignored accesses leave the state untouched;
//! - snapshots round-trip exactly, also through serde_json, and a refused
//!   restore leaves the model unchanged.

#![allow(dead_code)]

use msix_model::{
    BarOffset, Change, MsiMessage, MsixModel, MsixState, CAPABILITY_ID, CAPABILITY_LEN,
    MESSAGE_CONTROL_ENABLE, MESSAGE_CONTROL_FUNCTION_MASK, SNAPSHOT_VERSION,
};

/// One operation on the model: a guest access or a host-side call.
#[derive(Clone, Debug)]
pub enum Access {
    /// Guest config read of the capability.
    ReadCapability { offset: u64, len: usize },
    /// Guest config write of the capability.
    WriteCapability { offset: u64, bytes: Vec<u8> },
    /// Guest MMIO read of the table.
    ReadTable { offset: u64, len: usize },
    /// Guest MMIO write of the table.
    WriteTable { offset: u64, bytes: Vec<u8> },
    /// Guest MMIO read of the PBA.
    ReadPba { offset: u64, len: usize },
    /// Guest MMIO write of the PBA.
    WritePba { offset: u64, bytes: Vec<u8> },
    /// Host write of Message Control.
    WriteMessageControl { value: u16 },
    /// Host sets or clears a pending bit.
    SetPending { vector: u16, pending: bool },
    /// Function reset.
    Reset,
    /// Snapshot, serde_json round trip, from_state and restore.
    SnapshotRoundTrip,
    /// Restore of a snapshot with one field altered.
    RestoreTampered { tamper: u8, value: u64 },
}

/// The guest-visible state the oracle compares before and after an access.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    enabled: bool,
    masked: Vec<bool>,
    messages: Vec<MsiMessage>,
    pending: Vec<bool>,
}

fn observe(model: &MsixModel) -> Result<Observed, String> {
    let size = model.table_size();
    let mut observed = Observed {
        enabled: model.is_enabled(),
        masked: Vec::new(),
        messages: Vec::new(),
        pending: Vec::new(),
    };
    for vector in 0..size {
        let entry = model.entry(vector).map_err(|e| e.to_string())?;
        let masked = model.is_masked(vector).map_err(|e| e.to_string())?;
        let expected = entry.is_masked() || model.is_function_masked() || !model.is_enabled();
        if masked != expected {
            return Err(format!("vector {vector}: is_masked {masked} != {expected}"));
        }
        observed.masked.push(masked);
        observed.messages.push(entry.message());
        observed
            .pending
            .push(model.is_pending(vector).map_err(|e| e.to_string())?);
    }
    Ok(observed)
}

/// The change list the documented rules require for `before` -> `after`.
fn expected_changes(before: &Observed, after: &Observed) -> Vec<Change> {
    let mut changes = Vec::new();
    if before.enabled && !after.enabled {
        changes.push(Change::Disabled);
    }
    for (vector, (b, a)) in (0u16..).zip(before.masked.iter().zip(&after.masked)) {
        if !*b && *a {
            changes.push(Change::Masked { vector });
        }
    }
    for (vector, (b, a)) in (0u16..).zip(before.messages.iter().zip(&after.messages)) {
        if b != a {
            changes.push(Change::MessageChanged {
                vector,
                message: *a,
            });
        }
    }
    if !before.enabled && after.enabled {
        changes.push(Change::Enabled);
    }
    for (vector, (b, a)) in (0u16..).zip(before.masked.iter().zip(&after.masked)) {
        if *b && !*a {
            changes.push(Change::Unmasked { vector });
        }
    }
    changes
}

fn check_changes(
    what: &str,
    before: &Observed,
    after: &Observed,
    changes: &[Change],
    clears_pending: bool,
) -> Result<(), String> {
    let expected = expected_changes(before, after);
    if changes != expected.as_slice() {
        return Err(format!(
            "{what}: reported {changes:?}, state diff says {expected:?}"
        ));
    }
    if clears_pending {
        for change in changes {
            if let Change::Unmasked { vector } = change {
                if after.pending.get(usize::from(*vector)) != Some(&false) {
                    return Err(format!(
                        "{what}: vector {vector} unmasked but still pending"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Fixed facts about the model under test.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub table_size: u16,
    pub table: BarOffset,
    pub pba: BarOffset,
    pub next_pointer: u8,
}

impl Layout {
    pub fn of(model: &MsixModel) -> Self {
        Layout {
            table_size: model.table_size(),
            table: model.table_location(),
            pba: model.pba_location(),
            next_pointer: model.next_pointer(),
        }
    }
}

fn read_bytes(read: impl Fn(u64, &mut [u8]), offset: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0xa5; len];
    read(offset, &mut data);
    data
}

/// Reads `len` bytes at once and byte by byte; they must agree.
fn check_byte_image(
    what: &str,
    read: impl Fn(u64, &mut [u8]),
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, String> {
    let whole = read_bytes(&read, offset, len);
    for (index, byte) in whole.iter().enumerate() {
        let single = match offset.checked_add(index as u64) {
            Some(address) => read_bytes(&read, address, 1)[0],
            None => 0,
        };
        if single != *byte {
            return Err(format!(
                "{what}: read at {offset:#x} len {len} byte {index} = {byte:#x}, single-byte read {single:#x}"
            ));
        }
    }
    Ok(whole)
}

/// Read-only fields and reserved bits, checked through the guest's view.
pub fn check_invariants(model: &MsixModel, layout: &Layout) -> Result<(), String> {
    let mut cap = [0u8; 12];
    for dword in 0..3u64 {
        let mut data = [0u8; 4];
        model.read_capability(dword * 4, &mut data);
        cap[(dword * 4) as usize..(dword * 4 + 4) as usize].copy_from_slice(&data);
    }
    if cap[0] != CAPABILITY_ID || cap[1] != layout.next_pointer {
        return Err(format!("capability header changed: {:x?}", &cap[..2]));
    }
    let control = u16::from_le_bytes([cap[2], cap[3]]);
    if control & 0x07ff != layout.table_size - 1 || control & 0x3800 != 0 {
        return Err(format!(
            "message control read-only bits changed: {control:#x}"
        ));
    }
    if control != model.message_control()
        || (control & MESSAGE_CONTROL_ENABLE != 0) != model.is_enabled()
        || (control & MESSAGE_CONTROL_FUNCTION_MASK != 0) != model.is_function_masked()
    {
        return Err(format!(
            "message control {control:#x} disagrees with accessors"
        ));
    }
    let table = u32::from_le_bytes([cap[4], cap[5], cap[6], cap[7]]);
    let pba = u32::from_le_bytes([cap[8], cap[9], cap[10], cap[11]]);
    if table != layout.table.register() || pba != layout.pba.register() {
        return Err(format!("table/PBA registers changed: {table:#x} {pba:#x}"));
    }
    if model.table_location() != layout.table || model.pba_location() != layout.pba {
        return Err("locations changed".into());
    }
    if model.table_size() != layout.table_size {
        return Err("table size changed".into());
    }
    // Past the capability reads zero.
    if read_bytes(|o, d| model.read_capability(o, d), CAPABILITY_LEN, 4) != [0; 4] {
        return Err("capability bytes past 12 are not zero".into());
    }
    // Reserved table bits, read through the byte image.
    for vector in 0..u64::from(layout.table_size) {
        let entry = read_bytes(|o, d| model.read_table(o, d), vector * 16, 16);
        if entry[0] & 0x3 != 0 {
            return Err(format!("vector {vector}: Message Address bits 1:0 set"));
        }
        if entry[12] & !1 != 0 || entry[13..16] != [0, 0, 0] {
            return Err(format!("vector {vector}: Vector Control reserved bits set"));
        }
    }
    if read_bytes(|o, d| model.read_table(o, d), model.table_len(), 16) != [0; 16] {
        return Err("table bytes past the end are not zero".into());
    }
    // PBA bits of vectors >= table size read zero.
    let pba_image = read_bytes(|o, d| model.read_pba(o, d), 0, model.pba_len() as usize + 8);
    for bit in u64::from(layout.table_size)..(pba_image.len() as u64 * 8) {
        if pba_image[(bit / 8) as usize] & (1 << (bit % 8)) != 0 {
            return Err(format!("PBA bit {bit} set past the table size"));
        }
    }
    Ok(())
}

fn table_write_applies(model: &MsixModel, offset: u64, len: usize) -> bool {
    let fits = offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= model.table_len());
    fits && ((len == 4 && offset % 4 == 0) || (len == 8 && offset % 8 == 0))
}

fn capability_access_valid(offset: u64, len: usize) -> bool {
    matches!(len, 1 | 2 | 4)
        && offset % len as u64 == 0
        && offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= CAPABILITY_LEN)
}

fn tampered(state: &MsixState, tamper: u8, value: u64) -> MsixState {
    let mut state = state.clone();
    let index = |len: usize| if len == 0 { 0 } else { (value as usize) % len };
    match tamper % 12 {
        0 => state.version = value as u32,
        1 => state.table_size = value as u16,
        2 => state.table.offset = value as u32,
        3 => state.pba.bir = value as u8,
        4 => {
            state.entries.truncate(index(state.entries.len() + 1));
        }
        5 => state.pending.push(value),
        6 => state.message_control = value as u16,
        7 => {
            let i = index(state.entries.len());
            state.entries[i].vector_control = value as u32;
        }
        8 => {
            let i = index(state.entries.len());
            state.entries[i].address_lo = value as u32;
        }
        9 => {
            let i = index(state.pending.len());
            state.pending[i] = value;
        }
        10 => {
            // A valid change: Enable/Function Mask from value.
            state.message_control = (state.message_control & 0x07ff) | (value as u16 & 0xc000);
        }
        _ => {
            let i = index(state.entries.len());
            state.entries[i].data = value as u32;
            state.entries[i].vector_control = (value >> 32) as u32 & 1;
        }
    }
    state
}

/// Applies `access` to `model`, checking every invariant above.
pub fn apply_and_check(model: &mut MsixModel, access: &Access) -> Result<(), String> {
    let layout = Layout::of(model);
    let before = observe(model)?;
    let before_state = model.snapshot();
    let unchanged = |model: &MsixModel, what: &str| -> Result<(), String> {
        if model.snapshot() != before_state {
            Err(format!("{what} changed the state"))
        } else {
            Ok(())
        }
    };
    match access {
        Access::ReadCapability { offset, len } => {
            let data = read_bytes(|o, d| model.read_capability(o, d), *offset, *len);
            if !capability_access_valid(*offset, *len) && data.iter().any(|&b| b != 0) {
                return Err(format!(
                    "malformed capability read {offset:#x}/{len} not zero"
                ));
            }
            unchanged(model, "capability read")?;
        }
        Access::ReadTable { offset, len } => {
            check_byte_image("table", |o, d| model.read_table(o, d), *offset, *len)?;
            unchanged(model, "table read")?;
        }
        Access::ReadPba { offset, len } => {
            check_byte_image("PBA", |o, d| model.read_pba(o, d), *offset, *len)?;
            unchanged(model, "PBA read")?;
        }
        Access::WritePba { offset, bytes } => {
            let changes = model.write_pba(*offset, bytes);
            if !changes.is_empty() {
                return Err("PBA write reported changes".into());
            }
            unchanged(model, "PBA write")?;
        }
        Access::WriteCapability { offset, bytes } => {
            let changes = model.write_capability(*offset, bytes);
            if !capability_access_valid(*offset, bytes.len()) {
                unchanged(model, "malformed capability write")?;
            }
            let after = observe(model)?;
            check_changes("capability write", &before, &after, &changes, true)?;
            if !model.write_capability(*offset, bytes).is_empty() {
                return Err("repeating a capability write reported changes".into());
            }
        }
        Access::WriteTable { offset, bytes } => {
            let changes = model.write_table(*offset, bytes);
            if !table_write_applies(model, *offset, bytes.len()) {
                unchanged(model, "ignored table write")?;
            } else {
                // Written bits read back, read-only bits masked.
                let readback = read_bytes(|o, d| model.read_table(o, d), *offset, bytes.len());
                for (index, (&written, &read)) in bytes.iter().zip(&readback).enumerate() {
                    let byte_in_entry = (*offset + index as u64) % 16;
                    let writable = match byte_in_entry {
                        0 => 0xfc,
                        12 => 0x01,
                        13..=15 => 0x00,
                        _ => 0xff,
                    };
                    if read != written & writable {
                        return Err(format!(
                            "table byte {byte_in_entry} wrote {written:#x} read {read:#x}"
                        ));
                    }
                }
            }
            let after = observe(model)?;
            check_changes("table write", &before, &after, &changes, true)?;
            if !model.write_table(*offset, bytes).is_empty() {
                return Err("repeating a table write reported changes".into());
            }
        }
        Access::WriteMessageControl { value } => {
            let changes = model.write_message_control(*value);
            let after = observe(model)?;
            check_changes("message control write", &before, &after, &changes, true)?;
            if model.is_enabled() != (value & MESSAGE_CONTROL_ENABLE != 0)
                || model.is_function_masked() != (value & MESSAGE_CONTROL_FUNCTION_MASK != 0)
            {
                return Err("message control write did not take".into());
            }
        }
        Access::SetPending { vector, pending } => {
            let result = model.set_pending(*vector, *pending);
            if result.is_ok() != (*vector < layout.table_size) {
                return Err(format!("set_pending({vector}) returned {result:?}"));
            }
            if result.is_ok() && model.is_pending(*vector) != Ok(*pending) {
                return Err("set_pending did not take".into());
            }
            if result.is_err() {
                unchanged(model, "refused set_pending")?;
            }
        }
        Access::Reset => {
            let changes = model.reset();
            let after = observe(model)?;
            check_changes("reset", &before, &after, &changes, false)?;
            let fresh = MsixModel::new(layout.table_size, layout.table, layout.pba)
                .map_err(|e| e.to_string())?
                .with_next_pointer(layout.next_pointer);
            if model.snapshot() != fresh.snapshot() {
                return Err("reset state differs from a new model".into());
            }
        }
        Access::SnapshotRoundTrip => {
            let json = serde_json::to_string(&before_state).map_err(|e| e.to_string())?;
            let parsed: MsixState = serde_json::from_str(&json).map_err(|e| e.to_string())?;
            if parsed != before_state {
                return Err("serde_json round trip differs".into());
            }
            let rebuilt = MsixModel::from_state(&parsed)
                .map_err(|e| e.to_string())?
                .with_next_pointer(layout.next_pointer);
            if rebuilt != *model {
                return Err("from_state(snapshot) differs from the model".into());
            }
            let mut fresh = MsixModel::new(layout.table_size, layout.table, layout.pba)
                .map_err(|e| e.to_string())?;
            let fresh_before = observe(&fresh)?;
            let changes = fresh.restore(&parsed).map_err(|e| e.to_string())?;
            check_changes(
                "restore onto reset model",
                &fresh_before,
                &before,
                &changes,
                false,
            )?;
            if model.restore(&parsed).map_err(|e| e.to_string())? != Vec::new() {
                return Err("restoring the current state reported changes".into());
            }
            unchanged(model, "self restore")?;
        }
        Access::RestoreTampered { tamper, value } => {
            let state = tampered(&before_state, *tamper, *value);
            match model.restore(&state) {
                Ok(changes) => {
                    if model.snapshot() != state {
                        return Err("restored state differs from the snapshot".into());
                    }
                    let after = observe(model)?;
                    check_changes("restore", &before, &after, &changes, false)?;
                }
                Err(_) => unchanged(model, "refused restore")?,
            }
            if state.version != SNAPSHOT_VERSION && model.snapshot() != before_state {
                return Err("restore accepted a foreign version".into());
            }
        }
    }
    check_invariants(model, &layout)
}
