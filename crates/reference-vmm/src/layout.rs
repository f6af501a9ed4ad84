//! The guest-physical and port map of the machine.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries), then the IDT pointer target
//! 0x0000_7000  zero page (struct boot_params)
//! 0x0000_8ff0  boot stack top
//! 0x0000_9000  PML4, PDPT, PD: identity map of the first 1 GiB (2 MiB pages)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  MP floating pointer and configuration table (EBDA)
//! 0x0010_0000  bzImage protected-mode kernel (code32_start)
//! ...          RAM up to --memory; the initramfs at its top
//! 0xc000_0000  PCI hole: BARs of the assigned functions, allocated upward
//! 0xfec0_0000  IOAPIC        0xfee0_0000  local APICs
//! ```
//!
//! Ports: 0x3f8-0x3ff 8250 UART (IRQ 4), 0x60 and 0x64 i8042, 0x70-0x71
//! CMOS (reads 0), 0xcf8-0xcff PCI configuration mechanism 1, 0x4f0 the
//! statistics port, I/O BARs from 0xc000.

/// The GDT the BSP starts with.
pub const GDT: u64 = 0x500;
/// The (empty) IDT the BSP starts with.
pub const IDT: u64 = 0x520;
/// `struct boot_params`, passed to the kernel in RSI.
pub const ZERO_PAGE: u64 = 0x7000;
/// The BSP's initial stack pointer.
pub const BOOT_STACK: u64 = 0x8ff0;
/// The page-map level 4 of the initial identity map.
pub const PML4: u64 = 0x9000;
/// The page-directory-pointer table of the initial identity map.
pub const PDPT: u64 = 0xa000;
/// The page directory of the initial identity map (512 x 2 MiB).
pub const PD: u64 = 0xb000;
/// The kernel command line.
pub const CMDLINE: u64 = 0x20000;
/// Longest command line the VMM passes (the kernel's own limit is 2048 on
/// x86 before 6.x and COMMAND_LINE_SIZE now; 4096 fits both layouts).
pub const CMDLINE_MAX: usize = 4096;
/// Where the MP floating pointer and table go: the start of the last KiB
/// of base memory, which Linux scans.
pub const MPTABLE: u64 = 0x9fc00;
/// End of base memory reported to the guest.
pub const EBDA_START: u64 = 0x9fc00;
/// Start of high memory.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the PCI hole: RAM ends below it, BARs are allocated in it.
pub const PCI_HOLE_START: u64 = 0xc000_0000;
/// End of the BAR window (the IOAPIC and local APICs are above).
pub const PCI_HOLE_END: u64 = 0xfec0_0000;
/// The IOAPIC's MMIO base.
pub const IOAPIC: u64 = 0xfec0_0000;
/// The local APICs' MMIO base.
pub const LAPIC: u64 = 0xfee0_0000;
/// First port of I/O BARs.
pub const PCI_IO_START: u64 = 0xc000;
/// End of the I/O port space.
pub const PCI_IO_END: u64 = 0x1_0000;
/// KVM's TSS pages (three, below the IOAPIC: nothing else may be there).
pub const KVM_TSS: usize = 0xfffb_d000;

/// 8250 UART base port.
pub const SERIAL_PORT: u16 = 0x3f8;
/// 8250 UART interrupt (ISA IRQ, IOAPIC pin and GSI).
pub const SERIAL_IRQ: u32 = 4;
/// i8042 data port.
pub const I8042_DATA: u16 = 0x60;
/// i8042 command/status port.
pub const I8042_COMMAND: u16 = 0x64;
/// CMOS index and data ports.
pub const CMOS: u16 = 0x70;
/// PCI configuration mechanism 1: address register.
pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
/// PCI configuration mechanism 1: data window (4 bytes).
pub const PCI_CONFIG_DATA: u16 = 0xcfc;
/// A byte written here prints the accelerators' statistics.
pub const STATS_PORT: u16 = 0x4f0;

/// KVM memslot of guest RAM.
pub const RAM_SLOT: u32 = 0;
/// First KVM memslot of mmapped BARs (6 per assigned function).
pub const BAR_SLOT_BASE: u32 = 8;
/// First KVM memslot of the accelerators' table shadows (1 per function).
pub const TABLE_SLOT_BASE: u32 = 100;
