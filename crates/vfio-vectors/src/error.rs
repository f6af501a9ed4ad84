//! Errors of the interrupt source.

/// The result of source operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong in an interrupt source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A vector number at or past the source's vector count.
    #[error("vector {vector} out of range: the source has {count} vectors")]
    VectorOutOfRange {
        /// The offending vector.
        vector: u16,
        /// The source's vector count.
        count: u16,
    },
    /// A vector count of 0 or above what the device implements.
    #[error("invalid vector count {count}: the source supports 1..={max}")]
    InvalidCount {
        /// The requested count.
        count: u16,
        /// The device's maximum.
        max: u16,
    },
    /// Creating, reading or writing an eventfd failed.
    #[error("eventfd operation failed: {0}")]
    EventFd(#[source] std::io::Error),
    /// The source cannot mask vectors itself.
    #[error("vector {vector}: the source cannot mask vectors itself")]
    MaskUnsupported {
        /// The vector the caller tried to mask or unmask.
        vector: u16,
    },
    /// The device has no MSI-X interrupt index.
    #[error("the device has no MSI-X interrupts")]
    NoMsix,
    /// VFIO_DEVICE_GET_IRQ_INFO failed.
    #[error("VFIO_DEVICE_GET_IRQ_INFO failed: errno {errno}")]
    IrqInfo {
        /// The errno the kernel returned.
        errno: i32,
    },
    /// VFIO_DEVICE_SET_IRQS failed.
    #[error("VFIO_DEVICE_SET_IRQS (start {start}, count {count}) failed: errno {errno}")]
    SetIrqs {
        /// First vector of the call.
        start: u32,
        /// Number of vectors of the call.
        count: u32,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// Opening or querying the VFIO device failed.
    #[error("VFIO device: {0}")]
    Vfio(String),
    /// VFIO_DEVICE_GET_REGION_INFO failed for a device region.
    #[error("VFIO_DEVICE_GET_REGION_INFO (region {index}) failed: errno {errno}")]
    RegionInfo {
        /// The VFIO region index (0..=5 BARs, 7 config space).
        index: u32,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// A pread/pwrite on a VFIO device region failed or was short.
    #[error("access to VFIO region {index} at offset {offset:#x} failed: errno {errno}")]
    RegionAccess {
        /// The VFIO region index (0..=5 BARs, 7 config space).
        index: u32,
        /// The offset inside the region.
        offset: u64,
        /// The errno (EIO for a short transfer).
        errno: i32,
    },
    /// The device's MSI-X capability in config space is malformed or
    /// points outside its BAR.
    #[error("invalid MSI-X capability: {0}")]
    InvalidMsixCapability(String),
}
