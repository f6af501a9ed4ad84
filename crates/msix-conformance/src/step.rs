//! What a parsed scenario says: its header and its steps, in file order.

use std::fmt;

use msix_accel::{EventKind, Policy};
use testvm::Width;

use msix_rig::rig::RigLayout;

/// Which part of a device's BARs an access targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// The MSI-X table, wherever the layout puts it.
    Table,
    /// The Pending Bit Array, wherever the layout puts it.
    Pba,
    /// BAR `B` (0..=5) from its start: bytes that are neither table nor PBA
    /// are nobody's in these guests.
    Bar(u8),
}

/// One guest MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Write (else read).
    pub write: bool,
    /// Width.
    pub width: Width,
    /// The device whose region it is.
    pub device: u8,
    /// Region.
    pub region: Region,
    /// Offset inside the region.
    pub offset: u64,
    /// Value written.
    pub value: u64,
    /// Value a read must return.
    pub expect: Option<u64>,
}

/// A comparison in an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// Exactly.
    Eq,
    /// At least.
    Ge,
    /// At most.
    Le,
}

impl Cmp {
    /// Whether `n` compares so with `count`.
    pub fn holds(self, n: u64, count: u64) -> bool {
        match self {
            Cmp::Eq => n == count,
            Cmp::Ge => n >= count,
            Cmp::Le => n <= count,
        }
    }
}

impl fmt::Display for Cmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cmp::Eq => "=",
            Cmp::Ge => ">=",
            Cmp::Le => "<=",
        })
    }
}

/// A Message Control action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsixAction {
    /// Set MSI-X Enable.
    Enable,
    /// Clear MSI-X Enable.
    Disable,
    /// Set Function Mask.
    MaskAll,
    /// Clear Function Mask.
    UnmaskAll,
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The guest performs an access on a vCPU.
    Guest {
        /// vCPU.
        vcpu: u8,
        /// The access.
        access: Access,
    },
    /// The guest programs an entry's message.
    Msg {
        /// vCPU doing it.
        vcpu: u8,
        /// Device.
        device: u8,
        /// Entry.
        entry: u16,
        /// IDT vector.
        vector: u8,
        /// Destination vCPU.
        cpu: u8,
    },
    /// The guest opens or closes its masked window for an IDT vector.
    Window {
        /// vCPU.
        vcpu: u8,
        /// IDT vector.
        vector: u8,
        /// Open (else close).
        open: bool,
    },
    /// vCPUs run their accesses `repeat` times, all at once.
    Concurrent {
        /// Repetitions.
        repeat: u64,
        /// Each vCPU's steps (guest accesses and windows only).
        steps: Vec<(u32, Step)>,
    },
    /// A device's source raises an entry.
    Fire {
        /// Device.
        device: u8,
        /// Entry.
        entry: u16,
        /// Times.
        count: u64,
    },
    /// A storm starts on entries of a device.
    StormStart {
        /// Device.
        device: u8,
        /// Entries.
        entries: Vec<u16>,
    },
    /// The storm stops.
    StormStop,
    /// A Message Control write.
    Msix {
        /// Device.
        device: u8,
        /// What is written.
        action: MsixAction,
    },
    /// Interrupt count expectation.
    ExpectIrq {
        /// vCPU, or all.
        vcpu: Option<u8>,
        /// IDT vector.
        vector: u8,
        /// Comparison.
        cmp: Cmp,
        /// Count.
        count: u64,
    },
    /// Deliveries inside the masked window.
    ExpectWindow {
        /// IDT vector.
        vector: u8,
        /// Count (all vCPUs).
        count: u64,
    },
    /// Exits since the previous `expect exits`.
    ExpectExits {
        /// Comparison.
        cmp: Cmp,
        /// Count.
        count: u64,
    },
    /// MMIO accesses nobody claimed since the previous `expect unclaimed`.
    ExpectUnclaimed {
        /// Comparison.
        cmp: Cmp,
        /// Count.
        count: u64,
    },
    /// PBA bit expectation.
    ExpectPending {
        /// Device.
        device: u8,
        /// Entry.
        entry: u16,
        /// Expected bit.
        pending: bool,
    },
    /// The accelerator reported an event of this kind: consumes every
    /// matching event reported so far.
    ExpectEvent {
        /// Device.
        device: u8,
        /// Kind.
        kind: EventKind,
        /// The vector it must be about, if any.
        entry: Option<u16>,
    },
}

/// A parsed scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// File name.
    pub path: String,
    /// Table size of each device.
    pub vectors: u16,
    /// vCPUs.
    pub vcpus: u8,
    /// Devices in the VM.
    pub devices: u8,
    /// Whether KVM runs with KVM_CAP_X2APIC_API.
    pub x2apic_api: bool,
    /// Where every device's table and PBA sit; None: the original layout.
    pub layout: Option<RigLayout>,
    /// Policies the file runs under (its `policy`, or its `policies`).
    pub policies: Vec<Policy>,
    /// Whether the source can mask.
    pub maskable: bool,
    /// Steps with their line numbers.
    pub steps: Vec<(u32, Step)>,
}
