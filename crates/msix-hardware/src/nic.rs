//! Device knowledge: how to make an assigned NIC raise one chosen MSI-X
//! vector on demand through its own registers, for the families tested.
//!
//! This is the only place that knows device registers; the vfio-vm harness
//! and `msix-bench --vfio` both raise vectors through [`Nic`]. A raise must
//! send exactly one message, synchronously with the register writes that
//! make it (no throttling timer may hold it back or send it again): the
//! checks that prove "nothing else was sent" rely on it.
//!
//! Adding a family (see docs/hardware.md): add its PCI IDs to
//! [`KNOWN_DEVICES`] with a new [`NicFamily`], then write its `setup`
//! (route each cause to the vector of the same number, auto-clear causes,
//! throttling off) and `raise` (re-enable the vector's cause, then set it),
//! and run `msix-bench --vfio BDF` on the device: every check must pass.

use std::path::Path;

use serde::Serialize;

use crate::regs::{DeviceRegs, VectorControls};
use crate::Error;

/// A device family whose registers [`Nic`] can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NicFamily {
    /// Intel 82576 (igb): extended interrupts, one EICR bit per vector.
    Igb,
    /// Intel 82574L (e1000e): five causes routed to vectors 0..4 by IVAR.
    E1000e,
}

impl NicFamily {
    /// The family's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            NicFamily::Igb => "igb",
            NicFamily::E1000e => "e1000e",
        }
    }

    /// How many vectors, from 0, the family can raise.
    pub fn raisable(self) -> u16 {
        match self {
            NicFamily::Igb => 10,
            NicFamily::E1000e => 5,
        }
    }
}

/// A PCI device ID that was tested with its family.
#[derive(Clone, Copy, Debug)]
pub struct KnownDevice {
    /// PCI vendor ID.
    pub vendor: u16,
    /// PCI device ID.
    pub device: u16,
    /// The family whose registers it has.
    pub family: NicFamily,
}

/// Devices whose vectors [`Nic`] can raise (tested as emulated by QEMU).
pub const KNOWN_DEVICES: &[KnownDevice] = &[
    KnownDevice {
        vendor: 0x8086,
        device: 0x10c9,
        family: NicFamily::Igb,
    },
    KnownDevice {
        vendor: 0x8086,
        device: 0x10d3,
        family: NicFamily::E1000e,
    },
];

/// A device's PCI identity, read from sysfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PciIds {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem device ID.
    pub subsystem_device: u16,
}

impl PciIds {
    /// Reads the IDs of the device at `sysfs` (`/sys/bus/pci/devices/BDF`).
    pub fn read(sysfs: &Path) -> Result<PciIds, Error> {
        let id = |file: &str| -> Result<u16, Error> {
            let path = sysfs.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::Device {
                what: format!("read {}", path.display()),
                source: e,
            })?;
            let t = text.trim();
            u16::from_str_radix(t.trim_start_matches("0x"), 16)
                .map_err(|_| Error::Check(format!("{}: not a PCI ID: {t:?}", path.display())))
        };
        Ok(PciIds {
            vendor: id("vendor")?,
            device: id("device")?,
            subsystem_vendor: id("subsystem_vendor")?,
            subsystem_device: id("subsystem_device")?,
        })
    }

    /// The family of a known device, None for any other.
    pub fn family(&self) -> Option<NicFamily> {
        KNOWN_DEVICES
            .iter()
            .find(|k| k.vendor == self.vendor && k.device == self.device)
            .map(|k| k.family)
    }
}

impl std::fmt::Display for PciIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:04x} (subsystem {:04x}:{:04x})",
            self.vendor, self.device, self.subsystem_vendor, self.subsystem_device
        )
    }
}

/// igb (82576) registers in BAR 0.
mod igb {
    /// General Purpose Interrupt Enable.
    pub const GPIE: u64 = 0x1514;
    /// Extended Interrupt Cause Set: writing bit n raises vector n.
    pub const EICS: u64 = 0x1520;
    /// Extended Interrupt Mask Set.
    pub const EIMS: u64 = 0x1524;
    /// Extended Interrupt Auto Clear.
    pub const EIAC: u64 = 0x152c;
    /// Extended Interrupt Throttle of vector n: `EITR0 + 4 * n`.
    pub const EITR0: u64 = 0x1680;
    /// GPIE: PBA support (bit 31) and MSI-X mode (bit 4).
    pub const GPIE_MSIX: u32 = 0x8000_0010;
}

