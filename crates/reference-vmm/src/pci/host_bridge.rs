//! The host bridge at 00:00.0. Linux's configuration-mechanism sanity
//! check (`pci_sanity_check`) wants a host bridge or a known vendor on bus
//! 0 before it trusts mechanism 1.

/// Red Hat's vendor ID and the ID QEMU gives its generic PCIe host bridge.
const VENDOR_ID: u16 = 0x1b36;
const DEVICE_ID: u16 = 0x0008;
/// Class code: bridge, host bridge.
const CLASS_HOST_BRIDGE: u32 = 0x06_00_00;

/// A read-only type-0 header with only IDs and class.
#[derive(Debug)]
pub struct HostBridge {
    config: [u8; 256],
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBridge {
    /// The bridge's configuration space.
    pub fn new() -> Self {
        let mut config = [0u8; 256];
        config[0..2].copy_from_slice(&VENDOR_ID.to_le_bytes());
        config[2..4].copy_from_slice(&DEVICE_ID.to_le_bytes());
        // Revision 0, then the 24-bit class code.
        config[9..12].copy_from_slice(&CLASS_HOST_BRIDGE.to_le_bytes()[..3]);
        HostBridge { config }
    }

    /// A configuration read; writes are ignored (nothing is writable).
    pub fn config_read(&self, offset: u64, data: &mut [u8]) {
        let start = offset as usize;
        match self.config.get(start..start + data.len()) {
            Some(bytes) => data.copy_from_slice(bytes),
            None => data.fill(0xff),
        }
    }
}
