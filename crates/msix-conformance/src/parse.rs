//! The parser: scenario text to a [`Scenario`], or one `FILE:LINE: what is
//! wrong` error. Header lines come first ([`super::header`]), then one step
//! a line; `begin concurrent N` ... `end` groups guest steps.

use std::fmt;

use super::events;
use super::header::{self, Header};
use super::step::{Access, Cmp, MsixAction, Region, Scenario, Step};
use super::words::{below, cmp, device_vector, key_value, number, small, width_of};

/// A parse error: `FILE:LINE: what is wrong`, or `FILE: what is wrong` for
/// the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// File.
    pub path: String,
    /// Line (1-based), or `None` when the whole file is wrong.
    pub line: Option<u32>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Reads and parses every file of `files`, in order: the first that cannot
/// be read (`FILE: cannot read: why`), is not text (`FILE: not a scenario
/// text file ...`) or does not parse (`FILE:LINE: what is wrong`) is the
/// error, before anything runs.
pub fn load(files: &[String]) -> Result<Vec<Scenario>, String> {
    files
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).map_err(|e| format!("{f}: cannot read: {e}"))?;
            let text = scenario_text(f, bytes)?;
            parse(f, &text).map_err(|e| e.to_string())
        })
        .collect()
}

/// The text of scenario file `f`, or why `bytes` are not one: a scenario
/// is UTF-8 text, and text holds no NUL byte (a binary given by mistake).
pub(crate) fn scenario_text(f: &str, bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes)
        .ok()
        .filter(|text| !text.contains('\0'))
        .ok_or_else(|| {
            format!(
                "{f}: not a scenario text file (binary or not UTF-8; format: docs/scenarios.md)"
            )
        })
}

/// Largest `count=` of `device fire`: a million fires take about a second.
pub const MAX_FIRE_COUNT: u64 = 1_000_000;
/// Largest `N` of `begin concurrent N`: each repetition is at least one
/// guest access per line, and most accesses exit to userspace.
pub const MAX_CONCURRENT_REPEAT: u64 = 100_000;

/// An open `begin concurrent` block: its line, repetitions and steps.
type OpenBlock = (u32, u64, Vec<(u32, Step)>);

/// `words` has exactly `n` words.
fn need(words: &[&str], n: usize) -> Result<(), String> {
    if words.len() == n {
        Ok(())
    } else {
        Err(format!(
            "{} takes {} words, found {}",
            words[0],
            n,
            words.len()
        ))
    }
}

struct Parser {
    header: Header,
    steps: Vec<(u32, Step)>,
    concurrent: Option<OpenBlock>,
}

impl Parser {
    /// `guest` (vCPU 0) or `guest@C`.
    fn vcpu(&self, word: &str) -> Result<u8, String> {
        if word == "guest" {
            return Ok(0);
        }
        let c = word
            .strip_prefix("guest@")
            .ok_or_else(|| format!("unknown step {word:?}"))?;
        self.vcpu_index(c)
    }

    /// A vCPU the guest has.
    fn vcpu_index(&self, s: &str) -> Result<u8, String> {
        let vcpus = self.header.vcpus;
        below(s, "vCPU", vcpus, |c| {
            format!("vCPU {c} but the guest has {vcpus} (set `vcpus` first)")
        })
    }

    /// An entry the table has.
    fn entry(&self, s: &str) -> Result<u16, String> {
        let vectors = self.header.vectors;
        below(s, "entry", vectors, |e| {
            format!("entry {e} but the table has {vectors} entries")
        })
    }

    /// A device the VM has.
    fn device(&self, s: &str) -> Result<u8, String> {
        let devices = self.header.devices;
        below(s, "device", devices, |k| {
            format!("device {k} but the VM has {devices} (set `devices` first)")
        })
    }

