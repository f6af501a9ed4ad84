//! The scenario runner and benchmark behind the `msix-bench` binary, and the
//! rig (a real KVM guest with an accelerated software MSI-X device) that
//! integration tests share.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

pub mod bench;
pub mod rig;
pub mod scenario;
