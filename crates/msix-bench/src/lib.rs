//! The scenario runner and benchmark behind the `msix-bench` binary, and the
//! rig (a real KVM guest with an accelerated software MSI-X device) that
//! integration tests share.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

pub mod bench;
pub mod cli;
pub mod hardware;
pub mod rig;
pub mod scenario;
pub mod storm;
pub mod stress;

/// Errors of the rig, the scenario runner and the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The guest failed.
    #[error("guest: {0}")]
    Guest(#[from] testvm::Error),
    /// The accelerator failed.
    #[error("accelerator: {0}")]
    Accel(#[from] msix_accel::Error),
    /// Routing or irqfd ioctls failed.
    #[error("routing: {0}")]
    Routing(#[from] irqfd_routes::Error),
    /// The software source failed.
    #[error("source: {0}")]
    Source(#[from] vfio_vectors::Error),
    /// A register access on an assigned device failed.
    #[error("device: {what}: {source}")]
    Device {
        /// What was accessed.
        what: String,
        /// The kernel's error.
        source: std::io::Error,
    },
    /// A measured behaviour was not what it must be, or a model refused.
    #[error("{0}")]
    Check(String),
}
