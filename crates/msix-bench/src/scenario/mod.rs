//! Scenario files: parse, run in a real KVM guest, report.
//!
//! The format, a public contract kept stable, is documented in
//! `docs/scenarios.md`, with its additions marked (`policies`, `begin
//! concurrent N` ... `end`, `guest window`, `expect window`, `device storm`,
//! several devices, `x2apic-api`, `layout`, BAR regions, `expect event`,
//! `expect unclaimed`). Anything else is refused with `FILE:LINE: what is
//! wrong`.
//!
//! - `step`: what a parsed file says (header and steps);
//! - `header`, `words`, `parse`: the parser;
//! - `run`: the runner, on a [`Target`];
//! - `target`: what the runner needs of a rig, for the software
//!   [`crate::rig::Rig`] and a real device
//!   ([`crate::hardware::scenario_rig`]);
//! - `fit`: whether a file fits a real device, or why it is skipped;
//! - `events`: event kind names and the ledger `expect event` consumes;
//! - `cli`: `msix-bench scenario`'s options and output.

mod cli;
mod events;
mod fit;
mod header;
mod parse;
mod run;
mod step;
mod target;
mod words;

#[cfg(test)]
mod parse_tests;

pub use cli::{run_cli, HELP};
pub use events::{kind_name, kind_named};
pub use fit::{skip_reason, DeviceOffer, RAISED_WHILE_DISABLED};
pub use header::MAX_BAR_SIZE;
pub use parse::{parse, ParseError, MAX_CONCURRENT_REPEAT, MAX_FIRE_COUNT};
pub use run::{rig_config, run, run_on, Outcome};
pub use step::{Access, Cmp, MsixAction, Region, Scenario, Step};
pub use target::{Storm, Target};
pub use words::{FIRST_DEVICE_VECTOR, LAST_DEVICE_VECTOR};
