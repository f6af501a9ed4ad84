//! Configuration mechanism 1's address register (PCI Local Bus 3.0,
//! 3.2.2.3.2): enable bit, bus, device, function, register.

use crate::layout;

/// A decoded configuration access on bus 0, function 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigAddress {
    /// Device number (0-31).
    pub device: u8,
    /// Byte offset in the function's configuration space (0-255).
    pub offset: u64,
}

impl ConfigAddress {
    /// The target of a data-port access at `port` with `address` in 0xcf8;
    /// None when the enable bit is clear or the access is not for function
    /// 0 of bus 0 (this machine has nothing else).
    pub fn decode(address: u32, port: u16) -> Option<ConfigAddress> {
        if address & (1 << 31) == 0
            || !(layout::PCI_CONFIG_DATA..layout::PCI_CONFIG_DATA + 4).contains(&port)
        {
            return None;
        }
        let bus = (address >> 16) & 0xff;
        let function = (address >> 8) & 0x7;
        if bus != 0 || function != 0 {
            return None;
        }
        Some(ConfigAddress {
            device: ((address >> 11) & 0x1f) as u8,
            offset: u64::from(address & 0xfc) + u64::from(port - layout::PCI_CONFIG_DATA),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_device_and_byte_offset_and_refuses_the_rest() {
        let a = 0x8000_0000 | (2 << 11) | 0x44;
        assert_eq!(
            ConfigAddress::decode(a, 0xcfe),
            Some(ConfigAddress {
                device: 2,
                offset: 0x46
            })
        );
        assert_eq!(ConfigAddress::decode(a & !(1 << 31), 0xcfc), None);
        assert_eq!(ConfigAddress::decode(a | (1 << 16), 0xcfc), None);
        assert_eq!(ConfigAddress::decode(a | (1 << 8), 0xcfc), None);
        assert_eq!(ConfigAddress::decode(a, 0xcf8), None);
    }
}
