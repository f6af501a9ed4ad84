//! PCI bus 0: configuration mechanism 1 (ports 0xcf8/0xcfc), the host
//! bridge at 00:00.0 and the assigned functions at 00:01.0, 00:02.0, ...

mod bars;
mod config_address;
mod host_bridge;
mod vfio_function;

use std::sync::{Arc, Mutex, PoisonError};

pub use config_address::ConfigAddress;
pub use host_bridge::HostBridge;
pub use vfio_function::VfioFunction;

use crate::layout;

/// Bus 0 with its host bridge and assigned functions.
#[derive(Debug)]
pub struct PciBus {
    /// The last value written to 0xcf8 (one register for the whole VM).
    address: Mutex<u32>,
    bridge: HostBridge,
    /// Device `i + 1` on bus 0.
    functions: Vec<Arc<VfioFunction>>,
}

impl PciBus {
    /// The bus with `functions` at devices 1, 2, ...
    pub fn new(functions: Vec<Arc<VfioFunction>>) -> Self {
        PciBus {
            address: Mutex::new(0),
            bridge: HostBridge::new(),
            functions,
        }
    }

    /// The assigned functions, in device-number order.
    pub fn functions(&self) -> &[Arc<VfioFunction>] {
        &self.functions
    }

    fn address(&self) -> u32 {
        *self.address.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A read of 0xcf8 (the address register) or 0xcfc-0xcff (data).
    pub fn config_io_read(&self, port: u16, data: &mut [u8]) {
        if port == layout::PCI_CONFIG_ADDRESS && data.len() == 4 {
            data.copy_from_slice(&self.address().to_le_bytes());
            return;
        }
        let target = ConfigAddress::decode(self.address(), port);
        match target {
            Some(a) if a.device == 0 => self.bridge.config_read(a.offset, data),
            Some(a) => match self.functions.get(usize::from(a.device) - 1) {
                Some(f) => f.config_read(a.offset, data),
                None => data.fill(0xff),
            },
            None => data.fill(0xff),
        }
    }

    /// A write of 0xcf8 (the address register) or 0xcfc-0xcff (data).
    pub fn config_io_write(&self, port: u16, data: &[u8]) {
        if port == layout::PCI_CONFIG_ADDRESS {
            // Linux's probe writes a byte to 0xcfb too; only dword writes
            // to 0xcf8 set the address (PCI Local Bus 3.0, 3.2.2.3.2).
            if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                *self.address.lock().unwrap_or_else(PoisonError::into_inner) =
                    u32::from_le_bytes(bytes);
            }
            return;
        }
        if let Some(a) = ConfigAddress::decode(self.address(), port) {
            if a.device > 0 {
                if let Some(f) = self.functions.get(usize::from(a.device) - 1) {
                    f.config_write(a.offset, data);
                }
            }
        }
    }

    /// An MMIO read in some function's BAR; false when none decodes `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        self.functions.iter().any(|f| f.mmio_read(addr, data))
    }

    /// An MMIO write in some function's BAR; false when none decodes `addr`.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        self.functions.iter().any(|f| f.mmio_write(addr, data))
    }

    /// A port read in some function's I/O BAR.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) -> bool {
        self.functions.iter().any(|f| f.pio_read(port, data))
    }

    /// A port write in some function's I/O BAR.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> bool {
        self.functions.iter().any(|f| f.pio_write(port, data))
    }
}
