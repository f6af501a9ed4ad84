//! Register layout of the MSI-X capability and of one MSI-X table entry
//! (PCI Local Bus 3.0 section 6.8.2, PCIe Base "MSI-X Capability and Table Structure").

/// Capability ID of MSI-X in the PCI capability list.
pub const CAPABILITY_ID: u8 = 0x11;
/// Length in bytes of the MSI-X capability structure in configuration space.
pub const CAPABILITY_LEN: u64 = 12;
/// Offset of the Next Pointer byte within the capability.
pub const CAPABILITY_NEXT_POINTER_OFFSET: u64 = 1;
/// Offset of the 16-bit Message Control register within the capability.
pub const CAPABILITY_MESSAGE_CONTROL_OFFSET: u64 = 2;
/// Offset of the Table Offset/Table BIR dword within the capability.
pub const CAPABILITY_TABLE_OFFSET: u64 = 4;
/// Offset of the PBA Offset/PBA BIR dword within the capability.
pub const CAPABILITY_PBA_OFFSET: u64 = 8;

/// Message Control bits 10:0: Table Size, encoded as N - 1 (read-only).
pub const MESSAGE_CONTROL_TABLE_SIZE_MASK: u16 = 0x07ff;
/// Message Control bits 13:11: reserved, read-only zero.
pub const MESSAGE_CONTROL_RESERVED_MASK: u16 = 0x3800;
/// Message Control bit 14: Function Mask (read-write).
pub const MESSAGE_CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Message Control bit 15: MSI-X Enable (read-write).
pub const MESSAGE_CONTROL_ENABLE: u16 = 1 << 15;
/// The Message Control bits software can change.
pub const MESSAGE_CONTROL_WRITABLE_MASK: u16 =
    MESSAGE_CONTROL_FUNCTION_MASK | MESSAGE_CONTROL_ENABLE;

/// Largest number of MSI-X table entries a function can have (Table Size is 11 bits, N - 1).
pub const MAX_TABLE_SIZE: u16 = 2048;
/// Size in bytes of one MSI-X table entry.
pub const TABLE_ENTRY_SIZE: u64 = 16;
/// Size in bytes of one Pending Bit Array qword (64 vectors).
pub const PBA_QWORD_SIZE: u64 = 8;

/// Offset within a table entry of the Message Address (low dword).
pub const ENTRY_ADDRESS_LO_OFFSET: u64 = 0;
/// Offset within a table entry of the Message Upper Address.
pub const ENTRY_ADDRESS_HI_OFFSET: u64 = 4;
/// Offset within a table entry of the Message Data.
pub const ENTRY_DATA_OFFSET: u64 = 8;
/// Offset within a table entry of the Vector Control dword.
pub const ENTRY_VECTOR_CONTROL_OFFSET: u64 = 12;

/// Message Address bits 1:0: read-only zero (the address is dword aligned).
pub const ADDRESS_LO_RESERVED_MASK: u32 = 0x3;
/// Vector Control bit 0: the per-vector Mask bit.
pub const VECTOR_CONTROL_MASK_BIT: u32 = 1;
