//! 64-bit long-mode setup through KVM_SET_SREGS: identity page tables with
//! 2 MiB pages over 0..4 GiB (1 GiB pages fault on the nested KVM these tests
//! run on), a flat GDT with a 64-bit code segment, a TSS, and an IDT of
//! 64-bit interrupt gates.

use kvm_bindings::{kvm_segment, kvm_sregs, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};

use crate::layout::*;
use crate::memory::GuestRam;
use crate::{Error, Result};

const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PTE_PAGE_SIZE: u64 = 1 << 7;
const TWO_MIB: u64 = 2 << 20;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const CODE_SELECTOR: u16 = 0x08;
const DATA_SELECTOR: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// Writes page tables, GDT, TSS and IDT into guest RAM.
pub(crate) fn write_tables(ram: &GuestRam, handlers: &[u64]) -> Result<()> {
    ram.write_u64(PML4_ADDR, PDPT_ADDR | PTE_PRESENT | PTE_WRITE)?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        ram.write_u64(PDPT_ADDR + gib * 8, pd | PTE_PRESENT | PTE_WRITE)?;
        for i in 0..512u64 {
            let frame = (gib << 30) + i * TWO_MIB;
            ram.write_u64(pd + i * 8, frame | PTE_PRESENT | PTE_WRITE | PTE_PAGE_SIZE)?;
        }
    }
    // Null, 64-bit code, data, then a 16-byte TSS descriptor.
    ram.write_u64(GDT_ADDR, 0)?;
    ram.write_u64(GDT_ADDR + 8, 0x00AF_9B00_0000_FFFF)?;
    ram.write_u64(GDT_ADDR + 16, 0x00CF_9300_0000_FFFF)?;
    let tss_limit = 0x67u64;
    let tss_low = tss_limit
        | ((TSS_ADDR & 0xFF_FFFF) << 16)
        | (0x89u64 << 40)
        | ((TSS_ADDR >> 24 & 0xFF) << 56);
    ram.write_u64(GDT_ADDR + 24, tss_low)?;
    ram.write_u64(GDT_ADDR + 32, TSS_ADDR >> 32)?;
    for (vector, &handler) in handlers.iter().enumerate().take(256) {
        let low = (handler & 0xFFFF)
            | (u64::from(CODE_SELECTOR) << 16)
            | (0x8Eu64 << 40)
            | ((handler >> 16 & 0xFFFF) << 48);
        let entry = IDT_ADDR + vector as u64 * 16;
        ram.write_u64(entry, low)?;
        ram.write_u64(entry + 8, handler >> 32)?;
    }
    Ok(())
}

fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts a vCPU in 64-bit mode with GS based at its interrupt counters.
pub(crate) fn long_mode_sregs(vcpu: &VcpuFd, index: u8) -> Result<()> {
    let mut sregs: kvm_sregs = vcpu
        .get_sregs()
        .map_err(|e| Error::kvm("KVM_GET_SREGS", e))?;
    sregs.cs = segment(CODE_SELECTOR, 0xB, true);
    let data = segment(DATA_SELECTOR, 0x3, false);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.ss = data;
    sregs.gs = kvm_segment {
        base: counters_row(index),
        ..data
    };
    sregs.tr = kvm_segment {
        base: TSS_ADDR,
        limit: 0x67,
        selector: TSS_SELECTOR,
        type_: 0xB,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = 40 - 1;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 256 * 16 - 1;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| Error::kvm("KVM_SET_SREGS", e))
}

/// The host's supported CPUID with x2APIC advertised and the vCPU's APIC ID.
pub(crate) fn cpuid(kvm: &Kvm, index: u8) -> Result<CpuId> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| Error::kvm("KVM_GET_SUPPORTED_CPUID", e))?;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ecx |= 1 << 21; // x2APIC
                entry.ebx = (entry.ebx & 0x00FF_FFFF) | (u32::from(index) << 24);
            }
            0xB | 0x1F => entry.edx = u32::from(index),
            _ => {}
        }
    }
    Ok(cpuid)
}
