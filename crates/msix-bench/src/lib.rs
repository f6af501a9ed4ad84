//! The benchmark, the stress mode and the command line behind the
//! `msix-bench` binary, which also runs the conformance kit
//! (`msix-conformance`: `scenario`, `conformance`) and the hardware checks
//! (`msix-hardware`: `--vfio`).
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

pub mod bench;
pub mod cli;
pub mod conformance;
pub mod json;
pub mod scenario;
pub mod stress;
pub mod vfio;

pub use msix_rig::Error;
