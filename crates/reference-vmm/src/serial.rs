//! The console: vm-superio's 8250 UART at 0x3f8 on stdout, its interrupt
//! an eventfd that KVM injects on GSI 4 (an irqfd to the in-kernel IOAPIC).

use std::io::Stdout;

use vm_superio::{serial::NoEvents, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// The UART's interrupt line: an eventfd registered as KVM irqfd.
#[derive(Debug)]
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The guest's console UART.
pub type Console = Serial<IrqLine, NoEvents, Stdout>;

/// A UART writing to stdout, raising `irq`.
pub fn console(irq: EventFd) -> Console {
    Serial::new(IrqLine(irq), std::io::stdout())
}