/// e1000e (82574L) registers in BAR 0.
mod e1000e {
    /// Device Control, and its software reset bit.
    pub const CTRL: u64 = 0x0;
    pub const CTRL_RST: u32 = 1 << 26;
    /// Extended Device Control, and its Extended Interrupt Auto Mask Enable.
    pub const CTRL_EXT: u64 = 0x18;
    pub const CTRL_EXT_EIAME: u32 = 1 << 24;
    /// Interrupt Cause Read (write 1 to clear), Cause Set, Mask Set.
    pub const ICR: u64 = 0xc0;
    pub const ICS: u64 = 0xc8;
    pub const IMS: u64 = 0xd0;
    /// Interrupt Throttling (legacy) and Extended Interrupt Auto Clear.
    pub const ITR: u64 = 0xc4;
    pub const EIAC: u64 = 0xdc;
    /// Interrupt Vector Allocation.
    pub const IVAR: u64 = 0xe4;
    /// Extended Interrupt Throttle of vector n: `EITR0 + 4 * n`.
    pub const EITR0: u64 = 0xe8;
    /// RXQ0, RXQ1, TXQ0, TXQ1, OTHER -> vectors 0..4, each with its valid bit.
    pub const IVAR_VECTORS: u32 = 0x000c_ba98;
    /// The five causes of IVAR_VECTORS, vector 0 first (ICR bits 20..24).
    pub const CAUSE_SHIFT: u32 = 20;
    pub const ALL_CAUSES: u32 = 0x01f0_0000;
}

/// A NIC of a known family, driven through its registers.
#[derive(Debug)]
pub struct Nic {
    family: NicFamily,
    regs: DeviceRegs,
    /// QEMU's e1000e model re-sends each vector when its throttle timer
    /// expires; its raises hold the vector masked at the device (see
    /// [`Nic::raise`]).
    qemu_e1000e: Option<VectorControls>,
}

impl Nic {
    /// A NIC of `family` with identity `ids`, reached through `regs`.
    /// Fails on QEMU's e1000e model when its MSI-X table cannot be mapped.
    pub fn new(family: NicFamily, ids: &PciIds, regs: DeviceRegs) -> Result<Nic, Error> {
        let qemu_e1000e = if family == NicFamily::E1000e && emulated_by_qemu(ids) {
            Some(regs.map_vector_controls()?)
        } else {
            None
        };
        Ok(Nic {
            family,
            regs,
            qemu_e1000e,
        })
    }

    /// The device's family.
    pub fn family(&self) -> NicFamily {
        self.family
    }

    /// Register access (for the physical PBA).
    pub fn regs(&self) -> &DeviceRegs {
        &self.regs
    }

    /// Whether the device is QEMU's e1000e model (it needs a reset after
    /// each raise; see [`Nic::raise`]).
    pub fn is_qemu_e1000e(&self) -> bool {
        self.qemu_e1000e.is_some()
    }

    /// Turns Bus Master on and programs the NIC so that [`Nic::raise`] can
    /// raise each vector: every cause routed to the vector of the same
    /// number, auto-cleared when its message is sent, throttling off.
    pub fn setup(&self) -> Result<(), Error> {
        self.regs.enable_bus_master()?;
        self.setup_interrupts()
    }

    fn setup_interrupts(&self) -> Result<(), Error> {
        let r = &self.regs;
        match self.family {
            NicFamily::Igb => {
                r.write32(igb::GPIE, igb::GPIE_MSIX)?;
                for v in 0..u64::from(self.family.raisable()) {
                    r.write32(igb::EITR0 + 4 * v, 0)?;
                }
                r.write32(igb::EIAC, 0x3ff)?;
                r.write32(igb::EIMS, 0x3ff)
            }
            NicFamily::E1000e => {
                let ctrl_ext = r.read32(e1000e::CTRL_EXT)?;
                r.write32(e1000e::CTRL_EXT, ctrl_ext | e1000e::CTRL_EXT_EIAME)?;
                r.write32(e1000e::ITR, 0)?;
                for v in 0..u64::from(self.family.raisable()) {
                    r.write32(e1000e::EITR0 + 4 * v, 0)?;
                }
                r.write32(e1000e::IVAR, e1000e::IVAR_VECTORS)?;
                r.write32(e1000e::EIAC, e1000e::ALL_CAUSES)?;
                r.write32(e1000e::IMS, e1000e::ALL_CAUSES)
            }
        }
    }

