//! The benchmark, stress mode, hardware checks and command line behind the
//! `msix-bench` binary.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

pub mod bench;
pub mod cli;
pub mod conformance;
pub mod hardware;
pub mod json;
pub mod scenario;
pub mod stress;

pub use msix_rig::Error;
