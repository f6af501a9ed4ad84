//! GSI routing entries: what a GSI delivers.

/// An MSI message: what the device writes (`data`) where (`address`),
/// optionally tagged with the device ID an interrupt translation service
/// needs (aarch64 GICv3 ITS: `KVM_MSI_VALID_DEVID`; x86 leaves it unset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Message Address (upper and lower dwords).
    pub address: u64,
    /// Message Data.
    pub data: u32,
    /// Device ID (requester ID) for hypervisors that route by it.
    pub devid: Option<u32>,
}

impl MsiMessage {
    /// A message without a device ID.
    pub fn new(address: u64, data: u32) -> Self {
        MsiMessage {
            address,
            data,
            devid: None,
        }
    }
}

/// A GSI global system interrupt number: the index of a routing entry and
/// what an irqfd is bound to.
pub type Gsi = u32;

/// What one routing entry sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// An MSI message.
    Msi(MsiMessage),
    /// A pin of an in-kernel interrupt controller (x86: 0 PIC master,
    /// 1 PIC slave, 2 IOAPIC).
    Irqchip {
        /// The interrupt controller.
        chip: u32,
        /// Its pin.
        pin: u32,
    },
}

/// One entry of a VM's GSI routing table. A GSI may have several entries
/// (x86 GSIs 0..16 go to both the IOAPIC and a PIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoutingEntry {
    /// The GSI.
    pub gsi: Gsi,
    /// What it delivers.
    pub kind: RouteKind,
}

/// In-kernel interrupt controllers of the x86 irqchip, as KVM numbers them.
pub mod x86 {
    use super::{Gsi, RouteKind, RoutingEntry};

    /// The PIC serving IRQs 0..8.
    pub const PIC_MASTER: u32 = 0;
    /// The PIC serving IRQs 8..16.
    pub const PIC_SLAVE: u32 = 1;
    /// The IOAPIC.
    pub const IOAPIC: u32 = 2;
    /// GSIs the x86 in-kernel irqchip routes by default: 0..24.
    pub const IRQCHIP_GSIS: Gsi = 24;

    /// The routing table KVM installs with KVM_CREATE_IRQCHIP on x86, as
    /// `default_routing[]` in the kernel's arch/x86/kvm: GSIs 0..16 go to the
    /// IOAPIC pin of the same number and to a PIC (master for 0..8, slave for
    /// 8..16, pin GSI % 8), IOAPIC entry first; GSIs 16..24 to the IOAPIC
    /// only. 40 entries. `KVM_SET_GSI_ROUTING` replaces the whole table, so a
    /// VMM that sets MSI routes must send these too.
    pub fn default_routes() -> Vec<RoutingEntry> {
        let entry = |gsi, chip, pin| RoutingEntry {
            gsi,
            kind: RouteKind::Irqchip { chip, pin },
        };
        let mut entries = Vec::with_capacity(40);
        for gsi in 0..IRQCHIP_GSIS {
            entries.push(entry(gsi, IOAPIC, gsi));
            if gsi < 16 {
                let pic = if gsi < 8 { PIC_MASTER } else { PIC_SLAVE };
                entries.push(entry(gsi, pic, gsi % 8));
            }
        }
        entries
    }
}
