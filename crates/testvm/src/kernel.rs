//! The guest kernel: entry code, the idle/command loop and interrupt handlers,
//! assembled with iced-x86's code assembler.
//!
//! Each vCPU enters `entry` in 64-bit mode with `rdi` = its index, `rsp` = its
//! stack and GS base = its row of interrupt counters. It enables x2APIC, marks
//! its mailbox ready, and then loops: when the host has bumped `CMD_SEQ` it
//! calls the program at `PROGRAM`, copies `CMD_SEQ` to `DONE_SEQ` and reports
//! with an OUT; otherwise it halts with interrupts enabled (`cli; check; sti;
//! hlt` so a doorbell sent after the check still wakes it).
//!
//! Every IDT vector 0x20..=0xFF records its entry TSC, counts into
//! `gs:[vector*8]` (and, while the
//! program has the vector's masked-window flag set, into the window or the
//! late counter too, see `layout.rs`) and EOIs through the x2APIC EOI MSR.
//! Exceptions 0..0x1F report their vector on the fault port and stop the vCPU.

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use crate::layout::*;
use crate::{Error, Result};

const MSR_APIC_BASE: u32 = 0x1B;
const MSR_X2APIC_TPR: u32 = 0x808;
const MSR_X2APIC_EOI: u32 = 0x80B;
const MSR_X2APIC_SVR: u32 = 0x80F;
const APIC_BASE_ENABLE_X2APIC: i32 = (1 << 10) | (1 << 11);

pub(crate) struct Kernel {
    pub(crate) code: Vec<u8>,
    pub(crate) entry: u64,
    /// Handler address for each IDT vector.
    pub(crate) handlers: Vec<u64>,
}

fn asm_err(e: IcedError) -> Error {
    Error::Assemble(e.to_string())
}

pub(crate) fn assemble() -> Result<Kernel> {
    let kernel = build().map_err(asm_err)?;
    if kernel.code.len() as u64 > KERNEL_MAX {
        return Err(Error::Assemble("guest kernel larger than its area".into()));
    }
    Ok(kernel)
}

fn build() -> std::result::Result<Kernel, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut entry = a.create_label();
    let mut idle = a.create_label();
    let mut run = a.create_label();
    let mut count_and_eoi = a.create_label();
    let mut stubs: Vec<CodeLabel> = (0..256).map(|_| a.create_label()).collect();

    a.set_label(&mut entry)?;
    a.mov(ecx, MSR_APIC_BASE)?;
    a.rdmsr()?;
    a.or(eax, APIC_BASE_ENABLE_X2APIC)?;
    a.wrmsr()?;
    a.mov(ecx, MSR_X2APIC_SVR)?;
    a.mov(eax, 0x100u32 | u32::from(SPURIOUS_VECTOR))?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    a.mov(ecx, MSR_X2APIC_TPR)?;
    a.xor(eax, eax)?;
    a.wrmsr()?;
    // rbx = this vCPU's mailbox.
    a.mov(rbx, MAILBOX_ADDR)?;
    a.mov(rax, rdi)?;
    a.shl(rax, MAILBOX_SIZE.trailing_zeros())?;
    a.add(rbx, rax)?;
    a.mov(qword_ptr(rbx + MB_READY as i32), 1)?;

    a.set_label(&mut idle)?;
    a.cli()?;
    a.mov(rax, qword_ptr(rbx + MB_CMD_SEQ as i32))?;
    a.cmp(rax, qword_ptr(rbx + MB_DONE_SEQ as i32))?;
    a.jne(run)?;
    a.sti()?;
    a.hlt()?;
    a.jmp(idle)?;

    a.set_label(&mut run)?;
    a.sti()?;
    a.push(rbx)?;
    a.push(rax)?;
    a.mov(rax, qword_ptr(rbx + MB_PROGRAM as i32))?;
    a.call(rax)?;
    a.pop(rax)?;
    a.pop(rbx)?;
    a.mov(qword_ptr(rbx + MB_DONE_SEQ as i32), rax)?;
    a.out(PORT_PROGRAM_DONE as u32, al)?;
    a.jmp(idle)?;

    // Exceptions: report the vector and stop here for good.
    for (vector, stub) in stubs.iter_mut().enumerate().take(0x20) {
        a.set_label(stub)?;
        a.cli()?;
        a.mov(eax, vector as u32)?;
        a.out(PORT_FAULT as u32, eax)?;
        let mut stuck = a.create_label();
        a.set_label(&mut stuck)?;
        a.hlt()?;
        a.jmp(stuck)?;
    }
    // External interrupts: count, EOI, return.
    for (vector, stub) in stubs.iter_mut().enumerate().skip(0x20) {
        a.set_label(stub)?;
        a.push(rax)?;
        a.mov(eax, vector as u32)?;
        a.jmp(count_and_eoi)?;
    }
    a.set_label(&mut count_and_eoi)?;
    let mut outside_window = a.create_label();
    let mut violation = a.create_label();
    a.push(rcx)?;
    a.push(rdx)?;
    // The delivery's time first, as close to the entry as the stub allows.
    a.mov(rcx, rax)?;
    a.rdtsc()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.mov(qword_ptr(rcx * 8 + ROW_IRQ_TSC as i32).gs(), rax)?;
    a.mov(rax, rcx)?;
    a.inc(qword_ptr(rax * 8).gs())?;
    a.cmp(byte_ptr(rax + ROW_WINDOW_FLAGS as i32).gs(), 0)?;
    a.je(outside_window)?;
    // Inside the masked window: an interrupt the local APIC already held
    // when the mask write returned was raised before the mask took effect
    // (the host injected it late); anything else is a violation.
    a.cmp(byte_ptr(rax + ROW_LATE_ALLOWANCE as i32).gs(), 0)?;
    a.je(violation)?;
    a.inc(qword_ptr(rax * 8 + ROW_LATE_COUNTS as i32).gs())?;
    a.jmp(outside_window)?;
    a.set_label(&mut violation)?;
    a.inc(qword_ptr(rax * 8 + ROW_WINDOW_COUNTS as i32).gs())?;
    a.set_label(&mut outside_window)?;
    // The first delivery after the mask write is the one the allowance was
    // for, wherever it landed.
    a.mov(byte_ptr(rax + ROW_LATE_ALLOWANCE as i32).gs(), 0)?;
    a.mov(ecx, MSR_X2APIC_EOI)?;
    a.xor(eax, eax)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    a.pop(rdx)?;
    a.pop(rcx)?;
    a.pop(rax)?;
    a.iretq()?;

    let result = a.assemble_options(
        KERNEL_ADDR,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    let entry_ip = result.label_ip(&entry)?;
    let handlers = stubs
        .iter()
        .map(|s| result.label_ip(s))
        .collect::<std::result::Result<Vec<u64>, IcedError>>()?;
    Ok(Kernel {
        code: result.inner.code_buffer,
        entry: entry_ip,
        handlers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_assembles_with_a_handler_per_vector() {
        let k = assemble().unwrap();
        assert_eq!(k.handlers.len(), 256);
        assert_eq!(k.entry, KERNEL_ADDR);
        assert!(k
            .handlers
            .iter()
            .all(|&h| h > KERNEL_ADDR && h < KERNEL_ADDR + KERNEL_MAX));
    }
}
