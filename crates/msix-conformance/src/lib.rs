//! A conformance kit for MSI-X emulation: scenario files (a small language
//! of guest accesses, device fires and expectations) run in a real KVM
//! guest against any VMM's MSI-X handling, and the matrix of files x
//! targets.
//!
//! The format, a public contract kept stable, is documented in
//! `docs/scenarios.md`; the matrix and what each peer VMM model gets right
//! in `docs/conformance.md`. Anything a file gets wrong is refused with
//! `FILE:LINE: what is wrong`.
//!
//! - `step`: what a parsed file says (header and steps);
//! - `header`, `words`, `parse`: the parser;
//! - `target`: [`Target`], what the runner needs of a VMM under test, and
//!   its implementation for our accelerator on the software
//!   [`msix_rig::rig::Rig`];
//! - `run`: the runner, on a [`Target`], and its [`Outcome`];
//! - `matrix`: files x targets ([`run_matrix`]);
//! - `fit`: whether a file fits a real device, or why it is skipped;
//! - `events`: event kind names and the ledger `expect event` consumes.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod events;
mod fit;
mod header;
mod matrix;
mod parse;
mod run;
mod step;
mod target;
mod words;

#[cfg(test)]
mod parse_tests;

pub use events::{kind_name, kind_named};
pub use fit::{skip_reason, DeviceOffer, RAISED_WHILE_DISABLED};
pub use header::MAX_BAR_SIZE;
pub use matrix::{run_matrix, Candidate, FileRow, Matrix, Ours, Verdict};
pub use parse::{load, parse, ParseError, MAX_CONCURRENT_REPEAT, MAX_FIRE_COUNT};
pub use run::{rig_config, run, run_on, run_target, source_name, Outcome, SCENARIO_WATCHDOG};
pub use step::{Access, Cmp, MsixAction, Region, Scenario, Step};
pub use target::{AccelSetup, Storm, Target};
pub use words::{FIRST_DEVICE_VECTOR, LAST_DEVICE_VECTOR};
