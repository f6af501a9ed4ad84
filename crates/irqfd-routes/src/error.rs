//! Errors of GSI routing and irqfd operations.

use std::os::fd::RawFd;

use crate::Gsi;

/// The result of this crate's operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Which `KVM_IRQFD` operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqfdOp {
    /// Binding the eventfd to the GSI.
    Assign,
    /// Unbinding it (`KVM_IRQFD_FLAG_DEASSIGN`).
    Deassign,
}

impl std::fmt::Display for IrqfdOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IrqfdOp::Assign => "assign",
            IrqfdOp::Deassign => "deassign",
        })
    }
}

/// What went wrong in routing or irqfd handling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// KVM does not support GSI routing (KVM_CAP_IRQ_ROUTING is 0).
    #[error("KVM does not support GSI routing (KVM_CAP_IRQ_ROUTING = {value})")]
    NoIrqRouting {
        /// What KVM_CHECK_EXTENSION returned.
        value: i32,
    },
    /// Every GSI below the routing limit is allocated.
    #[error("no free GSI: every GSI below {max} is allocated")]
    GsiExhausted {
        /// The number of GSIs KVM allows (KVM_CAP_IRQ_ROUTING).
        max: u32,
    },
    /// The GSI was not allocated from this table.
    #[error("GSI {gsi} is not allocated")]
    UnknownGsi {
        /// The offending GSI.
        gsi: Gsi,
    },
    /// The table would hold more entries than KVM accepts.
    #[error("routing table of {entries} entries exceeds KVM's limit of {max}")]
    RouteCapacity {
        /// Entries the commit would send (irqchip routes included).
        entries: usize,
        /// The most KVM accepts (KVM_CAP_IRQ_ROUTING).
        max: usize,
    },
    /// KVM_SET_GSI_ROUTING failed; the table stays staged.
    #[error("KVM_SET_GSI_ROUTING with {entries} entries failed: errno {errno}")]
    SetGsiRouting {
        /// Entries sent.
        entries: usize,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// KVM_IRQFD failed (EBUSY on assign: the eventfd already has an irqfd).
    #[error("KVM_IRQFD {op} on GSI {gsi} failed: errno {errno}")]
    Irqfd {
        /// Assign or deassign.
        op: IrqfdOp,
        /// The GSI of the call.
        gsi: Gsi,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// The irqfd is attached through another eventfd than the one given.
    #[error("irqfd is attached through eventfd {attached_fd}, not {given_fd}")]
    EventFdMismatch {
        /// The fd the irqfd was attached with.
        attached_fd: RawFd,
        /// The fd passed to this call.
        given_fd: RawFd,
    },
    /// Polling, reading or creating an eventfd failed.
    #[error("eventfd operation failed: {0}")]
    EventFd(#[source] std::io::Error),
}
