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
//! - `run`: the runner, on a [`crate::rig::Rig`];
//! - `events`: event kind names and the ledger `expect event` consumes;
//! - `cli`: `msix-bench scenario`'s options and output.

mod cli;
mod events;
mod header;
mod parse;
mod run;
mod step;
mod words;

#[cfg(test)]
mod parse_tests;

pub use cli::{run_cli, HELP};
pub use events::{kind_name, kind_named};
pub use header::MAX_BAR_SIZE;
pub use parse::{parse, ParseError, MAX_CONCURRENT_REPEAT, MAX_FIRE_COUNT};
pub use run::{run, Outcome};
pub use step::{Access, Cmp, MsixAction, Region, Scenario, Step};
pub use words::{FIRST_DEVICE_VECTOR, LAST_DEVICE_VECTOR};