    /// Splits a trailing `dev=K` off `words` (device 0 without one).
    fn trailing_device<'w>(&self, words: &'w [&'w str]) -> Result<(&'w [&'w str], u8), String> {
        match words.split_last() {
            Some((last, rest)) if last.starts_with("dev=") => {
                Ok((rest, self.device(key_value(last, "dev")?)?))
            }
            _ => Ok((words, 0)),
        }
    }

    /// `table`, `pba`, `barB` (device 0) or `tableK`, `pbaK`, `barB.K`,
    /// then `+OFFSET` inside the region's window.
    fn region(&self, s: &str) -> Result<(u8, Region, u64), String> {
        let (name, off) = s.split_once('+').ok_or_else(|| {
            format!("expected table+OFFSET, pba+OFFSET or barB+OFFSET, found {s:?}")
        })?;
        let unknown = || {
            format!(
                "region {name:?}: expected table, pba or barB (B 0..=5), \
                 with device K: tableK, pbaK, barB.K"
            )
        };
        let device = |k: &str| match k {
            "" => Ok(0),
            k if k.bytes().all(|b| b.is_ascii_digit()) => self.device(k),
            _ => Err(unknown()),
        };
        let (device, region) = if let Some(k) = name.strip_prefix("table") {
            (device(k)?, Region::Table)
        } else if let Some(k) = name.strip_prefix("pba") {
            (device(k)?, Region::Pba)
        } else if let Some(rest) = name.strip_prefix("bar") {
            let (b, k) = rest.split_once('.').unwrap_or((rest, ""));
            let b: u8 = small(b, "BAR").map_err(|_| unknown())?;
            if b > msix_accel::BarOffset::MAX_BIR {
                return Err(unknown());
            }
            (device(k)?, Region::Bar(b))
        } else {
            return Err(unknown());
        };
        let offset = number(off)?;
        let limit = match region {
            Region::Table => self.header.table_window(),
            Region::Pba => self.header.pba_len(),
            Region::Bar(_) => self.header.bar_size(),
        };
        if offset >= limit {
            return Err(format!(
                "offset {offset:#x} outside {name} (its window is {limit:#x} bytes)"
            ));
        }
        Ok((device, region, offset))
    }

    fn step(&self, words: &[&str]) -> Result<Step, String> {
        if words[0] == "guest" || words[0].starts_with("guest@") {
            return self.guest(words);
        }
        match words[0] {
            "device" => self.device_step(words),
            "msix" => {
                let (words, device) = self.trailing_device(words)?;
                need(words, 2)?;
                let action = match words[1] {
                    "enable" => MsixAction::Enable,
                    "disable" => MsixAction::Disable,
                    "mask-all" => MsixAction::MaskAll,
                    "unmask-all" => MsixAction::UnmaskAll,
                    w => {
                        return Err(format!(
                            "msix {w:?}: expected enable, disable, mask-all or unmask-all"
                        ))
                    }
                };
                Ok(Step::Msix { device, action })
            }
            "expect" => self.expect(words),
            w => Err(format!("unknown step {w:?}")),
        }
    }

    fn guest(&self, words: &[&str]) -> Result<Step, String> {
        let vcpu = self.vcpu(words[0])?;
        let op = words.get(1).copied().unwrap_or("");
        if op == "msg" {
            let (words, device) = self.trailing_device(words)?;
            need(words, 5)?;
            let entry = self.entry(words[2])?;
            let vector = device_vector(key_value(words[3], "vector")?)?;
            let cpu: u8 = small(key_value(words[4], "cpu")?, "cpu")?;
            if cpu >= self.header.vcpus {
                return Err(format!(
                    "cpu {cpu} but the guest has {} vCPUs",
                    self.header.vcpus
                ));
            }
            return Ok(Step::Msg {
                vcpu,
                device,
                entry,
                vector,
                cpu,
            });
        }
        if op == "window" {
            need(words, 4)?;
            let vector = device_vector(words[2])?;
            let open = match words[3] {
                "open" => true,
                "close" => false,
                w => return Err(format!("window {w:?}: expected open or close")),
            };
            return Ok(Step::Window { vcpu, vector, open });
        }
        let (write, width) =
            width_of(op).ok_or_else(|| format!("unknown guest operation {op:?}"))?;
        let (device, region, offset) = self.region(words.get(2).copied().unwrap_or(""))?;
        let mut access = Access {
            write,
            width,
            device,
            region,
            offset,
            value: 0,
            expect: None,
        };
        if write {
            need(words, 4)?;
            access.value = number(words[3])?;
            let bits = width.bytes() * 8;
            if bits < 64 && access.value >> bits != 0 {
                return Err(format!("value {:#x} does not fit {op}", access.value));
            }
        } else if words.len() == 4 {
            access.expect = Some(number(key_value(words[3], "expect")?)?);
        } else {
            need(words, 3)?;
        }
        Ok(Step::Guest { vcpu, access })
    }

    fn device_step(&self, words: &[&str]) -> Result<Step, String> {
        match words.get(1).copied() {
            Some("fire") => {
                let (words, device) = self.trailing_device(words)?;
                let entry = self.entry(words.get(2).copied().unwrap_or(""))?;
                let count = match words.len() {
                    3 => 1,
                    4 => number(key_value(words[3], "count")?)?,
                    _ => return Err("device fire E [count=N] [dev=K]".into()),
                };
                if !(1..=MAX_FIRE_COUNT).contains(&count) {
                    return Err(format!("count={count}: must be in 1..={MAX_FIRE_COUNT}"));
                }
                Ok(Step::Fire {
                    device,
                    entry,
                    count,
                })
            }
            Some("storm") => match words.get(2).copied() {
                Some("start") => {
                    let (words, device) = self.trailing_device(words)?;
                    need(words, 4)?;
                    let entries = words[3]
                        .split(',')
                        .map(|e| self.entry(e))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Step::StormStart { device, entries })
                }
                Some("stop") => {
                    need(words, 3)?;
                    Ok(Step::StormStop)
                }
                _ => Err("device storm start E[,E...] [dev=K] | device storm stop".into()),
            },
            _ => Err("device fire E [count=N] | device storm ...".into()),
        }
    }

