//! Scenario files: parse, run in a real KVM guest, report.
//!
//! The format, a public contract kept stable, is documented in
//! `docs/scenarios.md`, with its additions marked (`policies`, `begin
//! concurrent N` ... `end`, `guest window`, `expect window`, `device storm`).
//! Anything else is refused with `FILE:LINE: what is wrong`.

use std::fmt;
use std::time::{Duration, Instant};

use msix_accel::Policy;
use serde::Serialize;
use testvm::{Program, Width};

use crate::rig::{Rig, RigConfig};
use crate::storm::{self, StormHandle};

/// Which region of the BAR an access targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The MSI-X table.
    Table,
    /// The Pending Bit Array.
    Pba,
}

/// One guest MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Write (else read).
    pub write: bool,
    /// Width.
    pub width: Width,
    /// Region.
    pub region: Region,
    /// Offset inside the region.
    pub offset: u64,
    /// Value written.
    pub value: u64,
    /// Value a read must return.
    pub expect: Option<u64>,
}

/// A comparison in an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// Exactly.
    Eq,
    /// At least.
    Ge,
    /// At most.
    Le,
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmp::Eq => "=",
            Cmp::Ge => ">=",
            Cmp::Le => "<=",
        })
    }
}

/// A Message Control action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixAction {
    /// Set MSI-X Enable.
    Enable,
    /// Clear MSI-X Enable.
    Disable,
    /// Set Function Mask.
    MaskAll,
    /// Clear Function Mask.
    UnmaskAll,
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The guest performs an access on a vCPU.
    Guest {
        /// vCPU.
        vcpu: u8,
        /// The access.
        access: Access,
    },
    /// The guest programs an entry's message.
    Msg {
        /// vCPU doing it.
        vcpu: u8,
        /// Entry.
        entry: u16,
        /// IDT vector.
        vector: u8,
        /// Destination vCPU.
        cpu: u8,
    },
    /// The guest opens or closes its masked window for an IDT vector.
    Window {
        /// vCPU.
        vcpu: u8,
        /// IDT vector.
        vector: u8,
        /// Open (else close).
        open: bool,
    },
    /// vCPUs run their accesses `repeat` times, all at once.
    Concurrent {
        /// Repetitions.
        repeat: u64,
        /// Each vCPU's steps (guest accesses and windows only).
        steps: Vec<(u32, Step)>,
    },
    /// The source raises an entry.
    Fire {
        /// Entry.
        entry: u16,
        /// Times.
        count: u64,
    },
    /// A storm starts on entries.
    StormStart {
        /// Entries.
        entries: Vec<u16>,
    },
    /// The storm stops.
    StormStop,
    /// A Message Control write.
    Msix(MsixAction),
    /// Interrupt count expectation.
    ExpectIrq {
        /// vCPU, or all.
        vcpu: Option<u8>,
        /// IDT vector.
        vector: u8,
        /// Comparison.
        cmp: Cmp,
        /// Count.
        count: u64,
    },
    /// Deliveries inside the masked window.
    ExpectWindow {
        /// IDT vector.
        vector: u8,
        /// Count (all vCPUs).
        count: u64,
    },
    /// Exits since the previous `expect exits`.
    ExpectExits {
        /// Comparison.
        cmp: Cmp,
        /// Count.
        count: u64,
    },
    /// PBA bit expectation.
    ExpectPending {
        /// Entry.
        entry: u16,
        /// Expected bit.
        pending: bool,
    },
}

/// A parsed scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// File name.
    pub path: String,
    /// Table size.
    pub vectors: u16,
    /// vCPUs.
    pub vcpus: u8,
    /// Policies the file runs under (its `policy`, or its `policies`).
    pub policies: Vec<Policy>,
    /// Whether the source can mask.
    pub maskable: bool,
    /// Steps with their line numbers.
    pub steps: Vec<(u32, Step)>,
}

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

