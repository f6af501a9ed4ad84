//! The MP table (Intel MultiProcessor Specification 1.4): how Linux finds
//! the vCPUs, the IOAPIC and the ISA interrupts with `acpi=off`.
//!
//! One processor entry per vCPU (APIC ID = vCPU index), an ISA bus, the
//! IOAPIC (ID = number of vCPUs), ISA IRQs 0-15 on IOAPIC pins 0-15, ExtINT
//! on LINT0 and NMI on LINT1. PCI functions need no entry: their interrupts
//! are MSI-X.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout;

const SPEC_REV: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTSTRAP: u8 = 2;
/// CPUID signature in processor entries: family 6.
const CPU_SIGNATURE: u32 = 0x600;
/// Feature flags in processor entries: FPU and APIC.
const CPU_FEATURES: u32 = 0x201;
const ISA_BUS: u8 = 0;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;
const FLOATING_LEN: u64 = 16;
const HEADER_LEN: usize = 44;
/// The table must fit in the last KiB of base memory.
const MAX_LEN: usize = 1024 - FLOATING_LEN as usize;

/// Builds the configuration table (header and entries) for `cpus` vCPUs.
pub fn table(cpus: u8) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    let ioapic_id = cpus;
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTSTRAP } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(layout::IOAPIC as u32).to_le_bytes());
    count += 1;
    for irq in 0..16u8 {
        // Flags 0: polarity and trigger conform to the bus (ISA: edge, high).
        entries.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT, 0, 0, ISA_BUS, irq]);
        entries.extend_from_slice(&[ioapic_id, irq]);
        count += 1;
    }
    // LINT0 of every local APIC: ExtINT (the PIC); LINT1: NMI.
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_EXTINT,
        0,
        0,
        ISA_BUS,
        0,
        0xff,
        0,
    ]);
    entries.extend_from_slice(&[
        ENTRY_LOCAL_INTERRUPT,
        INT_TYPE_NMI,
        0,
        0,
        ISA_BUS,
        0,
        0xff,
        1,
    ]);
    count += 2;

    let mut t = Vec::with_capacity(HEADER_LEN + entries.len());
    t.extend_from_slice(b"PCMP");
    t.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    t.push(SPEC_REV);
    t.push(0); // checksum, below
    t.extend_from_slice(b"MSIXACCL");
    t.extend_from_slice(b"REFERENCEVMM");
    t.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    t.extend_from_slice(&0u16.to_le_bytes());
    t.extend_from_slice(&count.to_le_bytes());
    t.extend_from_slice(&(layout::LAPIC as u32).to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes()); // no extended table
    t.extend_from_slice(&entries);
    t[7] = checksum(&t);
    t
}

/// The floating pointer for a configuration table at `table_addr`.
fn floating_pointer(table_addr: u32) -> [u8; FLOATING_LEN as usize] {
    let mut f = [0u8; FLOATING_LEN as usize];
    f[..4].copy_from_slice(b"_MP_");
    f[4..8].copy_from_slice(&table_addr.to_le_bytes());
    f[8] = 1; // length in 16-byte units
    f[9] = SPEC_REV;
    f[10] = checksum(&f);
    f
}

/// The byte that makes `bytes` sum to zero (the byte's own slot holds 0).
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// Writes the floating pointer and the table for `cpus` vCPUs.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), String> {
    let table = table(cpus);
    if table.len() > MAX_LEN {
        return Err(format!("MP table of {} bytes does not fit", table.len()));
    }
    let table_addr = layout::MPTABLE + FLOATING_LEN;
    mem.write_slice(
        &floating_pointer(table_addr as u32),
        GuestAddress(layout::MPTABLE),
    )
    .and_then(|()| mem.write_slice(&table, GuestAddress(table_addr)))
    .map_err(|e| format!("writing the MP table: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn table_and_pointer_checksum_to_zero_and_count_their_entries() {
        for cpus in 1..=4u8 {
            let t = table(cpus);
            assert_eq!(sum(&t), 0);
            assert_eq!(u16::from_le_bytes([t[4], t[5]]) as usize, t.len());
            let count = u16::from_le_bytes([t[34], t[35]]);
            assert_eq!(count, u16::from(cpus) + 1 + 1 + 16 + 2);
            // processors are 20 bytes, every other entry 8
            assert_eq!(t.len(), HEADER_LEN + 20 * usize::from(cpus) + 8 * 20);
            assert_eq!(t[HEADER_LEN + 3], CPU_ENABLED | CPU_BOOTSTRAP);
        }
        let f = floating_pointer(0x9fc10);
        assert_eq!(sum(&f), 0);
        assert_eq!(&f[..4], b"_MP_");
    }
}
