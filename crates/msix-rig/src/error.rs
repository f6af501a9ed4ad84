//! [`Error`]: what the rig, the bench, the scenario runner and the hardware
//! checks report when a guest, the accelerator, the host or a measured
//! behaviour fails.

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