/// Largest `count=` of `device fire`: a million fires take about a second.
pub const MAX_FIRE_COUNT: u64 = 1_000_000;
/// Largest `N` of `begin concurrent N`: each repetition is at least one
/// guest access per line, and most accesses exit to userspace.
pub const MAX_CONCURRENT_REPEAT: u64 = 100_000;

fn number(s: &str) -> Result<u64, String> {
    let parsed = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16)
    } else {
        s.parse()
    };
    parsed.map_err(|_| format!("{s:?} is not a number (decimal or 0x-hex)"))
}

fn small<T: TryFrom<u64>>(s: &str, what: &str) -> Result<T, String> {
    let n = number(s)?;
    T::try_from(n).map_err(|_| format!("{what} {n} out of range"))
}

/// Lowest IDT vector a scenario may use: 0..0x20 are exceptions and 0x20 is
/// testvm's sentinel ([`testvm::SENTINEL_VECTOR`]), which `expect irq =`
/// sends to prove that nothing more is on its way.
pub const FIRST_DEVICE_VECTOR: u8 = testvm::SENTINEL_VECTOR + 1;
/// Highest IDT vector a scenario may use: 0xFE is testvm's doorbell to an
/// idle vCPU, 0xFF the APIC's spurious vector.
pub const LAST_DEVICE_VECTOR: u8 = testvm::DOORBELL_VECTOR - 1;

/// An IDT vector a device interrupt of a scenario may use.
fn device_vector(s: &str) -> Result<u8, String> {
    let v: u8 = small(s, "vector")?;
    if !(FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR).contains(&v) {
        return Err(format!(
            "vector {v:#x} is reserved: scenarios use {FIRST_DEVICE_VECTOR:#x}..={LAST_DEVICE_VECTOR:#x} \
             (0x20 is the sentinel, 0xfe the doorbell, 0xff spurious, below 0x20 exceptions)"
        ));
    }
    Ok(v)
}

fn width_of(op: &str) -> Option<(bool, Width)> {
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

fn key_value<'a>(word: &'a str, key: &str) -> Result<&'a str, String> {
    word.strip_prefix(key)
        .and_then(|w| w.strip_prefix('='))
        .ok_or_else(|| format!("expected {key}=N, found {word:?}"))
}

/// An open `begin concurrent` block: its line, repetitions and steps.
type OpenBlock = (u32, u64, Vec<(u32, Step)>);

struct Parser {
    vectors: u16,
    vcpus: u8,
    policies: Option<Vec<Policy>>,
    policy: Policy,
    maskable: bool,
    steps: Vec<(u32, Step)>,
    concurrent: Option<OpenBlock>,
}

