//! The header of a scenario: the lines before the first step, what the VM
//! and its devices look like, with their defaults and checks.

use msix_accel::{BarOffset, Policy};

use super::words::{number, small};
use msix_rig::rig::{RigLayout, BIR_STRIDE, MAX_DEVICES};

/// Every header keyword: none may follow the first step.
pub(super) const KEYWORDS: [&str; 8] = [
    "vectors",
    "vcpus",
    "policy",
    "policies",
    "source",
    "devices",
    "x2apic-api",
    "layout",
];

/// Largest `bar=SIZE` of `layout` (the rig's BARs of one device are this
/// far apart when no size is given).
pub const MAX_BAR_SIZE: u64 = BIR_STRIDE;

/// The header read so far, defaults first.
#[derive(Clone, Debug)]
pub(super) struct Header {
    pub vectors: u16,
    pub vcpus: u8,
    pub devices: u8,
    pub x2apic_api: bool,
    /// The layout and the line that set it (checked against `vectors` once
    /// the header is complete).
    pub layout: Option<(u32, RigLayout)>,
    pub policies: Option<Vec<Policy>>,
    pub policy: Policy,
    pub maskable: bool,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            vectors: 8,
            vcpus: 1,
            devices: 1,
            x2apic_api: true,
            layout: None,
            policies: None,
            policy: Policy::Fast,
            maskable: false,
        }
    }
}

/// `BIR:OFFSET` of `layout`.
fn bar_offset(what: &str, s: &str) -> Result<BarOffset, String> {
    let (bir, offset) = s
        .split_once(':')
        .ok_or_else(|| format!("{what}={s}: expected {what}=BIR:OFFSET"))?;
    let bir: u8 = small(bir, "BIR")?;
    if bir > BarOffset::MAX_BIR {
        return Err(format!(
            "{what} BIR {bir} out of range 0..={}",
            BarOffset::MAX_BIR
        ));
    }
    let offset: u32 = small(offset, "offset")?;
    if offset % 8 != 0 {
        return Err(format!("{what} offset {offset:#x} is not 8-byte aligned"));
    }
    Ok(BarOffset::new(bir, offset))
}

/// `layout table=BIR:OFFSET pba=BIR:OFFSET [bar=SIZE]`, keys in any order.
fn layout(words: &[&str]) -> Result<RigLayout, String> {
    let (mut table, mut pba, mut bar_size) = (None, None, None);
    for w in &words[1..] {
        let (key, value) = w
            .split_once('=')
            .ok_or_else(|| format!("layout: expected KEY=VALUE, found {w:?}"))?;
        let twice = match key {
            "table" => table.replace(bar_offset(key, value)?).is_some(),
            "pba" => pba.replace(bar_offset(key, value)?).is_some(),
            "bar" => {
                let size = number(value)?;
                if !size.is_power_of_two() || size > MAX_BAR_SIZE {
                    return Err(format!(
                        "bar={size:#x}: a BAR size is a power of two up to {MAX_BAR_SIZE:#x}"
                    ));
                }
                bar_size.replace(size).is_some()
            }
            _ => return Err(format!("layout: unknown key {key:?} (table=, pba=, bar=)")),
        };
        if twice {
            return Err(format!("layout: {key}= given twice"));
        }
    }
    match (table, pba) {
        (Some(table), Some(pba)) => Ok(RigLayout {
            table,
            pba,
            bar_size,
        }),
        _ => Err("layout needs table=BIR:OFFSET and pba=BIR:OFFSET".into()),
    }
}

impl Header {
    /// Reads a header line: `Ok(false)` when it is not one.
    pub fn line(&mut self, line: u32, words: &[&str]) -> Result<bool, String> {
        let arg = |i: usize| words.get(i).copied().ok_or("missing value".to_string());
        match words[0] {
            "vectors" => {
                let n: u16 = small(arg(1)?, "vectors")?;
                if !(1..=2048).contains(&n) {
                    return Err(format!("vectors {n} out of range 1..=2048"));
                }
                self.vectors = n;
            }
            "vcpus" => {
                let n: u8 = small(arg(1)?, "vcpus")?;
                if !(1..=4).contains(&n) {
                    return Err(format!("vcpus {n} out of range 1..=4"));
                }
                self.vcpus = n;
            }
            "devices" => {
                let n: u8 = small(arg(1)?, "devices")?;
                if !(1..=MAX_DEVICES).contains(&n) {
                    return Err(format!("devices {n} out of range 1..={MAX_DEVICES}"));
                }
                self.devices = n;
            }
            "x2apic-api" => {
                self.x2apic_api = match arg(1)? {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("x2apic-api {other:?}: expected on or off")),
                }
            }
            "layout" => {
                self.layout = Some((line, layout(words)?));
                return Ok(true);
            }
            "policy" => self.policy = arg(1)?.parse().map_err(|e| format!("{e}"))?,
            "policies" => {
                let list = words[1..]
                    .iter()
                    .map(|w| w.parse::<Policy>().map_err(|e| format!("{e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                if list.is_empty() {
                    return Err("policies needs at least one policy".into());
                }
                self.policies = Some(list);
            }
            "source" => {
                self.maskable = match arg(1)? {
                    "plain" => false,
                    "maskable" => true,
                    other => return Err(format!("source {other:?}: expected plain or maskable")),
                }
            }
            _ => return Ok(false),
        }
        if words.len() > 2 && words[0] != "policies" {
            return Err(format!("unexpected {:?} after {}", words[2], words[0]));
        }
        Ok(true)
    }

    /// Checks what only the whole header tells: the layout's table and PBA
    /// fit their BARs and do not overlap. The error names the layout line.
    pub fn check(&self) -> Result<(), (u32, String)> {
        let Some((line, layout)) = self.layout else {
            return Ok(());
        };
        let bar = self.bar_size();
        let table = (layout.table, self.table_len(), "table");
        let pba = (layout.pba, self.pba_len(), "PBA");
        for (at, len, what) in [table, pba] {
            if u64::from(at.offset) + len > bar {
                return Err((
                    line,
                    format!(
                        "the {what} ({len:#x} bytes at {}:{:#x}) does not fit its BAR of {bar:#x} bytes",
                        at.bir, at.offset
                    ),
                ));
            }
        }
        let end = |(at, len, _): (BarOffset, u64, &str)| u64::from(at.offset) + len;
        if layout.table.bir == layout.pba.bir
            && u64::from(layout.table.offset) < end(pba)
            && u64::from(layout.pba.offset) < end(table)
        {
            return Err((line, "the table and the PBA overlap".into()));
        }
        Ok(())
    }

    /// Bytes of each BAR.
    pub fn bar_size(&self) -> u64 {
        self.layout
            .and_then(|(_, l)| l.bar_size)
            .unwrap_or(BIR_STRIDE)
    }

    /// Bytes of the table.
    pub fn table_len(&self) -> u64 {
        u64::from(self.vectors) * 16
    }

    /// Bytes of the PBA (whole qwords).
    pub fn pba_len(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }

    /// The offsets `table+OFFSET` may use: the table's pages (its size page
    /// aligned) from its start, cut at the end of its BAR.
    pub fn table_window(&self) -> u64 {
        let offset = self.layout.map_or(0, |(_, l)| u64::from(l.table.offset));
        kvm_msix::page_align_up(self.table_len()).min(self.bar_size() - offset)
    }
}
