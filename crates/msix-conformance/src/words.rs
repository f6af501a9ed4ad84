//! The words a scenario line is made of: numbers, `key=value`, IDT vectors,
//! access widths and comparisons. Each reader returns what is wrong in
//! words; the parser adds the file and line.

use testvm::Width;

use super::step::Cmp;

/// A decimal or 0x-hex number.
pub(super) fn number(s: &str) -> Result<u64, String> {
    let parsed = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        s.parse()
    };
    parsed.map_err(|_| format!("{s:?} is not a number (decimal or 0x-hex)"))
}

/// A number that fits `T`; `what` names it in the error.
pub(super) fn small<T: TryFrom<u64>>(s: &str, what: &str) -> Result<T, String> {
    let n = number(s)?;
    T::try_from(n).map_err(|_| format!("{what} {n} out of range"))
}

/// An index below `limit` (a vCPU, an entry, a device); `beyond` says
/// what is wrong with one that is not.
pub(super) fn below<T>(
    s: &str,
    what: &str,
    limit: T,
    beyond: impl FnOnce(T) -> String,
) -> Result<T, String>
where
    T: TryFrom<u64> + PartialOrd + Copy,
{
    let n: T = small(s, what)?;
    if n >= limit {
        return Err(beyond(n));
    }
    Ok(n)
}

/// The value of `key=VALUE`.
pub(super) fn key_value<'a>(word: &'a str, key: &str) -> Result<&'a str, String> {
    word.strip_prefix(key)
        .and_then(|w| w.strip_prefix('='))
        .ok_or_else(|| format!("expected {key}=N, found {word:?}"))
}

/// Lowest IDT vector a scenario may use: 0..0x20 are exceptions and 0x20 is
/// testvm's sentinel ([`testvm::SENTINEL_VECTOR`]), which `expect irq =`
/// sends to prove that nothing more is on its way.
pub const FIRST_DEVICE_VECTOR: u8 = testvm::SENTINEL_VECTOR + 1;
/// Highest IDT vector a scenario may use: 0xFE is testvm's doorbell to an
/// idle vCPU, 0xFF the APIC's spurious vector.
pub const LAST_DEVICE_VECTOR: u8 = testvm::DOORBELL_VECTOR - 1;

/// An IDT vector a device interrupt of a scenario may use.
pub(super) fn device_vector(s: &str) -> Result<u8, String> {
    let v: u8 = small(s, "vector")?;
    if !(FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR).contains(&v) {
        return Err(format!(
            "vector {v:#x} is reserved: scenarios use {FIRST_DEVICE_VECTOR:#x}..={LAST_DEVICE_VECTOR:#x} \
             (0x20 is the sentinel, 0xfe the doorbell, 0xff spurious, below 0x20 exceptions)"
        ));
    }
    Ok(v)
}

/// `readN` / `writeN`: whether it writes, and its width.
pub(super) fn width_of(op: &str) -> Option<(bool, Width)> {
    let (write, bits) = if let Some(b) = op.strip_prefix("read") {
        (false, b)
    } else {
        (true, op.strip_prefix("write")?)
    };
    let width = match bits {
        "8" => Width::W8,
        "16" => Width::W16,
        "32" => Width::W32,
        "64" => Width::W64,
        _ => return None,
    };
    Some((write, width))
}

/// `=`, `>=` or `<=`.
pub(super) fn cmp(s: &str) -> Result<Cmp, String> {
    match s {
        "=" => Ok(Cmp::Eq),
        ">=" => Ok(Cmp::Ge),
        "<=" => Ok(Cmp::Le),
        _ => Err(format!("expected =, >= or <=, found {s:?}")),
    }
}
