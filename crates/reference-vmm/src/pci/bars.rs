//! The guest's view of an assigned function's six Base Address Registers
//! and of Command's decode bits: sizing (write all ones, read the size
//! mask), addresses as the guest programs them, and where each BAR decodes.
//!
//! The VMM, in the firmware's role, assigns every BAR an address before the
//! guest boots (memory BARs in the PCI hole above RAM, I/O BARs from
//! 0xc000), with decode as the device had it; Linux keeps them.

use crate::layout;

/// Command register bits.
pub const COMMAND_IO: u16 = 1 << 0;
/// Memory Space Enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;

/// Config-space offset of BAR 0.
pub const BAR0: u64 = 0x10;
/// Config-space offset of the Expansion ROM BAR.
pub const ROM_BAR: u64 = 0x30;

const BAR_IO: u32 = 1 << 0;
const BAR_MEM64: u32 = 0b10 << 1;
const BAR_PREFETCH: u32 = 1 << 3;

/// What a BAR register holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// Not implemented by the function (reads 0).
    Unused,
    /// A memory BAR; with `is64` its upper half is the next register.
    Memory {
        /// 64-bit BAR.
        is64: bool,
        /// Prefetchable.
        prefetch: bool,
    },
    /// The upper half of the 64-bit memory BAR before it.
    Upper,
    /// An I/O BAR.
    Io,
}

/// One BAR.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    /// Its type.
    pub kind: BarKind,
    /// Its size in bytes (a power of two), 0 when unused.
    pub size: u64,
    /// The address bits as the guest programmed them (64-bit BARs: both
    /// halves, in the lower BAR's entry).
    pub address: u64,
}

impl Bar {
    /// An unused BAR.
    pub const UNUSED: Bar = Bar {
        kind: BarKind::Unused,
        size: 0,
        address: 0,
    };

    /// A BAR of `size` bytes whose physical register reads `register`
    /// (its low bits give the type).
    pub fn from_register(register: u32, size: u64) -> Bar {
        if size == 0 {
            return Bar::UNUSED;
        }
        let kind = if register & BAR_IO != 0 {
            BarKind::Io
        } else {
            BarKind::Memory {
                is64: register & 0b110 == BAR_MEM64,
                prefetch: register & BAR_PREFETCH != 0,
            }
        };
        Bar {
            kind,
            size: size.next_power_of_two(),
            address: 0,
        }
    }

    fn flags(&self) -> u32 {
        match self.kind {
            BarKind::Io => BAR_IO,
            BarKind::Memory { is64, prefetch } => {
                (if is64 { BAR_MEM64 } else { 0 }) | if prefetch { BAR_PREFETCH } else { 0 }
            }
            BarKind::Unused | BarKind::Upper => 0,
        }
    }

    /// The address the guest wrote while sizing (all ones, masked): not a
    /// real assignment.
    fn sizing_pattern(&self) -> u64 {
        let width = match self.kind {
            BarKind::Memory { is64: true, .. } => u64::MAX,
            BarKind::Io => 0xffff_fffc,
            _ => 0xffff_fff0,
        };
        width & !(self.size - 1)
    }

    /// Whether the address is a real assignment.
    pub fn assigned(&self) -> bool {
        self.size != 0 && self.address != 0 && self.address != self.sizing_pattern()
    }
}

/// The six BARs and the decode bits of Command.
#[derive(Clone, Debug)]
pub struct Bars {
    /// BAR 0-5.
    pub bar: [Bar; 6],
    /// Command's I/O and Memory Space Enable bits as the guest last wrote.
    pub command: u16,
}

impl Bars {
    /// The register at config offset `BAR0 + 4 * index`.
    pub fn read(&self, index: usize) -> u32 {
        match self.bar[index].kind {
            BarKind::Unused => 0,
            BarKind::Upper => {
                let lower = &self.bar[index - 1];
                (lower.address >> 32) as u32
            }
            _ => {
                let bar = &self.bar[index];
                (bar.address as u32) | bar.flags()
            }
        }
    }

    /// A dword write to BAR `index`; the size's bits stay zero, so all ones
    /// reads back the size mask.
    pub fn write(&mut self, index: usize, value: u32) {
        match self.bar[index].kind {
            BarKind::Unused => {}
            BarKind::Upper => {
                let lower = &mut self.bar[index - 1];
                let high = (u64::from(value) << 32) & !(lower.size - 1);
                lower.address = (lower.address & 0xffff_ffff) | high;
            }
            BarKind::Io => {
                let bar = &mut self.bar[index];
                bar.address = u64::from(value & !0x3) & !(bar.size - 1);
            }
            BarKind::Memory { .. } => {
                let bar = &mut self.bar[index];
                let low = u64::from(value & !0xf) & !(bar.size - 1);
                bar.address = (bar.address & !0xffff_ffff) | low;
            }
        }
    }