impl Parser {
    fn header(&mut self, words: &[&str]) -> Result<bool, String> {
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

    fn vcpu(&self, word: &str) -> Result<u8, String> {
        if word == "guest" {
            return Ok(0);
        }
        let c = word
            .strip_prefix("guest@")
            .ok_or_else(|| format!("unknown step {word:?}"))?;
        let c: u8 = small(c, "vCPU")?;
        if c >= self.vcpus {
            return Err(format!(
                "vCPU {c} but the guest has {} (set `vcpus` first)",
                self.vcpus
            ));
        }
        Ok(c)
    }

    fn entry(&self, s: &str) -> Result<u16, String> {
        let e: u16 = small(s, "entry")?;
        if e >= self.vectors {
            return Err(format!(
                "entry {e} but the table has {} entries",
                self.vectors
            ));
        }
        Ok(e)
    }

    fn region(&self, s: &str) -> Result<(Region, u64), String> {
        let (name, off) = s
            .split_once('+')
            .ok_or_else(|| format!("expected table+OFFSET or pba+OFFSET, found {s:?}"))?;
        let region = match name {
            "table" => Region::Table,
            "pba" => Region::Pba,
            _ => return Err(format!("region {name:?}: expected table or pba")),
        };
        let offset = number(off)?;
        let table_window = kvm_msix::page_align_up(u64::from(self.vectors) * 16);
        let pba_len = u64::from(self.vectors).div_ceil(64) * 8;
        let limit = if region == Region::Table {
            table_window
        } else {
            pba_len
        };
        if offset >= limit {
            return Err(format!(
                "offset {offset:#x} outside {name} (its window is {limit:#x} bytes)"
            ));
        }
        Ok((region, offset))
    }

    fn cmp(s: &str) -> Result<Cmp, String> {
        match s {
            "=" => Ok(Cmp::Eq),
            ">=" => Ok(Cmp::Ge),
            "<=" => Ok(Cmp::Le),
            _ => Err(format!("expected =, >= or <=, found {s:?}")),
        }
    }

    fn step(&self, words: &[&str]) -> Result<Step, String> {
        let need = |n: usize| {
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
        };
        if words[0] == "guest" || words[0].starts_with("guest@") {
            let vcpu = self.vcpu(words[0])?;
            let op = words.get(1).copied().unwrap_or("");
            if op == "msg" {
                need(5)?;
                let entry = self.entry(words[2])?;
                let vector = device_vector(key_value(words[3], "vector")?)?;
                let cpu: u8 = small(key_value(words[4], "cpu")?, "cpu")?;
                if cpu >= self.vcpus {
                    return Err(format!("cpu {cpu} but the guest has {} vCPUs", self.vcpus));
                }
                return Ok(Step::Msg {
                    vcpu,
                    entry,
                    vector,
                    cpu,
                });
            }
            if op == "window" {
                need(4)?;
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
            let (region, offset) = self.region(words.get(2).copied().unwrap_or(""))?;
            let mut access = Access {
                write,
                width,
                region,
                offset,
                value: 0,
                expect: None,
            };
            if write {
                need(4)?;
                access.value = number(words[3])?;
                let bits = width.bytes() * 8;
                if bits < 64 && access.value >> bits != 0 {
                    return Err(format!("value {:#x} does not fit {op}", access.value));
                }
            } else if words.len() == 4 {
                access.expect = Some(number(key_value(words[3], "expect")?)?);
            } else {
                need(3)?;
            }
            return Ok(Step::Guest { vcpu, access });
        }
        match words[0] {
            "device" => match words.get(1).copied() {
                Some("fire") => {
                    let entry = self.entry(words.get(2).copied().unwrap_or(""))?;
                    let count = match words.len() {
                        3 => 1,
                        4 => number(key_value(words[3], "count")?)?,
                        _ => return Err("device fire E [count=N]".into()),
                    };
                    if !(1..=MAX_FIRE_COUNT).contains(&count) {
                        return Err(format!("count={count}: must be in 1..={MAX_FIRE_COUNT}"));
                    }
                    Ok(Step::Fire { entry, count })
                }
                Some("storm") => match words.get(2).copied() {
                    Some("start") => {
                        need(4)?;
                        let entries = words[3]
                            .split(',')
                            .map(|e| self.entry(e))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(Step::StormStart { entries })
                    }
                    Some("stop") => {
                        need(3)?;
                        Ok(Step::StormStop)
                    }
                    _ => Err("device storm start E[,E...] | device storm stop".into()),
                },
                _ => Err("device fire E [count=N] | device storm ...".into()),
            },
            "msix" => {
                need(2)?;
                Ok(Step::Msix(match words[1] {
                    "enable" => MsixAction::Enable,
                    "disable" => MsixAction::Disable,
                    "mask-all" => MsixAction::MaskAll,
                    "unmask-all" => MsixAction::UnmaskAll,
                    w => {
                        return Err(format!(
                            "msix {w:?}: expected enable, disable, mask-all or unmask-all"
                        ))
                    }
                }))
            }
            "expect" => {
                let what = words.get(1).copied().unwrap_or("");
                if what == "irq" || what.starts_with("irq@") {
                    need(5)?;
                    let vcpu = match what.strip_prefix("irq@") {
                        Some(c) => {
                            let c: u8 = small(c, "vCPU")?;
                            if c >= self.vcpus {
                                return Err(format!("vCPU {c} but the guest has {}", self.vcpus));
                            }
                            Some(c)
                        }
                        None => None,
                    };
                    let vector = device_vector(words[2])?;
                    let cmp = Self::cmp(words[3])?;
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
                    "exits" => {
                        need(4)?;
                        let cmp = Self::cmp(words[2])?;
                        if cmp == Cmp::Ge {
                            return Err("expect exits takes = or <=".into());
                        }
                        Ok(Step::ExpectExits {
                            cmp,
                            count: number(words[3])?,
                        })
                    }
                    "pending" => {
                        need(5)?;
                        let entry = self.entry(words[2])?;
                        if words[3] != "=" {
                            return Err("expect pending E = 0|1".into());
                        }
                        let pending = match words[4] {
                            "0" => false,
                            "1" => true,
                            w => return Err(format!("pending {w:?}: expected 0 or 1")),
                        };
                        Ok(Step::ExpectPending { entry, pending })
                    }
                    "window" => {
                        need(5)?;
                        if words[3] != "=" {
                            return Err("expect window V = N".into());
                        }
                        Ok(Step::ExpectWindow {
                            vector: device_vector(words[2])?,
                            count: number(words[4])?,
                        })
                    }
                    _ => Err(format!("unknown expectation {what:?}")),
                }
            }
            w => Err(format!("unknown step {w:?}")),
        }
    }
}

/// Parses scenario text (`path` names it in errors).
pub fn parse(path: &str, text: &str) -> Result<Scenario, ParseError> {
    let mut p = Parser {
        vectors: 8,
        vcpus: 1,
        policies: None,
        policy: Policy::Fast,
        maskable: false,
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
            match p.header(&words) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(m) => return Err(err(line, m)),
            }
        } else if matches!(
            words[0],
            "vectors" | "vcpus" | "policy" | "policies" | "source"
        ) {
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
    Ok(Scenario {
        path: path.to_string(),
        vectors: p.vectors,
        vcpus: p.vcpus,
        policies: p.policies.unwrap_or(vec![p.policy]),
        maskable: p.maskable,
        steps: p.steps,
    })
}

/// The outcome of one scenario under one policy.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// File.
    pub file: String,
    /// Policy it ran under.
    pub policy: String,
    /// Source kind.
    pub source: String,
    /// Whether every expectation held.
    pub passed: bool,
    /// `FILE:LINE: reason` of the first failure.
    pub failure: Option<String>,
    /// Steps executed.
    pub steps_run: usize,
    /// Table/PBA exits to userspace over the whole run.
    pub exits: u64,
    /// Wall time in milliseconds.
    pub millis: u128,
}

fn program_step(p: &mut Program, rig: &Rig, step: &Step) {
    match *step {
        Step::Guest { access, .. } => {
            let base = match access.region {
                Region::Table => rig.table_gpa,
                Region::Pba => rig.pba_gpa,
            };
            if access.write {
                p.write(access.width, base + access.offset, access.value);
            } else {
                p.read(access.width, base + access.offset);
            }
        }
        Step::Msg {
            entry, vector, cpu, ..
        } => {
            p.write(
                Width::W32,
                rig.entry(entry, 0),
                testvm::TestVm::msi_address(cpu),
            );
            p.write(Width::W32, rig.entry(entry, 4), 0);
            p.write(Width::W32, rig.entry(entry, 8), u64::from(vector));
        }
        Step::Window { vector, open, .. } => {
            p.masked_window(vector, open);
        }
        _ => {}
    }
}

struct Run<'a> {
    rig: &'a Rig,
    exits_mark: u64,
    storm: Option<StormHandle>,
}

