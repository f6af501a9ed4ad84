//! Errors of the KVM table binding.

/// The result of table-binding operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong binding a table to KVM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Mapping the shadow table failed.
    #[error("cannot map the shadow table: {0}")]
    Shadow(String),
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("KVM_SET_USER_MEMORY_REGION (slot {slot}, gpa {gpa:#x}) failed: errno {errno}")]
    Memslot {
        /// The memslot.
        slot: u32,
        /// Its guest physical address.
        gpa: u64,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// KVM_IOEVENTFD failed.
    #[error("KVM_IOEVENTFD ({op}) at {gpa:#x} failed: errno {errno}")]
    Ioeventfd {
        /// "assign" or "deassign".
        op: &'static str,
        /// The address.
        gpa: u64,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// Creating or reading an eventfd or epoll set failed.
    #[error("eventfd/epoll operation failed: {0}")]
    Event(#[source] std::io::Error),
    /// A guest physical address that is not page aligned where a page is needed.
    #[error("table address {gpa:#x} is not page aligned")]
    Unaligned {
        /// The address.
        gpa: u64,
    },
    /// The table is already placed (call `remove` first) or not placed.
    #[error("table placement state: {0}")]
    State(&'static str),
    /// An offset outside the shadow table.
    #[error("offset {offset:#x} outside the shadow table of {len:#x} bytes")]
    OutOfRange {
        /// The offset.
        offset: u64,
        /// The table length.
        len: u64,
    },
}
