//! The conformance matrix: every file against every target kind, each in a
//! fresh guest, as pass, fail (the first failing line and why) or skipped
//! (why the target cannot hold the file), printed as a table or JSON.

use std::collections::BTreeMap;

use msix_accel::Policy;
use serde::Serialize;

use super::run::{rig_config, run_target, source_name, Outcome};
use super::step::Scenario;
use super::target::Target;
use msix_rig::rig::Rig;

/// A kind of target a file can run on: builds a fresh [`Target`] for each
/// file it can hold, or says why it cannot.
pub trait Candidate {
    /// Its column name (`fast`, `qemu-like`, ...).
    fn name(&self) -> String;
    /// Its source kind, as outcomes name it.
    fn source(&self) -> String;
    /// Why `scenario` cannot run on it at all, or None when it can.
    fn skip_reason(&self, scenario: &Scenario) -> Option<String>;
    /// A fresh target for `scenario`.
    fn build(&self, scenario: &Scenario) -> Result<Box<dyn Target>, String>;
}

/// Our accelerator on the software rig under one policy, its source masking
/// on or off whatever the file's `source` says (the file's exit counts are
/// then held only where its `policies` and `source` match).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ours {
    /// Fast-path policy.
    pub policy: Policy,
    /// Whether the source masks vectors itself.
    pub maskable: bool,
}

impl Ours {
    /// The six configurations: `fast`, `strict`, `trap`, then each with
    /// source masking.
    pub fn all() -> Vec<Ours> {
        [false, true]
            .into_iter()
            .flat_map(|maskable| {
                [Policy::Fast, Policy::Strict, Policy::Trap]
                    .into_iter()
                    .map(move |policy| Ours { policy, maskable })
            })
            .collect()
    }
}

impl Candidate for Ours {
    fn name(&self) -> String {
        if self.maskable {
            format!("{}-maskable", self.policy)
        } else {
            self.policy.to_string()
        }
    }
    fn source(&self) -> String {
        source_name(self.maskable).into()
    }
    fn skip_reason(&self, _scenario: &Scenario) -> Option<String> {
        None
    }
    fn build(&self, scenario: &Scenario) -> Result<Box<dyn Target>, String> {
        let config = msix_rig::rig::RigConfig {
            maskable: self.maskable,
            ..rig_config(scenario, self.policy)
        };
        let rig = Rig::new(config).map_err(|e| e.to_string())?;
        Ok(Box::new(rig))
    }
}

/// How one file ended on one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every expectation held against it.
    Pass,
    /// An expectation failed.
    Fail,
    /// It could not run the file.
    Skipped,
}

impl Verdict {
    /// The verdict of `outcome`.
    pub fn of(outcome: &Outcome) -> Verdict {
        match (&outcome.skipped, outcome.passed) {
            (Some(_), _) => Verdict::Skipped,
            (None, true) => Verdict::Pass,
            (None, false) => Verdict::Fail,
        }
    }
}

/// One file's row.
#[derive(Clone, Debug, Serialize)]
pub struct FileRow {
    /// The file.
    pub file: String,
    /// Each target's verdict, by target name.
    pub results: BTreeMap<String, Verdict>,
    /// Each target's outcome (first failure, skip reason, skipped steps,
    /// exits, time), by target name.
    pub detail: BTreeMap<String, Outcome>,
}

/// Files x targets.
#[derive(Clone, Debug, Serialize)]
pub struct Matrix {
    /// Target names, in column order.
    pub targets: Vec<String>,
    /// One row per file, in the order given.
    pub files: Vec<FileRow>,
}

/// Runs every file on every candidate, one fresh target each, calling
/// `progress` after each run.
pub fn run_matrix(
    scenarios: &[Scenario],
    candidates: &[Box<dyn Candidate>],
    mut progress: impl FnMut(&Outcome),
) -> Matrix {
    let targets: Vec<String> = candidates.iter().map(|c| c.name()).collect();
    let mut files = Vec::new();
    for s in scenarios {
        let mut row = FileRow {
            file: s.path.clone(),
            results: BTreeMap::new(),
            detail: BTreeMap::new(),
        };
        for (c, name) in candidates.iter().zip(&targets) {
            let mut outcome = Outcome::new(s, name.clone(), c.source());
            let outcome = match c.skip_reason(s) {
                Some(why) => {
                    outcome.skipped = Some(why);
                    outcome
                }
                None => run_target(s, outcome, || c.build(s)),
            };
            progress(&outcome);
            row.results.insert(name.clone(), Verdict::of(&outcome));
            row.detail.insert(name.clone(), outcome);
        }
        files.push(row);
    }
    Matrix { targets, files }
}

impl Matrix {
    /// How many cells ended so: (pass, fail, skipped).
    pub fn totals(&self) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for v in self.files.iter().flat_map(|f| f.results.values()) {
            match v {
                Verdict::Pass => t.0 += 1,
                Verdict::Fail => t.1 += 1,
                Verdict::Skipped => t.2 += 1,
            }
        }
        t
    }

    /// The matrix as text: a table of files x targets (`pass`, `FAIL`,
    /// `skip`; `pass*` when steps were skipped), then one line per failure
    /// with its first failing line and why, one per skip with its reason,
    /// and the totals.
    pub fn table(&self) -> String {
        let name_width = self
            .files
            .iter()
            .map(|f| short(&f.file).len())
            .max()
            .unwrap_or(4)
            .max(4);
        let widths: Vec<usize> = self.targets.iter().map(|t| t.len().max(5)).collect();
        let mut out = format!("{:name_width$}", "file");
        for (t, w) in self.targets.iter().zip(&widths) {
            out.push_str(&format!(" {t:>w$}"));
        }
        out.push('\n');
        let mut notes = String::new();
        for f in &self.files {
            out.push_str(&format!("{:name_width$}", short(&f.file)));
            for (t, w) in self.targets.iter().zip(&widths) {
                let o = &f.detail[t];
                let cell = match Verdict::of(o) {
                    Verdict::Pass if o.skipped_steps.is_empty() => "pass",
                    Verdict::Pass => "pass*",
                    Verdict::Fail => "FAIL",
                    Verdict::Skipped => "skip",
                };
                out.push_str(&format!(" {cell:>w$}"));
                match (&o.skipped, &o.failure) {
                    (Some(why), _) => notes.push_str(&format!("SKIP {} [{t}]: {why}\n", f.file)),
                    (None, Some(why)) => notes.push_str(&format!("FAIL [{t}] {why}\n")),
                    _ => {}
                }
            }
            out.push('\n');
        }
        let (pass, fail, skip) = self.totals();
        out.push_str("pass* = passed, with steps written for our accelerator alone skipped (--json lists them)\n");
        out.push_str(&notes);
        out.push_str(&format!("{pass} passed, {fail} failed, {skip} skipped\n"));
        out
    }
}

/// A file's name without its directories, for the table.
fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
