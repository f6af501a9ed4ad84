//! vCPUs: their initial state (CPUID, MTRRs, FPU, local APIC LINT pins,
//! and for the BSP the 64-bit registers of the boot protocol) and the
//! run loop that sends port and MMIO exits to the [`Bus`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use crate::boot::{self, selector};
use crate::bus::Bus;
use crate::exit::ExitRequest;
use crate::layout;

/// MSR_MTRRdefType: MTRRs on, default type write-back. Without it Linux
/// would treat RAM as uncacheable wherever the hypervisor honours MTRRs.
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE_WRITE_BACK: u64 = (1 << 11) | 6;
/// CPUID.1:ECX bit 31: running under a hypervisor.
const CPUID_HYPERVISOR: u32 = 1 << 31;
/// Local APIC register offsets of LVT LINT0 and LINT1.
const APIC_LVT_LINT0: usize = 0x350;
const APIC_LVT_LINT1: usize = 0x360;
const APIC_DELIVERY_EXTINT: u32 = 7;
const APIC_DELIVERY_NMI: u32 = 4;
const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Sets vCPU `id` up. The application processors only get CPUID, MSRs,
/// FPU and LAPIC: KVM holds them in wait-for-SIPI until Linux starts them.
pub fn configure(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    id: u8,
    entry: Option<boot::Entry>,
) -> Result<(), String> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
    for leaf in cpuid.as_mut_slice() {
        match leaf.function {
            1 => {
                // Initial APIC ID in EBX[31:24].
                leaf.ebx = (leaf.ebx & 0x00ff_ffff) | (u32::from(id) << 24);
                leaf.ecx |= CPUID_HYPERVISOR;
            }
            // x2APIC ID of the extended topology leaves.
            0xb | 0x1f => leaf.edx = u32::from(id),
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;

    let msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_MTRR_DEF_TYPE,
        data: MTRR_ENABLE_WRITE_BACK,
        ..Default::default()
    }])
    .map_err(|e| format!("MSR list: {e:?}"))?;
    vcpu.set_msrs(&msrs)
        .map_err(|e| format!("KVM_SET_MSRS: {e}"))?;

    vcpu.set_fpu(&kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })
    .map_err(|e| format!("KVM_SET_FPU: {e}"))?;

    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
    set_lvt_delivery(&mut lapic.regs, APIC_LVT_LINT0, APIC_DELIVERY_EXTINT);
    set_lvt_delivery(&mut lapic.regs, APIC_LVT_LINT1, APIC_DELIVERY_NMI);
    vcpu.set_lapic(&lapic)
        .map_err(|e| format!("KVM_SET_LAPIC: {e}"))?;

    if let Some(entry) = entry {
        set_boot_registers(vcpu, entry)?;
    }
    Ok(())
}

fn set_lvt_delivery(regs: &mut [std::os::raw::c_char], offset: usize, mode: u32) {
    let Some(reg) = regs.get_mut(offset..offset + 4) else {
        return;
    };
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(reg.iter()) {
        *b = *r as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (r, b) in reg.iter_mut().zip(value.to_le_bytes()) {
        *r = b as std::os::raw::c_char;
    }
}

/// The 64-bit boot protocol's entry state: long mode on the identity map,
/// flat segments from the GDT, RSI pointing at the zero page.
fn set_boot_registers(vcpu: &VcpuFd, entry: boot::Entry) -> Result<(), String> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let segment = |sel: u16, type_: u8, s: u8, db: u8, l: u8| kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: sel,
        type_,
        present: 1,
        dpl: 0,
        db,
        s,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    sregs.cs = segment(selector::CODE, 0xb, 1, 0, 1);
    let data = segment(selector::DATA, 0x3, 1, 1, 0);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(selector::TSS, 0xb, 0, 0, 0);
    sregs.gdt.base = layout::GDT;
    sregs.gdt.limit = (boot::GDT_ENTRIES.len() * 8 - 1) as u16;
    sregs.idt.base = layout::IDT;
    sregs.idt.limit = 7;
    sregs.cr3 = layout::PML4;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    vcpu.set_regs(&kvm_regs {
        rflags: 0x2,
        rip: entry.rip,
        rsp: layout::BOOT_STACK,
        rbp: layout::BOOT_STACK,
        rsi: layout::ZERO_PAGE,
        ..Default::default()
    })
    .map_err(|e| format!("KVM_SET_REGS: {e}"))
}

/// Runs vCPU `id` until the guest resets or powers off, a fatal exit, or
/// `stop` (the VMM kicks the thread with a signal after setting it).
pub fn run(id: u8, mut vcpu: VcpuFd, bus: Arc<Bus>, exit: Arc<ExitRequest>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        match vcpu.run() {
            Ok(VcpuExit::IoIn(port, data)) => bus.pio_read(port, data),
            Ok(VcpuExit::IoOut(port, data)) => bus.pio_write(port, data),
            Ok(VcpuExit::MmioRead(addr, data)) => bus.mmio_read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => bus.mmio_write(addr, data),
            Ok(VcpuExit::Shutdown) => {
                exit.request(format!("vCPU {id}: shutdown (triple fault or reset)"));
                return;
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => {
                exit.request(format!("vCPU {id}: system event {kind}"));
                return;
            }
            Ok(VcpuExit::Hlt) => {
                exit.request(format!("vCPU {id}: halted"));
                return;
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => {
                exit.request(format!("vCPU {id}: unhandled exit {other:?}"));
                return;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => {
                exit.request(format!("vCPU {id}: KVM_RUN failed: {e}"));
                return;
            }
        }
    }
}
