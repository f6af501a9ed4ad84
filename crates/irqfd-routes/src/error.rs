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
    /// The hypervisor does not route GSIs (KVM_CAP_IRQ_ROUTING is 0).
    #[error("the hypervisor does not support GSI routing (KVM_CAP_IRQ_ROUTING = 0)")]
    NoIrqRouting,
    /// Every GSI below the routing limit is allocated.
    #[error("no free GSI: every GSI below {max} is allocated")]
    GsiExhausted {
        /// The number of GSIs the hypervisor allows (KVM_CAP_IRQ_ROUTING).
        max: u32,
    },
    /// The GSI was not allocated from this table.
    #[error("GSI {gsi} is not allocated")]
    UnknownGsi {
        /// The offending GSI.
        gsi: Gsi,
    },
    /// The table would hold more entries than the hypervisor accepts.
    #[error("routing table of {entries} entries exceeds the limit of {max}")]
    RouteCapacity {
        /// Entries the commit would send (irqchip routes included).
        entries: usize,
        /// The most the hypervisor accepts (KVM_CAP_IRQ_ROUTING).
        max: usize,
    },
    /// KVM_SET_GSI_ROUTING failed even without the routes staged since the
    /// last commit: a route the VMM (or the irqchip) owns is refused. The
    /// table stays staged and dirty.
    #[error("KVM_SET_GSI_ROUTING with {entries} entries failed: errno {errno}")]
    SetGsiRouting {
        /// Entries sent.
        entries: usize,
        /// The errno the hypervisor returned.
        errno: i32,
    },
    /// KVM_IRQFD failed (EBUSY on assign: the eventfd already has an irqfd).
    #[error("KVM_IRQFD {op} on GSI {gsi} failed: errno {errno}")]
    Irqfd {
        /// Assign or deassign.
        op: IrqfdOp,
        /// The GSI of the call.
        gsi: Gsi,
        /// The errno the hypervisor returned.
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

impl Error {
    /// The errno the hypervisor or the kernel returned, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::SetGsiRouting { errno, .. } | Error::Irqfd { errno, .. } => Some(*errno),
            Error::EventFd(e) => e.raw_os_error(),
            _ => None,
        }
    }
}