    /// Where memory BAR `index` decodes: its base, when Memory Space Enable
    /// is on and the BAR holds a real address.
    pub fn memory_base(&self, index: usize) -> Option<u64> {
        let bar = &self.bar[index];
        (matches!(bar.kind, BarKind::Memory { .. })
            && self.command & COMMAND_MEMORY != 0
            && bar.assigned())
        .then_some(bar.address)
    }

    /// Where I/O BAR `index` decodes.
    pub fn io_base(&self, index: usize) -> Option<u64> {
        let bar = &self.bar[index];
        (bar.kind == BarKind::Io && self.command & COMMAND_IO != 0 && bar.assigned())
            .then_some(bar.address)
    }

    /// The memory BAR decoding `addr`, with the offset of `addr` in it.
    pub fn memory_hit(&self, addr: u64, len: usize) -> Option<(usize, u64)> {
        (0..6).find_map(|i| {
            let base = self.memory_base(i)?;
            let off = addr.checked_sub(base)?;
            (off + len as u64 <= self.bar[i].size).then_some((i, off))
        })
    }

    /// The I/O BAR decoding `port`, with the offset of `port` in it.
    pub fn io_hit(&self, port: u16, len: usize) -> Option<(usize, u64)> {
        (0..6).find_map(|i| {
            let base = self.io_base(i)?;
            let off = u64::from(port).checked_sub(base)?;
            (off + len as u64 <= self.bar[i].size).then_some((i, off))
        })
    }

    /// Gives every BAR an address, as firmware does: memory BARs naturally
    /// aligned from `*next_mmio` (at least a page each, so a BAR can be a
    /// KVM memslot), I/O BARs from `*next_io`.
    pub fn assign(&mut self, next_mmio: &mut u64, next_io: &mut u64) -> Result<(), String> {
        for (i, bar) in self.bar.iter_mut().enumerate() {
            let (next, end, align) = match bar.kind {
                BarKind::Memory { .. } => {
                    (&mut *next_mmio, layout::PCI_HOLE_END, bar.size.max(4096))
                }
                BarKind::Io => (&mut *next_io, layout::PCI_IO_END, bar.size.max(4)),
                BarKind::Unused | BarKind::Upper => continue,
            };
            let base = next.next_multiple_of(align);
            if base + bar.size > end {
                return Err(format!(
                    "BAR {i} ({:#x} bytes) does not fit the PCI hole",
                    bar.size
                ));
            }
            bar.address = base;
            *next = base + align;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn igb_like() -> Bars {
        Bars {
            bar: [
                Bar::from_register(0, 0x20000),
                Bar::UNUSED,
                Bar::from_register(1, 32),
                Bar::from_register(0, 0x4000),
                Bar::from_register(0b100, 0x1000),
                Bar {
                    kind: BarKind::Upper,
                    size: 0,
                    address: 0,
                },
            ],
            command: 0,
        }
    }

    #[test]
    fn sizing_reads_back_the_size_mask_and_is_not_an_assignment() {
        let mut b = igb_like();
        b.write(0, u32::MAX);
        assert_eq!(b.read(0), 0xfffe_0000);
        assert!(!b.bar[0].assigned());
        b.write(2, u32::MAX);
        assert_eq!(b.read(2), 0xffff_ffe1);
        b.write(4, u32::MAX);
        b.write(5, u32::MAX);
        assert_eq!((b.read(4), b.read(5)), (0xffff_f004, u32::MAX));
        assert!(!b.bar[4].assigned());
        b.write(4, 0xc000_0000);
        b.write(5, 1);
        assert_eq!(b.bar[4].address, 0x1_c000_0000);
    }

    #[test]
    fn assignment_aligns_and_decoding_follows_command() {
        let mut b = igb_like();
        let (mut mmio, mut io) = (layout::PCI_HOLE_START, layout::PCI_IO_START);
        b.assign(&mut mmio, &mut io).unwrap();
        assert_eq!(b.bar[0].address, 0xc000_0000);
        assert_eq!(b.bar[3].address, 0xc002_0000);
        assert_eq!(b.bar[4].address, 0xc002_4000);
        assert_eq!(b.bar[2].address, 0xc000);
        assert_eq!(b.memory_hit(0xc000_0010, 4), None, "decode off");
        b.command = COMMAND_MEMORY;
        assert_eq!(b.memory_hit(0xc002_0010, 4), Some((3, 0x10)));
        assert_eq!(b.memory_hit(0xc002_3ffe, 4), None, "crosses the end");
        assert_eq!(b.io_hit(0xc004, 4), None, "I/O decode off");
        b.command |= COMMAND_IO;
        assert_eq!(b.io_hit(0xc004, 4), Some((2, 4)));
    }
}