/// How often `expect irq` looks at the guest's counters while it waits.
const IRQ_POLL: Duration = Duration::from_micros(200);

impl Run<'_> {
    fn irqs(&self, vcpu: Option<u8>, vector: u8) -> u64 {
        match vcpu {
            Some(c) => self.rig.vm.irq_count_on(c, vector),
            None => self.rig.vm.irq_count(vector),
        }
    }

    fn exec(&mut self, step: &Step) -> Result<(), String> {
        let rig = self.rig;
        match step {
            Step::Guest { vcpu, access } => {
                let mut p = Program::new();
                program_step(&mut p, rig, step);
                let out = rig.vm.run(*vcpu, &p).map_err(|e| e.to_string())?;
                if let (Some(expect), Some(&got)) = (access.expect, out.values().first()) {
                    if got != expect {
                        return Err(format!("read {got:#x}, expected {expect:#x}"));
                    }
                }
            }
            Step::Msg { vcpu, .. } | Step::Window { vcpu, .. } => {
                let mut p = Program::new();
                program_step(&mut p, rig, step);
                rig.vm.run(*vcpu, &p).map_err(|e| e.to_string())?;
            }
            Step::Concurrent { repeat, steps } => {
                let mut used = Vec::new();
                for c in 0..rig.vm.vcpus() {
                    let mine: Vec<&Step> = steps
                        .iter()
                        .map(|(_, s)| s)
                        .filter(|s| matches!(s, Step::Guest { vcpu, .. } | Step::Msg { vcpu, .. } | Step::Window { vcpu, .. } if *vcpu == c))
                        .collect();
                    if mine.is_empty() {
                        continue;
                    }
                    let mut p = Program::new();
                    p.repeat(*repeat, |p| {
                        for s in &mine {
                            program_step(p, rig, s);
                        }
                    });
                    rig.vm.start(c, &p).map_err(|e| e.to_string())?;
                    used.push(c);
                }
                for c in used {
                    rig.vm.wait(c).map_err(|e| e.to_string())?;
                }
            }
            Step::Fire { entry, count } => {
                rig.source
                    .fire_n(*entry, *count)
                    .map_err(|e| e.to_string())?;
            }
            Step::StormStart { entries } => {
                if self.storm.is_some() {
                    return Err("a storm is already running".into());
                }
                let h =
                    storm::storm(&rig.source, entries.clone(), None).map_err(|e| e.to_string())?;
                self.storm = Some(h);
            }
            Step::StormStop => {
                let h = self.storm.take().ok_or("no storm is running")?;
                h.stop();
            }
            Step::Msix(action) => {
                let mc = rig.accel.message_control();
                let value = match action {
                    MsixAction::Enable => mc | 0x8000,
                    MsixAction::Disable => mc & !0x8000,
                    MsixAction::MaskAll => mc | 0x4000,
                    MsixAction::UnmaskAll => mc & !0x4000,
                };
                rig.accel
                    .write_message_control(value)
                    .map_err(|e| e.to_string())?;
            }
            Step::ExpectIrq {
                vcpu,
                vector,
                cmp,
                count,
            } => {
                // Reach N within the watchdog...
                let watchdog = rig.vm.watchdog();
                let deadline = Instant::now() + watchdog;
                loop {
                    let n = self.irqs(*vcpu, *vector);
                    if n >= *count {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(format!(
                            "IDT vector {vector:#x}: {n} interrupts after the {} ms watchdog, expected {cmp} {count}",
                            watchdog.as_millis()
                        ));
                    }
                    std::thread::sleep(IRQ_POLL);
                }
                if *cmp == Cmp::Eq {
                    // ...then a sentinel on every vCPU: an interrupt that
                    // already reached a local APIC is taken before it, so a
                    // count still at N afterwards is exactly N, however late
                    // the host injects.
                    rig.vm.sentinel_all().map_err(|e| e.to_string())?;
                    let n = self.irqs(*vcpu, *vector);
                    if n != *count {
                        return Err(format!(
                            "IDT vector {vector:#x}: {n} interrupts (after a sentinel on every vCPU), expected = {count}"
                        ));
                    }
                }
            }
            Step::ExpectWindow { vector, count } => {
                let n: u64 = (0..rig.vm.vcpus())
                    .map(|c| rig.vm.window_count(c, *vector))
                    .sum();
                if n != *count {
                    return Err(format!("IDT vector {vector:#x}: {n} interrupts inside the masked window, expected {count}"));
                }
            }
            Step::ExpectExits { cmp, count } => {
                let now = rig.vm.exits().mmio();
                let n = now - self.exits_mark;
                self.exits_mark = now;
                let ok = match cmp {
                    Cmp::Eq => n == *count,
                    Cmp::Le => n <= *count,
                    Cmp::Ge => n >= *count,
                };
                if !ok {
                    return Err(format!("{n} exits to userspace, expected {cmp} {count}"));
                }
            }
            Step::ExpectPending { entry, pending } => {
                let got = rig.accel.pending(*entry).map_err(|e| e.to_string())?;
                if got != *pending {
                    return Err(format!(
                        "entry {entry} pending = {}, expected {}",
                        u8::from(got),
                        u8::from(*pending)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs `scenario` under `policy` in a fresh guest.
pub fn run(scenario: &Scenario, policy: Policy) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        file: scenario.path.clone(),
        policy: policy.to_string(),
        source: if scenario.maskable {
            "maskable"
        } else {
            "plain"
        }
        .into(),
        passed: false,
        failure: None,
        steps_run: 0,
        exits: 0,
        millis: 0,
    };
    let rig = match Rig::new(RigConfig {
        vectors: scenario.vectors,
        vcpus: scenario.vcpus,
        policy,
        maskable: scenario.maskable,
        ..RigConfig::default()
    }) {
        Ok(r) => r,
        Err(e) => {
            outcome.failure = Some(format!("{}: cannot build the guest: {e}", scenario.path));
            return outcome;
        }
    };
    let mut run = Run {
        rig: &rig,
        exits_mark: 0,
        storm: None,
    };
    for (line, step) in &scenario.steps {
        if let Err(reason) = run.exec(step) {
            outcome.failure = Some(format!("{}:{line}: {reason}", scenario.path));
            break;
        }
        outcome.steps_run += 1;
    }
    if let Some(h) = run.storm.take() {
        h.stop();
    }
    if outcome.failure.is_none() {
        if let Some(e) = rig.take_events().first() {
            outcome.failure = Some(format!("{}: accelerator event: {e}", scenario.path));
        }
    }
    outcome.passed = outcome.failure.is_none();
    outcome.exits = rig.vm.exits().mmio();
    outcome.millis = started.elapsed().as_millis();
    outcome
}

const SEE_HELP: &str = "see msix-bench scenario --help";

/// `msix-bench scenario --help` (and `msix-bench help scenario`).
pub const HELP: &str = "\
usage: msix-bench scenario [--policy fast|strict|trap] [--json] FILE...

Runs each scenario file (format: docs/scenarios.md) in a fresh real KVM
guest with one accelerated MSI-X device on the software source, under each
policy the file lists (or only under --policy), and prints one PASS or FAIL
line per file and policy, then `N passed, N failed`.

OPTIONS:
    --policy P   run every file under P only (fast, strict or trap)
    --json       print a JSON array, one object per file and policy run
    -h, --help   this text

Every file is read and parsed before anything runs: an error is one line
`FILE:LINE: what is wrong` (or `FILE: what is wrong` for the whole file,
e.g. unreadable or without steps).

EXIT STATUS:
    0 every expectation held; 1 an expectation failed; 2 bad usage, a file
    that does not parse, or /dev/kvm missing or not accessible.
";

/// What `msix-bench scenario` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Args {
    policy: Option<Policy>,
    json: bool,
    files: Vec<String>,
}

/// Parses the scenario runner's arguments; `Ok(None)` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        policy: None,
        json: false,
        files: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => parsed.json = true,
            "--policy" => {
                let p = it
                    .next()
                    .ok_or(format!("--policy needs a policy ({SEE_HELP})"))?;
                parsed.policy = Some(p.parse::<Policy>().map_err(|e| e.to_string())?);
            }
            "-h" | "--help" => return Ok(None),
            f if f.starts_with('-') => return Err(format!("unknown option {f} ({SEE_HELP})")),
            f => parsed.files.push(f.to_string()),
        }
    }
    if parsed.files.is_empty() {
        return Err(format!("no FILE given ({SEE_HELP})"));
    }
    Ok(Some(parsed))
}

