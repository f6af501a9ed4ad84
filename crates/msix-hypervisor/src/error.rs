//! Errors of hypervisor operations: which operation failed, with its errno.

use std::fmt;

/// The result of hypervisor operations.
pub type Result<T> = std::result::Result<T, Error>;

/// The operations of [`crate::MsixVm`], named for errors, counters and
/// fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Adding, moving or deleting a read-only memory region (memslot).
    SetMemoryRegion,
    /// Registering an ioeventfd.
    IoeventfdAssign,
    /// Unregistering an ioeventfd.
    IoeventfdDeassign,
    /// Binding an eventfd to a GSI (irqfd).
    IrqfdAssign,
    /// Unbinding an irqfd.
    IrqfdDeassign,
    /// Replacing the VM's GSI routing table.
    SetGsiRouting,
    /// Injecting one MSI directly.
    SignalMsi,
}

impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Op; 7] = [
        Op::SetMemoryRegion,
        Op::IoeventfdAssign,
        Op::IoeventfdDeassign,
        Op::IrqfdAssign,
        Op::IrqfdDeassign,
        Op::SetGsiRouting,
        Op::SignalMsi,
    ];

    /// The KVM ioctl this operation is on KVM.
    pub fn kvm_name(self) -> &'static str {
        match self {
            Op::SetMemoryRegion => "KVM_SET_USER_MEMORY_REGION",
            Op::IoeventfdAssign => "KVM_IOEVENTFD",
            Op::IoeventfdDeassign => "KVM_IOEVENTFD (deassign)",
            Op::IrqfdAssign => "KVM_IRQFD",
            Op::IrqfdDeassign => "KVM_IRQFD (deassign)",
            Op::SetGsiRouting => "KVM_SET_GSI_ROUTING",
            Op::SignalMsi => "KVM_SIGNAL_MSI",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kvm_name())
    }
}

/// A hypervisor operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{op} failed: errno {errno}")]
pub struct Error {
    /// What was attempted.
    pub op: Op,
    /// The errno the hypervisor returned (or a fault injector chose).
    pub errno: i32,
}

impl Error {
    /// An error of `op` with `errno`.
    pub fn new(op: Op, errno: i32) -> Self {
        Error { op, errno }
    }
}
