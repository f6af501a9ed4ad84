//! Errors of the test guest.

/// The result of test-guest operations.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong running a test guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// /dev/kvm is missing or cannot be opened.
    #[error("cannot open /dev/kvm (errno {errno}): is KVM available and accessible?")]
    NoKvm {
        /// The errno of the open.
        errno: i32,
    },
    /// A KVM ioctl failed.
    #[error("{op} failed: errno {errno}")]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// Mapping guest RAM failed.
    #[error("guest RAM mapping failed: errno {0}")]
    Memory(i32),
    /// An access outside guest RAM.
    #[error("guest physical address {gpa:#x} is outside RAM")]
    OutOfRam {
        /// The address.
        gpa: u64,
    },
    /// Assembling guest code failed.
    #[error("assembling guest code failed: {0}")]
    Assemble(String),
    /// A vCPU count outside 1..=4.
    #[error("{requested} vCPUs requested: a test guest has 1..={max}")]
    VcpuCount {
        /// The requested count.
        requested: u8,
        /// The maximum.
        max: u8,
    },
    /// A vCPU index the guest does not have.
    #[error("no vCPU {vcpu}")]
    NoSuchVcpu {
        /// The index.
        vcpu: u8,
    },
    /// A program is still running on that vCPU.
    #[error("vCPU {vcpu} is still running a program")]
    VcpuBusy {
        /// The index.
        vcpu: u8,
    },
    /// The assembled program does not fit its area.
    #[error("program of {bytes} bytes exceeds the program area")]
    ProgramTooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The program records more values than the results area holds.
    #[error("program records {count} values, more than the results area holds")]
    TooManyResults {
        /// Its result count.
        count: usize,
    },
    /// The watchdog fired: the guest made no progress for a whole
    /// watchdog period.
    #[error(
        "watchdog: vCPU {vcpu} did not {what}: no progress in {quiet_ms} ms ({waited_ms} ms waited in all); the vCPU was {doing}"
    )]
    Watchdog {
        /// The vCPU waited for.
        vcpu: u8,
        /// What it should have done.
        what: &'static str,
        /// How long we waited in all.
        waited_ms: u64,
        /// How long nothing moved (at least the watchdog period).
        quiet_ms: u64,
        /// Where the vCPU was: in the guest or in the host's handler of
        /// its last exit (kind and address), and its exit and program
        /// counts.
        doing: String,
    },
    /// The guest took an exception.
    #[error("vCPU {vcpu} took exception {vector}")]
    GuestFault {
        /// The vCPU.
        vcpu: u8,
        /// The exception vector.
        vector: u32,
    },
    /// The vCPU stopped for a reason the test guest does not expect.
    #[error("vCPU {vcpu} stopped: {reason}")]
    VcpuStopped {
        /// The vCPU.
        vcpu: u8,
        /// What happened.
        reason: String,
    },
}

impl Error {
    pub(crate) fn kvm(op: &'static str, e: kvm_ioctls::Error) -> Self {
        Error::Kvm {
            op,
            errno: e.errno(),
        }
    }
}