    fn expect(&self, words: &[&str]) -> Result<Step, String> {
        let what = words.get(1).copied().unwrap_or("");
        if what == "irq" || what.starts_with("irq@") {
            need(words, 5)?;
            let vcpu = match what.strip_prefix("irq@") {
                Some(c) => Some(self.vcpu_index(c)?),
                None => None,
            };
            let vector = device_vector(words[2])?;
            let cmp = cmp(words[3])?;
            if cmp == Cmp::Le {
                return Err("expect irq takes = or >=".into());
            }
            return Ok(Step::ExpectIrq {
                vcpu,
                vector,
                cmp,
                count: number(words[4])?,
            });
        }
        match what {
            "exits" | "unclaimed" => {
                need(words, 4)?;
                let cmp = cmp(words[2])?;
                if cmp == Cmp::Ge {
                    return Err(format!("expect {what} takes = or <="));
                }
                let count = number(words[3])?;
                Ok(if what == "exits" {
                    Step::ExpectExits { cmp, count }
                } else {
                    Step::ExpectUnclaimed { cmp, count }
                })
            }
            "pending" => {
                let (words, device) = self.trailing_device(words)?;
                need(words, 5)?;
                let entry = self.entry(words[2])?;
                if words[3] != "=" {
                    return Err("expect pending E = 0|1 [dev=K]".into());
                }
                let pending = match words[4] {
                    "0" => false,
                    "1" => true,
                    w => return Err(format!("pending {w:?}: expected 0 or 1")),
                };
                Ok(Step::ExpectPending {
                    device,
                    entry,
                    pending,
                })
            }
            "window" => {
                need(words, 5)?;
                if words[3] != "=" {
                    return Err("expect window V = N".into());
                }
                Ok(Step::ExpectWindow {
                    vector: device_vector(words[2])?,
                    count: number(words[4])?,
                })
            }
            "event" => self.expect_event(words),
            _ => Err(format!("unknown expectation {what:?}")),
        }
    }

