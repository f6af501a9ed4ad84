//! Guest programs: sequences of MMIO accesses, timestamps and loops that a
//! vCPU runs, assembled to x86-64 with iced-x86.
//!
//! A program is built on the host, assembled into the vCPU's program area and
//! called by the guest kernel. Every read, and every timestamp, records its
//! value in a result slot the host reads back after the program returned (in
//! a loop, the last iteration's value).

use iced_x86::code_asm::*;

use crate::layout::{MAX_RESULTS, ROW_WINDOW_FLAGS};
use crate::{Error, Result};

/// Width of a guest memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 1 byte.
    W8,
    /// 2 bytes.
    W16,
    /// 4 bytes.
    W32,
    /// 8 bytes.
    W64,
}

impl Width {
    /// Bytes of the access.
    pub fn bytes(self) -> usize {
        match self {
            Width::W8 => 1,
            Width::W16 => 2,
            Width::W32 => 4,
            Width::W64 => 8,
        }
    }

    /// The width of an access of `bytes` bytes, if the guest can make one.
    pub fn from_bytes(bytes: usize) -> Option<Width> {
        match bytes {
            1 => Some(Width::W8),
            2 => Some(Width::W16),
            4 => Some(Width::W32),
            8 => Some(Width::W64),
            _ => None,
        }
    }
}

/// Index of a recorded value in a program's results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResultSlot(pub usize);

#[derive(Clone, Debug)]
enum Op {
    Read {
        width: Width,
        addr: u64,
        slot: usize,
    },
    Write {
        width: Width,
        addr: u64,
        value: u64,
    },
    Timestamp {
        slot: usize,
    },
    Spin {
        iterations: u64,
    },
    Window {
        vector: u8,
        open: bool,
    },
    WaitIrq {
        vector: u8,
        count: u64,
    },
    PollUntil {
        width: Width,
        addr: u64,
        mask: u64,
        value: u64,
    },
    Repeat {
        count: u64,
        body: Vec<Op>,
    },
}

/// A guest program under construction.
///
/// ```
/// use testvm::{Program, Width};
/// let mut p = Program::new();
/// let t0 = p.timestamp();
/// p.repeat(100, |p| {
///     p.write(Width::W32, 0xFE00_000C, 1);
///     p.read(Width::W32, 0xFE00_0000);
///     p.write(Width::W32, 0xFE00_000C, 0);
/// });
/// let t1 = p.timestamp();
/// assert_ne!(t0, t1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Program {
    ops: Vec<Op>,
    slots: usize,
}

impl Program {
    /// An empty program.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self) -> usize {
        let s = self.slots;
        self.slots += 1;
        s
    }

    /// Number of result slots the program records.
    pub fn result_count(&self) -> usize {
        self.slots
    }

    /// The guest reads `width` at guest physical `addr`; the value is recorded.
    pub fn read(&mut self, width: Width, addr: u64) -> ResultSlot {
        let slot = self.slot();
        self.ops.push(Op::Read { width, addr, slot });
        ResultSlot(slot)
    }

    /// The guest writes the low `width` bytes of `value` at guest physical `addr`.
    pub fn write(&mut self, width: Width, addr: u64, value: u64) -> &mut Self {
        self.ops.push(Op::Write { width, addr, value });
        self
    }

    /// The guest records its time stamp counter.
    pub fn timestamp(&mut self) -> ResultSlot {
        let slot = self.slot();
        self.ops.push(Op::Timestamp { slot });
        ResultSlot(slot)
    }

    /// The guest spins `iterations` PAUSE loops (interrupts stay enabled).
    pub fn spin(&mut self, iterations: u64) -> &mut Self {
        self.ops.push(Op::Spin { iterations });
        self
    }

    /// Opens (or closes) this vCPU's "masked window" for IDT `vector`:
    /// interrupts on `vector` taken while it is open are also counted by
    /// [`crate::TestVm::window_count`]. A guest that believes the vector is
    /// masked opens the window after its mask write and flush read, and
    /// closes it just before unmasking: any count is a delivery while masked.
    pub fn masked_window(&mut self, vector: u8, open: bool) -> &mut Self {
        self.ops.push(Op::Window { vector, open });
        self
    }

    /// The guest spins (PAUSE, interrupts enabled) until it has taken IDT
    /// `vector` at least `count` times in all on this vCPU: a wait for an
    /// interrupt that holds however late the host injects it. It makes no
    /// exit while it waits, so one that never comes fails the host's
    /// watchdog, which names the vCPU as in the guest.
    pub fn wait_irq(&mut self, vector: u8, count: u64) -> &mut Self {
        self.ops.push(Op::WaitIrq { vector, count });
        self
    }

    /// The guest reads `width` at `addr` until the value read, masked
    /// with `mask`, equals `value` (PAUSE between reads). Each read is an
    /// access like [`Program::read`] (an exit where the host traps it);
    /// nothing is recorded. A value that never comes fails the host's
    /// watchdog when the reads make no exits, and runs until it does
    /// otherwise.
    pub fn poll_until(&mut self, width: Width, addr: u64, mask: u64, value: u64) -> &mut Self {
        self.ops.push(Op::PollUntil {
            width,
            addr,
            mask,
            value,
        });
        self
    }

    /// The guest runs what `body` builds `count` times.
    pub fn repeat(&mut self, count: u64, body: impl FnOnce(&mut Program)) -> &mut Self {
        let mut inner = Program {
            ops: Vec::new(),
            slots: self.slots,
        };
        body(&mut inner);
        self.slots = inner.slots;
        self.ops.push(Op::Repeat {
            count,
            body: inner.ops,
        });
        self
    }

    /// Assembles the program to run at guest address `ip`, recording results
    /// at guest address `results`.
    pub(crate) fn assemble(&self, ip: u64, results: u64) -> Result<Vec<u8>> {
        if self.slots > MAX_RESULTS {
            return Err(Error::TooManyResults { count: self.slots });
        }
        let mut a = CodeAssembler::new(64).map_err(asm_err)?;
        emit(&mut a, &self.ops, results).map_err(asm_err)?;
        a.ret().map_err(asm_err)?;
        a.assemble(ip).map_err(asm_err)
    }
}

