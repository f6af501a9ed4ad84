//! The VFIO device fd the source talks to: how it is held, how a device is
//! opened by path, and the two MSI-X ioctls (GET_IRQ_INFO, SET_IRQS) made
//! raw because vfio-ioctls has no per-vector update and drops errnos.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_bindings::bindings::vfio::{vfio_irq_info, vfio_irq_set, VFIO_BASE, VFIO_TYPE};
use vfio_ioctls::{VfioContainer, VfioDevice};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ptr};
use vmm_sys_util::ioctl_io_nr;

use super::irq_set::IrqSetBuf;
use super::region::errno;
use crate::{Error, Result};

/// Request numbers of the VFIO device ioctls (`_IO(VFIO_TYPE, VFIO_BASE + n)`).
mod ioctls {
    use super::{ioctl_io_nr, VFIO_BASE, VFIO_TYPE};
    ioctl_io_nr!(VFIO_DEVICE_GET_IRQ_INFO, VFIO_TYPE as u32, VFIO_BASE + 9);
    ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, VFIO_TYPE as u32, VFIO_BASE + 10);
}
pub(super) use self::ioctls::{VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_SET_IRQS};

/// How the source reaches the device fd.
pub(super) enum DeviceHandle {
    /// Opened by [`VfioMsixSource::open`] or handed over as a vfio-ioctls
    /// device; the `Arc` keeps the device (and its group) open.
    Vfio(Arc<VfioDevice>),
    /// A duplicate of a VMM's device fd.
    Fd(OwnedFd),
}

impl DeviceHandle {
    pub(super) fn raw_fd(&self) -> RawFd {
        match self {
            DeviceHandle::Vfio(device) => device.as_raw_fd(),
            DeviceHandle::Fd(fd) => fd.as_raw_fd(),
        }
    }
}

/// Opens the vfio-pci device at a sysfs path or BDF: a VFIO container
/// (type1 IOMMU, no DMA mappings, no KVM device) with the device's group.
/// Returns the resolved sysfs path and the device.
pub(super) fn open_vfio_device(path_or_bdf: &Path) -> Result<(PathBuf, Arc<VfioDevice>)> {
    let path = resolve_sysfs_path(path_or_bdf);
    let container =
        VfioContainer::new(None).map_err(|e| Error::Vfio(format!("VFIO container: {e}")))?;
    let device = VfioDevice::new(&path, Arc::new(container), false)
        .map_err(|e| Error::Vfio(format!("VFIO device {}: {e}", path.display())))?;
    Ok((path, Arc::new(device)))
}

fn resolve_sysfs_path(path_or_bdf: &Path) -> PathBuf {
    if path_or_bdf.components().count() == 1 && !path_or_bdf.has_root() {
        Path::new("/sys/bus/pci/devices").join(path_or_bdf)
    } else {
        path_or_bdf.to_path_buf()
    }
}

/// One VFIO_DEVICE_SET_IRQS on the device fd `fd`.
pub(super) fn set_irqs(fd: RawFd, buf: &IrqSetBuf) -> Result<()> {
    // SAFETY: `buf` is a complete vfio_irq_set whose argsz covers the
    // header and its data; the kernel only reads argsz bytes of it.
    let ret = unsafe { ioctl_with_ptr(&fd, VFIO_DEVICE_SET_IRQS(), buf.as_ptr()) };
    if ret < 0 {
        // SAFETY: `as_ptr` points at an initialised, aligned header.
        let header: vfio_irq_set = unsafe { std::ptr::read(buf.as_ptr()) };
        return Err(Error::SetIrqs {
            start: header.start,
            count: header.count,
            errno: errno(),
        });
    }
    Ok(())
}

/// VFIO_DEVICE_GET_IRQ_INFO of IRQ index `index`.
pub(super) fn irq_info(fd: RawFd, index: u32) -> Result<vfio_irq_info> {
    let mut info = vfio_irq_info {
        argsz: std::mem::size_of::<vfio_irq_info>() as u32,
        index,
        ..Default::default()
    };
    // SAFETY: `info` is a correctly sized vfio_irq_info the kernel fills.
    let ret = unsafe { ioctl_with_mut_ref(&fd, VFIO_DEVICE_GET_IRQ_INFO(), &mut info) };
    if ret < 0 {
        return Err(Error::IrqInfo { errno: errno() });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_resolves_to_sysfs_device_path() {
        assert_eq!(
            resolve_sysfs_path(Path::new("0000:00:02.0")),
            PathBuf::from("/sys/bus/pci/devices/0000:00:02.0")
        );
        assert_eq!(
            resolve_sysfs_path(Path::new("/sys/bus/pci/devices/0000:00:03.0")),
            PathBuf::from("/sys/bus/pci/devices/0000:00:03.0")
        );
    }

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        // _IO(';', 100 + n): type 0x3b in bits 15:8, nr in 7:0.
        assert_eq!(VFIO_DEVICE_GET_IRQ_INFO(), 0x3b6d);
        assert_eq!(VFIO_DEVICE_SET_IRQS(), 0x3b6e);
        assert_eq!(super::super::region::VFIO_DEVICE_GET_REGION_INFO(), 0x3b6c);
    }
}