    /// `expect event KIND [entry=E] [dev=K]`.
    fn expect_event(&self, words: &[&str]) -> Result<Step, String> {
        let name = words.get(2).ok_or("expect event KIND [entry=E] [dev=K]")?;
        let kind = events::kind_named(name).ok_or_else(|| {
            format!(
                "event {name:?}: expected one of {}",
                events::kind_names().join(", ")
            )
        })?;
        let (mut entry, mut device) = (None, None);
        for w in &words[3..] {
            let twice = if w.starts_with("entry=") {
                entry.replace(self.entry(key_value(w, "entry")?)?).is_some()
            } else if w.starts_with("dev=") {
                device.replace(self.device(key_value(w, "dev")?)?).is_some()
            } else {
                return Err(format!(
                    "expect event: expected entry=E or dev=K, found {w:?}"
                ));
            };
            if twice {
                return Err(format!("expect event: {w:?} given twice"));
            }
        }
        Ok(Step::ExpectEvent {
            device: device.unwrap_or(0),
            kind,
            entry,
        })
    }
}

/// Parses scenario text (`path` names it in errors).
pub fn parse(path: &str, text: &str) -> Result<Scenario, ParseError> {
    let mut p = Parser {
        header: Header::default(),
        steps: Vec::new(),
        concurrent: None,
    };
    let err = |line: u32, message: String| ParseError {
        path: path.to_string(),
        line: Some(line),
        message,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i as u32 + 1;
        let content = raw.split('#').next().unwrap_or("");
        let words: Vec<&str> = content.split_whitespace().collect();
        if words.is_empty() {
            continue;
        }
        let started = !p.steps.is_empty() || p.concurrent.is_some();
        if !started {
            match p.header.line(line, &words) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(m) => return Err(err(line, m)),
            }
            // The first step: the header is complete.
            p.header.check().map_err(|(at, m)| err(at, m))?;
        } else if header::KEYWORDS.contains(&words[0]) {
            return Err(err(
                line,
                format!("header `{}` after the first step", words[0]),
            ));
        }
        if words[0] == "begin" {
            if p.concurrent.is_some() {
                return Err(err(line, "concurrent blocks do not nest".into()));
            }
            if words.len() != 3 || words[1] != "concurrent" {
                return Err(err(line, "expected `begin concurrent N`".into()));
            }
            let n = number(words[2]).map_err(|m| err(line, m))?;
            if !(1..=MAX_CONCURRENT_REPEAT).contains(&n) {
                return Err(err(
                    line,
                    format!("begin concurrent {n}: N must be in 1..={MAX_CONCURRENT_REPEAT}"),
                ));
            }
            p.concurrent = Some((line, n, Vec::new()));
            continue;
        }
        if words[0] == "end" {
            let Some((start, repeat, steps)) = p.concurrent.take() else {
                return Err(err(line, "`end` without `begin concurrent`".into()));
            };
            if steps.is_empty() {
                return Err(err(start, "empty concurrent block".into()));
            }
            p.steps.push((start, Step::Concurrent { repeat, steps }));
            continue;
        }
        let step = p.step(&words).map_err(|m| err(line, m))?;
        if let Some((_, _, block)) = p.concurrent.as_mut() {
            match &step {
                Step::Guest { access, .. } if access.expect.is_some() => {
                    return Err(err(
                        line,
                        "expect= is not allowed inside a concurrent block".into(),
                    ))
                }
                Step::Guest { .. } | Step::Window { .. } | Step::Msg { .. } => {
                    block.push((line, step))
                }
                _ => {
                    return Err(err(
                        line,
                        "only guest steps may appear inside a concurrent block".into(),
                    ))
                }
            }
        } else {
            p.steps.push((line, step));
        }
    }
    if let Some((start, _, _)) = p.concurrent {
        return Err(err(start, "`begin concurrent` without `end`".into()));
    }
    if p.steps.is_empty() {
        return Err(ParseError {
            path: path.to_string(),
            line: None,
            message: "no steps: an empty scenario checks nothing".into(),
        });
    }
    let h = p.header;
    Ok(Scenario {
        path: path.to_string(),
        vectors: h.vectors,
        vcpus: h.vcpus,
        devices: h.devices,
        x2apic_api: h.x2apic_api,
        layout: h.layout.map(|(_, l)| l),
        policies: h.policies.unwrap_or(vec![h.policy]),
        maskable: h.maskable,
        steps: p.steps,
    })
}