fn asm_err(e: IcedError) -> Error {
    Error::Assemble(e.to_string())
}

fn store_result(
    a: &mut CodeAssembler,
    results: u64,
    slot: usize,
    value: AsmRegister64,
) -> std::result::Result<(), IcedError> {
    a.mov(rdx, results + 8 * slot as u64)?;
    a.mov(qword_ptr(rdx), value)
}

fn emit(a: &mut CodeAssembler, ops: &[Op], results: u64) -> std::result::Result<(), IcedError> {
    for op in ops {
        match *op {
            Op::Read { width, addr, slot } => {
                a.mov(rax, addr)?;
                match width {
                    Width::W8 => a.movzx(ecx, byte_ptr(rax))?,
                    Width::W16 => a.movzx(ecx, word_ptr(rax))?,
                    Width::W32 => a.mov(ecx, dword_ptr(rax))?,
                    Width::W64 => a.mov(rcx, qword_ptr(rax))?,
                }
                store_result(a, results, slot, rcx)?;
            }
            Op::Write { width, addr, value } => {
                a.mov(rax, addr)?;
                a.mov(rcx, value)?;
                match width {
                    Width::W8 => a.mov(byte_ptr(rax), cl)?,
                    Width::W16 => a.mov(word_ptr(rax), cx)?,
                    Width::W32 => a.mov(dword_ptr(rax), ecx)?,
                    Width::W64 => a.mov(qword_ptr(rax), rcx)?,
                }
            }
            Op::Timestamp { slot } => {
                a.lfence()?;
                a.rdtsc()?;
                a.shl(rdx, 32)?;
                a.or(rax, rdx)?;
                store_result(a, results, slot, rax)?;
            }
            Op::Spin { iterations } => {
                if iterations > 0 {
                    let mut top = a.create_label();
                    a.mov(rcx, iterations)?;
                    a.set_label(&mut top)?;
                    a.pause()?;
                    a.dec(rcx)?;
                    a.jnz(top)?;
                }
            }
            Op::Window { vector, open } => {
                let flag = ROW_WINDOW_FLAGS as i32 + i32::from(vector);
                a.mov(byte_ptr(flag).gs(), u32::from(open))?;
            }
            Op::WaitIrq { vector, count } => {
                let mut top = a.create_label();
                let mut done = a.create_label();
                a.mov(rcx, count)?;
                a.set_label(&mut top)?;
                a.cmp(qword_ptr(i32::from(vector) * 8).gs(), rcx)?;
                a.jae(done)?;
                a.pause()?;
                a.jmp(top)?;
                a.set_label(&mut done)?;
            }
            Op::PollUntil {
                width,
                addr,
                mask,
                value,
            } => {
                let mut top = a.create_label();
                let mut done = a.create_label();
                a.mov(rax, addr)?;
                a.set_label(&mut top)?;
                match width {
                    Width::W8 => a.movzx(ecx, byte_ptr(rax))?,
                    Width::W16 => a.movzx(ecx, word_ptr(rax))?,
                    Width::W32 => a.mov(ecx, dword_ptr(rax))?,
                    Width::W64 => a.mov(rcx, qword_ptr(rax))?,
                }
                a.mov(rdx, mask)?;
                a.and(rcx, rdx)?;
                a.mov(rdx, value)?;
                a.cmp(rcx, rdx)?;
                a.je(done)?;
                a.pause()?;
                a.jmp(top)?;
                a.set_label(&mut done)?;
            }
            Op::Repeat { count, ref body } => {
                if count > 0 {
                    // r12 counts; saved around the loop so repeats nest.
                    let mut top = a.create_label();
                    a.push(r12)?;
                    a.mov(r12, count)?;
                    a.set_label(&mut top)?;
                    emit(a, body, results)?;
                    a.dec(r12)?;
                    a.jnz(top)?;
                    a.pop(r12)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_numbered_in_program_order_across_repeats() {
        let mut p = Program::new();
        let a = p.read(Width::W32, 0x1000);
        let mut inner = None;
        p.repeat(3, |p| inner = Some(p.read(Width::W8, 0x2000)));
        let c = p.timestamp();
        assert_eq!(a, ResultSlot(0));
        assert_eq!(inner, Some(ResultSlot(1)));
        assert_eq!(c, ResultSlot(2));
        assert_eq!(p.result_count(), 3);
        assert!(!p.assemble(0x40_0000, 0xC0_0000).unwrap().is_empty());
    }

    #[test]
    fn width_round_trips_through_bytes() {
        for w in [Width::W8, Width::W16, Width::W32, Width::W64] {
            assert_eq!(Width::from_bytes(w.bytes()), Some(w));
        }
        assert_eq!(Width::from_bytes(3), None);
    }
}
