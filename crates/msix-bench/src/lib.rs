//! The scenario runner and benchmark behind the `msix-bench` binary, and the
//! rig (a real KVM guest with an accelerated software MSI-X device) that
//! integration tests share.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod rig;
pub mod scenario;
