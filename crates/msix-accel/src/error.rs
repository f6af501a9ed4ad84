//! Errors of the accelerator.

/// The result of accelerator operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong in an accelerator; each variant names the layer that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The MSI-X model refused an input (vector out of range, bad snapshot...).
    #[error("MSI-X model: {0}")]
    Model(#[from] msix_model::Error),
    /// The KVM table binding failed (memslot, ioeventfd, shadow).
    #[error("table binding: {0}")]
    Binding(#[from] kvm_msix::Error),
    /// GSI routing or an irqfd failed.
    #[error("routing: {0}")]
    Routing(#[from] irqfd_routes::Error),
    /// The interrupt source failed.
    #[error("interrupt source: {0}")]
    Source(#[from] vfio_vectors::Error),
    /// The source's vector count and the table size differ.
    #[error("the source has {source_vectors} vectors but the table has {table_size} entries")]
    SizeMismatch {
        /// Vectors of the source.
        source_vectors: u16,
        /// Entries of the table.
        table_size: u16,
    },
    /// A snapshot taken from a different device shape or format.
    #[error("snapshot does not fit this device: {0}")]
    Snapshot(String),
    /// An operation met state it needs but that is not there (a bug, never
    /// a guest's doing).
    #[error("internal state missing: {0}")]
    NotReady(&'static str),
    /// A BAR index (BIR) past the six a function has.
    #[error("BAR {0} does not exist (a function has BARs 0 to 5)")]
    InvalidBar(u8),
    /// The service thread could not be started.
    #[error("service thread: {0}")]
    Service(String),
}