    /// Makes the NIC send `vector`'s MSI-X message once (or, if the
    /// function holds the vector masked, set its Pending bit).
    ///
    /// igb: EIMS re-enables the vector, EICS sets its cause. e1000e: the
    /// cause is cleared in ICR (write 1 to clear) so the set is a new edge,
    /// re-enabled in IMS (an e1000e clears a cause's IMS bit on each
    /// interrupt), then set with ICS.
    ///
    /// QEMU's e1000e model clamps EITR to at least 500 (128 us) and, when a
    /// vector's throttle timer expires, sends the vector again whether or
    /// not a cause is pending (`hw/net/e1000e_core.c`,
    /// `e1000e_intrmgr_on_msix_throttling_timer`). A software reset
    /// (CTRL.RST) stops the timer without sending, but the timer can expire
    /// before the reset lands. So on that model the raise holds the vector
    /// masked at the device (its Vector Control, through the table
    /// mapping): the message and any early resend only set the Pending bit;
    /// the reset stops the timer; restoring Vector Control then sends the
    /// pending message exactly once if the vector was unmasked, and leaves
    /// it pending if it was masked.
    pub fn raise(&self, vector: u16) -> Result<(), Error> {
        if vector >= self.family.raisable() {
            return Err(Error::Check(format!(
                "{} can raise vectors 0..{}, not {vector}",
                self.family.name(),
                self.family.raisable()
            )));
        }
        let r = &self.regs;
        match (self.family, &self.qemu_e1000e) {
            (NicFamily::Igb, _) => {
                r.write32(igb::EIMS, 1 << vector)?;
                r.write32(igb::EICS, 1 << vector)
            }
            (NicFamily::E1000e, None) => self.set_e1000e_cause(vector),
            (NicFamily::E1000e, Some(controls)) => {
                let vector_control = controls.get(vector)?;
                controls.set(vector, vector_control | 1)?;
                let raised = self.set_e1000e_cause(vector).and_then(|()| {
                    let ctrl = r.read32(e1000e::CTRL)?;
                    r.write32(e1000e::CTRL, ctrl | e1000e::CTRL_RST)?;
                    self.setup_interrupts()
                });
                let restored = controls.set(vector, vector_control);
                raised.and(restored)
            }
        }
    }

    fn set_e1000e_cause(&self, vector: u16) -> Result<(), Error> {
        let cause = 1 << (e1000e::CAUSE_SHIFT + u32::from(vector));
        self.regs.write32(e1000e::ICR, cause)?;
        self.regs.write32(e1000e::IMS, cause)?;
        self.regs.write32(e1000e::ICS, cause)
    }
}

/// Whether the machine is a QEMU guest and the device has QEMU's default
/// e1000e subsystem IDs (Intel, 0), i.e. the NIC is QEMU's model.
fn emulated_by_qemu(ids: &PciIds) -> bool {
    let qemu_machine =
        std::fs::read_to_string("/sys/class/dmi/id/sys_vendor").is_ok_and(|v| v.trim() == "QEMU");
    qemu_machine && ids.subsystem_vendor == 0x8086 && ids.subsystem_device == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(vendor: u16, device: u16) -> PciIds {
        PciIds {
            vendor,
            device,
            subsystem_vendor: 0x8086,
            subsystem_device: 0,
        }
    }

    #[test]
    fn known_devices_map_to_their_family() {
        assert_eq!(ids(0x8086, 0x10c9).family(), Some(NicFamily::Igb));
        assert_eq!(ids(0x8086, 0x10d3).family(), Some(NicFamily::E1000e));
        assert_eq!(ids(0x1af4, 0x1000).family(), None);
    }

    #[test]
    fn pci_ids_read_from_sysfs_files() {
        let dir = std::env::temp_dir().join(format!("msix-bench-ids-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [
            ("vendor", "0x8086\n"),
            ("device", "0x10d3\n"),
            ("subsystem_vendor", "0x8086\n"),
            ("subsystem_device", "0x0000\n"),
        ] {
            std::fs::write(dir.join(f), v).unwrap();
        }
        let read = PciIds::read(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read.unwrap(), ids(0x8086, 0x10d3));
    }
}
