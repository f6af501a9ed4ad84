//! Guest physical memory layout of the test guest.
//!
//! Everything lives in the first 16 MiB of RAM (slot 0); the rest of the
//! 4 GiB identity map is free for device MMIO (MSI-X BARs sit at
//! 0xFE00_0000..0xFEC0_0000 in the tests).

/// Bytes of guest RAM (memslot 0 at guest physical 0).
pub const RAM_SIZE: u64 = 16 << 20;
/// The memslot number testvm uses for RAM; other users take higher ones.
pub const RAM_SLOT: u32 = 0;

pub(crate) const GDT_ADDR: u64 = 0x1000;
pub(crate) const IDT_ADDR: u64 = 0x2000;
pub(crate) const PML4_ADDR: u64 = 0x3000;
pub(crate) const PDPT_ADDR: u64 = 0x4000;
/// Four page directories (0x5000..0x9000) map 0..4 GiB with 2 MiB pages.
pub(crate) const PD_ADDR: u64 = 0x5000;
pub(crate) const TSS_ADDR: u64 = 0x9000;
pub(crate) const KERNEL_ADDR: u64 = 0x10000;
pub(crate) const KERNEL_MAX: u64 = 0x10000;
/// Per-vCPU rows (GS base of each vCPU), one entry per IDT vector in each
/// table:
/// - 256 u64 interrupt counters;
/// - 256 u64 counters of interrupts taken while the guest's "masked window"
///   flag for the vector was set and the interrupt was not already pending
///   in the local APIC when the guest's last MMIO write returned (violations);
/// - 256 window flag bytes;
/// - 256 u64 counters of interrupts taken inside the window that were
///   already pending in the local APIC when the guest's last MMIO write
///   returned (raised before the mask took effect, injected late by the host);
/// - 256 "late allowance" bytes: written by the host after each MMIO write
///   exit of a watched vector (1 when the vector was pending in the local
///   APIC then), cleared by the guest at the vector's next delivery;
/// - 256 u64 time stamp counter values: the TSC at the entry of the
///   vector's last delivery (what a latency measurement reads).
pub(crate) const COUNTERS_ADDR: u64 = 0x20000;
pub(crate) const COUNTER_ROW: u64 = 0x4000;
pub(crate) const ROW_WINDOW_COUNTS: u64 = 0x800;
pub(crate) const ROW_WINDOW_FLAGS: u64 = 0x1000;
pub(crate) const ROW_LATE_COUNTS: u64 = 0x1100;
pub(crate) const ROW_LATE_ALLOWANCE: u64 = 0x1900;
pub(crate) const ROW_IRQ_TSC: u64 = 0x2000;
/// Per-vCPU mailboxes, [`MAILBOX_SIZE`] bytes each.
pub(crate) const MAILBOX_ADDR: u64 = 0x30000;
pub(crate) const MAILBOX_SIZE: u64 = 0x100;
/// Per-vCPU stacks of [`STACK_SIZE`] bytes; vCPU c's top is `STACKS_ADDR + (c+1)*STACK_SIZE`.
pub(crate) const STACKS_ADDR: u64 = 0x40000;
pub(crate) const STACK_SIZE: u64 = 0x10000;
/// Per-vCPU program areas of [`PROGRAM_MAX`] bytes.
pub(crate) const PROGRAMS_ADDR: u64 = 0x40_0000;
/// Largest assembled program, in bytes.
pub const PROGRAM_MAX: u64 = 0x20_0000;
/// Per-vCPU result areas (one u64 per recorded value).
pub(crate) const RESULTS_ADDR: u64 = 0xC0_0000;
pub(crate) const RESULTS_SIZE: u64 = 0x10_0000;
/// Largest number of values one program can record.
pub const MAX_RESULTS: usize = (RESULTS_SIZE / 8) as usize;

/// Mailbox fields (offsets inside a vCPU's mailbox).
pub(crate) const MB_READY: u64 = 0x00; // guest: 1 once interrupts are enabled
pub(crate) const MB_CMD_SEQ: u64 = 0x08; // host: bumps to start a program
pub(crate) const MB_DONE_SEQ: u64 = 0x10; // guest: copies CMD_SEQ when the program returned
pub(crate) const MB_PROGRAM: u64 = 0x18; // host: entry address of the program

/// Most vCPUs a test guest can have.
pub const MAX_VCPUS: u8 = 4;

/// I/O ports the guest writes to talk to the host.
pub(crate) const PORT_PROGRAM_DONE: u16 = 0xF0;
pub(crate) const PORT_FAULT: u16 = 0xF1;

/// IDT vector the host uses to wake an idle vCPU (its count is not meaningful
/// to tests); device interrupts use 0x20..=0xFE.
pub const DOORBELL_VECTOR: u8 = 0xFE;
/// IDT vector of the host's sentinel ([`crate::TestVm::sentinel`]): the
/// lowest-priority vector a device can use, so a sentinel is taken only
/// after every device interrupt pending in the local APIC before it.
/// Device interrupts in tests use 0x21..=0xFD.
pub const SENTINEL_VECTOR: u8 = 0x20;
/// The APIC spurious-interrupt vector programmed in SVR.
pub const SPURIOUS_VECTOR: u8 = 0xFF;

pub(crate) fn counters_row(vcpu: u8) -> u64 {
    COUNTERS_ADDR + u64::from(vcpu) * COUNTER_ROW
}
pub(crate) fn mailbox(vcpu: u8) -> u64 {
    MAILBOX_ADDR + u64::from(vcpu) * MAILBOX_SIZE
}
pub(crate) fn stack_top(vcpu: u8) -> u64 {
    STACKS_ADDR + (u64::from(vcpu) + 1) * STACK_SIZE
}
pub(crate) fn program_area(vcpu: u8) -> u64 {
    PROGRAMS_ADDR + u64::from(vcpu) * PROGRAM_MAX
}
pub(crate) fn results_area(vcpu: u8) -> u64 {
    RESULTS_ADDR + u64::from(vcpu) * RESULTS_SIZE
}