/// Reads and parses every file; the first error, as one line.
fn load(files: &[String]) -> Result<Vec<Scenario>, String> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: cannot read: {e}"))?;
            parse(f, &text).map_err(|e| e.to_string())
        })
        .collect()
}

/// `msix-bench scenario ...`: returns the process exit code (0 only when
/// every expectation of every file held; 2 for usage or parse errors or no
/// usable /dev/kvm, each reported in one line before anything runs).
pub fn run_cli(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return 0;
        }
        Err(e) => {
            eprintln!("msix-bench scenario: {e}");
            return 2;
        }
    };
    let scenarios = match load(&args.files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if let Err(e) = crate::bench::sys::check_kvm() {
        eprintln!("msix-bench scenario: {e}");
        return 2;
    }
    let mut outcomes = Vec::new();
    for s in &scenarios {
        let policies = args.policy.map_or_else(|| s.policies.clone(), |p| vec![p]);
        for p in policies {
            let o = run(s, p);
            if !args.json {
                match &o.failure {
                    None => println!(
                        "PASS {} [{} {}] {} steps, {} exits, {} ms",
                        o.file, o.policy, o.source, o.steps_run, o.exits, o.millis
                    ),
                    Some(f) => println!("FAIL {f} [{} {}]", o.policy, o.source),
                }
            }
            outcomes.push(o);
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if args.json {
        match serde_json::to_string_pretty(&outcomes) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("msix-bench scenario: cannot encode JSON: {e}");
                return 1;
            }
        }
    } else {
        println!("{} passed, {} failed", outcomes.len() - failed, failed);
    }
    i32::from(failed > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_of_the_contract_parses() {
        let text = "vectors 4\nmsix enable\nguest msg 0 vector=0x40 cpu=0\nguest write32 table+0x0c 0 # unmask\ndevice fire 0\nexpect irq 0x40 = 1\nguest read32 table+0x00 expect=0xfee00000\nexpect pending 0 = 0\n";
        let s = parse("x.scn", text).unwrap();
        assert_eq!(s.vectors, 4);
        assert_eq!(s.policies, vec![Policy::Fast]);
        assert_eq!(s.steps.len(), 7);
        assert_eq!(s.steps[2].0, 4);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            ("vectors 4\nguest write32 table+0x0c\n", 2, "takes 4 words"),
            (
                "vectors 4\nguest write32 table+0x1000 0\n",
                2,
                "outside table",
            ),
            ("vectors 4\ndevice fire 4\n", 2, "entry 4"),
            ("msix enable\nvectors 4\n", 2, "after the first step"),
            ("vectors 0\n", 1, "out of range"),
            ("guest@1 read32 table+0\n", 1, "vCPU 1"),
            ("expect irq 0x40 <= 1\n", 1, "= or >="),
            (
                "begin concurrent 3\nguest read32 table+0 expect=1\nend\n",
                2,
                "not allowed",
            ),
            (
                "begin concurrent 3\nguest read32 table+0\n",
                1,
                "without `end`",
            ),
            ("policy fastest\n", 1, "unknown policy"),
            ("guest write8 table+0 0x100\n", 1, "does not fit"),
            ("frobnicate\n", 1, "unknown step"),
            ("vectors 4\nguest msg 0 vector=0x20 cpu=0\n", 2, "reserved"),
            ("guest msg 0 vector=0x1f cpu=0\n", 1, "reserved"),
            ("guest msg 0 vector=0xfe cpu=0\n", 1, "reserved"),
            ("expect irq 0x20 = 1\n", 1, "0x20 is the sentinel"),
            ("expect irq@0 0 >= 1\n", 1, "reserved"),
            ("expect irq 0xff = 0\n", 1, "reserved"),
            ("guest window 0x20 open\n", 1, "reserved"),
            ("expect window 0xfe = 0\n", 1, "reserved"),
            ("device fire 0 count=99999999999\n", 1, "1..=1000000"),
            ("device fire 0 count=0\n", 1, "1..=1000000"),
            (
                "begin concurrent 99999999999\nguest read32 table+0\nend\n",
                1,
                "1..=100000",
            ),
            (
                "begin concurrent 0\nguest read32 table+0\nend\n",
                1,
                "1..=100000",
            ),
        ];
        for (text, line, needle) in cases {
            let e = parse("f.scn", text).unwrap_err();
            assert_eq!(e.line, Some(line), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("f.scn:{line}: ")), "{e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_file_without_steps_is_an_error_naming_the_file_only() {
        for text in ["", "# nothing\n\n", "vectors 4\npolicies fast trap\n"] {
            let e = parse("empty.scn", text).unwrap_err();
            assert_eq!(e.line, None, "{text:?}");
            assert_eq!(
                e.to_string(),
                "empty.scn: no steps: an empty scenario checks nothing"
            );
        }
    }

    #[test]
    fn counts_at_their_bounds_are_accepted() {
        let s = parse(
            "b.scn",
            "device fire 0 count=1000000\nbegin concurrent 100000\nguest read32 table+0\nend\n",
        )
        .unwrap();
        assert_eq!(
            s.steps[0].1,
            Step::Fire {
                entry: 0,
                count: MAX_FIRE_COUNT
            }
        );
        assert!(matches!(
            s.steps[1].1,
            Step::Concurrent {
                repeat: MAX_CONCURRENT_REPEAT,
                ..
            }
        ));
    }

    #[test]
    fn runner_arguments_are_checked_before_any_file_is_read() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&["--help", "x.scn"])), Ok(None));
        let parsed = parse_args(&args(&["--policy", "trap", "--json", "a.scn"]))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.policy, Some(Policy::Trap));
        assert!(parsed.json);
        assert_eq!(parsed.files, vec!["a.scn".to_string()]);
        assert!(parse_args(&args(&[])).unwrap_err().contains("no FILE"));
        assert!(parse_args(&args(&["--policy"]))
            .unwrap_err()
            .contains("needs a policy"));
        assert!(parse_args(&args(&["--policy", "fastest", "a.scn"])).is_err());
        assert!(parse_args(&args(&["--frob", "a.scn"]))
            .unwrap_err()
            .contains("unknown option --frob"));
    }

    #[test]
    fn an_unreadable_file_is_named_without_a_line() {
        let e = load(&["/nonexistent/x.scn".to_string()]).unwrap_err();
        assert!(e.starts_with("/nonexistent/x.scn: cannot read: "), "{e}");
    }

    #[test]
    fn device_vectors_0x21_to_0xfd_are_accepted() {
        let s = parse(
            "v.scn",
            "guest msg 0 vector=0x21 cpu=0\nguest msg 1 vector=0xfd cpu=0\nexpect irq 0x21 = 0\nexpect irq 0xfd >= 0\n",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 4);
        assert!(matches!(s.steps[1].1, Step::Msg { vector: 0xFD, .. }));
        assert!(matches!(s.steps[2].1, Step::ExpectIrq { vector: 0x21, .. }));
    }

    #[test]
    fn policies_header_lists_every_policy_to_run() {
        let s = parse(
            "p.scn",
            "policies fast trap\nsource maskable\nmsix enable\n",
        )
        .unwrap();
        assert_eq!(s.policies, vec![Policy::Fast, Policy::Trap]);
        assert!(s.maskable);
    }
}
