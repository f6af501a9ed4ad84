//! [`AssignedDevice`]: a PCI device bound to vfio-pci, opened once for a
//! whole run, handing out a fresh `VfioMsixSource` for each accelerator.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_ioctls::VfioDevice;
use vfio_vectors::kernel::{MsixCapability, VfioMsixSource};
use vfio_vectors::{MsixSource, SourceFeatures};

use crate::nic::{Nic, NicFamily, PciIds};
use crate::regs::DeviceRegs;
use crate::Error;

/// The VFIO container device every assigned device is opened through.
const VFIO_CONTAINER: &str = "/dev/vfio/vfio";

/// Checks that `device` names a PCI function as `--vfio` takes it: a
/// PCI address `DDDD:BB:DD.F` (hex domain, bus, device up to 1f, function
/// up to 7), or a sysfs path whose last component is one; the error says
/// what is wrong, before anything is opened.
pub fn check_pci_address(device: &str) -> Result<(), String> {
    let last = Path::new(device)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hex = |s: &str, len: usize, max: u32| {
        s.len() == len
            && s.bytes().all(|b| b.is_ascii_hexdigit())
            && u32::from_str_radix(s, 16).is_ok_and(|v| v <= max)
    };
    let valid = match last.split(['.', ':']).collect::<Vec<_>>()[..] {
        [domain, bus, dev, function] => {
            last.matches(':').count() == 2
                && last.rfind('.') > last.rfind(':')
                && hex(domain, 4, 0xffff)
                && hex(bus, 2, 0xff)
                && hex(dev, 2, 0x1f)
                && hex(function, 1, 7)
        }
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "--vfio {device}: not a PCI address (DDDD:BB:DD.F, e.g. 0000:01:00.0) nor a sysfs path ending in one"
        ))
    }
}

/// A vfio-pci device opened for the checks.
pub struct AssignedDevice {
    /// The device's sysfs path (`/sys/bus/pci/devices/BDF`).
    pub sysfs: PathBuf,
    /// Its PCI identity.
    pub ids: PciIds,
    /// Its MSI-X capability.
    pub msix: MsixCapability,
    /// What its kernel VFIO source supports (masking through the table
    /// mmap, dynamic allocation), with why the table is not mapped if not.
    pub features: SourceFeatures,
    /// Why the table could not be mapped (source masking unavailable).
    pub unmapped_reason: Option<String>,
    /// The NIC's trigger, when its family is known; None otherwise.
    pub nic: Option<Nic>,
    /// The VFIO device (container, group and device fd), kept open for the
    /// whole run so that every source shares it.
    device: Arc<VfioDevice>,
}

impl std::fmt::Debug for AssignedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssignedDevice")
            .field("sysfs", &self.sysfs)
            .field("ids", &self.ids)
            .field("msix", &self.msix)
            .field("features", &self.features)
            .field("nic", &self.nic)
            .finish_non_exhaustive()
    }
}

impl AssignedDevice {
    /// Opens the device at `bdf` (`0000:01:00.0` or a sysfs path), reads
    /// its identity and, for a known family, sets the NIC up so that its
    /// vectors can be raised.
    pub fn open(bdf: &Path) -> Result<AssignedDevice, Error> {
        if !Path::new(VFIO_CONTAINER).exists() {
            return Err(Error::Check(format!(
                "{VFIO_CONTAINER} missing: load vfio-pci and bind the device to it (docs/hardware.md)"
            )));
        }
        let sysfs = if bdf.components().count() == 1 && !bdf.has_root() {
            Path::new("/sys/bus/pci/devices").join(bdf)
        } else {
            bdf.to_path_buf()
        };
        let ids = PciIds::read(&sysfs)?;
        let probe = VfioMsixSource::open(&sysfs)?;
        let device = probe
            .vfio_device()
            .cloned()
            .ok_or_else(|| Error::Check("VfioMsixSource::open gave no VFIO device".into()))?;
        let nic = match ids.family() {
            Some(family) => {
                let nic = Nic::new(family, &ids, DeviceRegs::new(&probe)?)?;
                nic.setup()?;
                Some(nic)
            }
            None => None,
        };
        Ok(AssignedDevice {
            sysfs,
            ids,
            msix: *probe.msix_capability(),
            features: probe.features(),
            unmapped_reason: probe.unmapped_reason().map(str::to_string),
            nic,
            device,
        })
    }

    /// The device's BDF (last component of its sysfs path).
    pub fn bdf(&self) -> String {
        self.sysfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The family of the device's trigger, if known.
    pub fn family(&self) -> Option<NicFamily> {
        self.nic.as_ref().map(Nic::family)
    }

    /// Vectors the checks use: the table size, capped by what the trigger
    /// can raise.
    pub fn vectors(&self) -> u16 {
        match self.family() {
            Some(f) => self.msix.table_size.min(f.raisable()),
            None => self.msix.table_size,
        }
    }

    /// A fresh kernel VFIO source on the device (MSI-X disabled), with no
    /// message pending on the vectors the checks use: one an earlier run
    /// left pending at the device is sent first, into nothing
    /// ([`crate::stale_pending`]).
    pub fn source(&self) -> Result<VfioMsixSource, Error> {
        if let Some(nic) = &self.nic {
            crate::stale_pending::flush(
                nic,
                self.vectors(),
                VfioMsixSource::from_vfio_device(self.device.clone())?,
            )?;
        }
        Ok(VfioMsixSource::from_vfio_device(self.device.clone())?)
    }

    /// The VFIO device (for handlers that issue their own SET_IRQS).
    pub fn vfio_device(&self) -> &Arc<VfioDevice> {
        &self.device
    }
}
