//! Where a vCPU's port and MMIO exits go: the legacy devices by port, PCI
//! configuration mechanism 1, and the assigned functions' BARs (through
//! each function, which asks its accelerator first).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vm_superio::I8042Device;

use crate::exit::ResetTrigger;
use crate::layout;
use crate::pci::PciBus;
use crate::report;
use crate::serial::Console;

/// Every device a vCPU exit can reach.
pub struct Bus {
    console: Mutex<Console>,
    i8042: Mutex<I8042Device<ResetTrigger>>,
    /// The PCI host bridge and the assigned functions.
    pub pci: Arc<PciBus>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The devices' state stays consistent across a panicking holder (each
    // access is one register read or write).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads of ports and addresses nothing decodes: a floating bus.
fn unclaimed(data: &mut [u8]) {
    data.fill(0xff);
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("pci", &self.pci)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// The bus with its devices.
    pub fn new(console: Console, i8042: I8042Device<ResetTrigger>, pci: Arc<PciBus>) -> Self {
        Bus {
            console: Mutex::new(console),
            i8042: Mutex::new(i8042),
            pci,
        }
    }

    /// A port read (`in`).
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        match port {
            p if (layout::SERIAL_PORT..layout::SERIAL_PORT + 8).contains(&p) && data.len() == 1 => {
                data[0] = lock(&self.console).read((p - layout::SERIAL_PORT) as u8);
            }
            layout::I8042_DATA | layout::I8042_COMMAND if data.len() == 1 => {
                data[0] = lock(&self.i8042).read((port - layout::I8042_DATA) as u8);
            }
            // No RTC: reading 0 keeps Linux from polling Update-In-Progress.
            p if p == layout::CMOS || p == layout::CMOS + 1 => data.fill(0),
            p if (layout::PCI_CONFIG_ADDRESS..layout::PCI_CONFIG_DATA + 4).contains(&p) => {
                self.pci.config_io_read(p, data)
            }
            p => {
                if !self.pci.pio_read(p, data) {
                    unclaimed(data)
                }
            }
        }
    }

    /// A port write (`out`).
    pub fn pio_write(&self, port: u16, data: &[u8]) {
        match port {
            p if (layout::SERIAL_PORT..layout::SERIAL_PORT + 8).contains(&p) && data.len() == 1 => {
                // The only error is the interrupt eventfd's write, which
                // fails only on counter overflow.
                let _ = lock(&self.console).write((p - layout::SERIAL_PORT) as u8, data[0]);
            }
            layout::I8042_DATA | layout::I8042_COMMAND if data.len() == 1 => {
                let _ = lock(&self.i8042).write((port - layout::I8042_DATA) as u8, data[0]);
            }
            layout::STATS_PORT => {
                let mark = data.first().copied().unwrap_or(0);
                // The console's registers too: a guest whose console went
                // quiet shows here whether the UART still waits for its
                // transmit interrupt to be taken.
                let uart = lock(&self.console).state();
                eprintln!(
                    "VMM-UART mark={mark} ier={:#04x} iir={:#04x} lsr={:#04x}",
                    uart.interrupt_enable, uart.interrupt_identification, uart.line_status
                );
                report::print_marks(&self.pci, mark)
            }
            p if (layout::PCI_CONFIG_ADDRESS..layout::PCI_CONFIG_DATA + 4).contains(&p) => {
                self.pci.config_io_write(p, data)
            }
            p => {
                self.pci.pio_write(p, data);
            }
        }
    }

    /// An MMIO read that exited: an assigned function's trapped BAR page
    /// (table, PBA or a register page KVM does not map).
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if !self.pci.mmio_read(addr, data) {
            unclaimed(data)
        }
    }

    /// An MMIO write that exited.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        self.pci.mmio_write(addr, data);
    }
}
