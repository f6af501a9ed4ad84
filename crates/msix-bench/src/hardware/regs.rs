//! [`DeviceRegs`]: 32-bit register access to a vfio-pci device's BAR 0 and
//! config space, and reads of its physical Pending Bit Array, with pread and
//! pwrite on the VFIO device fd.
//!
//! It holds its own duplicate of the device fd, so it keeps working while
//! the device's `VfioMsixSource` belongs to an accelerator. vfio-pci lets
//! pread/pwrite reach BAR registers, config space and the PBA (not the
//! MSI-X table).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use vfio_vectors::kernel::{RegionInfo, VfioMsixSource};

use crate::Error;

/// VFIO region index of BAR 0 (vfio-pci).
const BAR0: u32 = 0;
/// VFIO region index of config space (vfio-pci).
const CONFIG: u32 = 7;
/// PCI Command register and its Memory Space and Bus Master bits.
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// Register access to one vfio-pci device.
#[derive(Debug)]
pub struct DeviceRegs {
    fd: OwnedFd,
    bar0: RegionInfo,
    config: RegionInfo,
    pba: RegionInfo,
    pba_offset: u64,
    vectors: u16,
}

impl DeviceRegs {
    /// Register access to the device behind `source` (its fd is
    /// duplicated; the regions and the PBA location come from it).
    pub fn new(source: &VfioMsixSource) -> Result<DeviceRegs, Error> {
        // SAFETY: `device_fd` is the source's open VFIO device fd, which
        // stays open for the duration of this borrow (we duplicate it).
        let borrowed = unsafe { BorrowedFd::borrow_raw(source.device_fd()) };
        let fd = borrowed.try_clone_to_owned().map_err(|e| Error::Device {
            what: "dup of the device fd".into(),
            source: e,
        })?;
        let msix = source.msix_capability();
        Ok(DeviceRegs {
            fd,
            bar0: source.region_info(BAR0)?,
            config: source.region_info(CONFIG)?,
            pba: source.region_info(u32::from(msix.pba_bir))?,
            pba_offset: u64::from(msix.pba_offset),
            vectors: msix.table_size,
        })
    }

    fn access(&self, region: &RegionInfo, offset: u64, len: usize) -> Result<u64, Error> {
        if offset + len as u64 > region.size {
            return Err(Error::Check(format!(
                "offset {offset:#x}+{len} is outside VFIO region {} ({:#x} bytes)",
                region.index, region.size
            )));
        }
        Ok(region.offset + offset)
    }

    fn pread(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let at = self.access(region, offset, buf.len())?;
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes and the fd
        // is open; pread writes at most that many bytes.
        let n = unsafe {
            libc::pread(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                at as libc::off_t,
            )
        };
        check_len(n, buf.len(), || {
            format!("read of region {} at {offset:#x}", region.index)
        })
    }

    fn pwrite(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<(), Error> {
        let at = self.access(region, offset, buf.len())?;
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes and the fd
        // is open; pwrite reads at most that many bytes.
        let n = unsafe {
            libc::pwrite(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                at as libc::off_t,
            )
        };
        check_len(n, buf.len(), || {
            format!("write of region {} at {offset:#x}", region.index)
        })
    }

    /// Reads the 32-bit BAR 0 register at `offset`.
    pub fn read32(&self, offset: u64) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.pread(&self.bar0, offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes the 32-bit BAR 0 register at `offset`.
    pub fn write32(&self, offset: u64, value: u32) -> Result<(), Error> {
        self.pwrite(&self.bar0, offset, &value.to_le_bytes())
    }

    /// Sets Memory Space and Bus Master Enable in PCI Command: vfio-pci
    /// leaves Bus Master off, and without it the device sends no message.
    pub fn enable_bus_master(&self) -> Result<(), Error> {
        let mut cmd = [0u8; 2];
        self.pread(&self.config, PCI_COMMAND, &mut cmd)?;
        let value = u16::from_le_bytes(cmd) | PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
        self.pwrite(&self.config, PCI_COMMAND, &value.to_le_bytes())?;
        self.pread(&self.config, PCI_COMMAND, &mut cmd)?;
        if u16::from_le_bytes(cmd) & PCI_COMMAND_MASTER == 0 {
            return Err(Error::Check(format!(
                "PCI Command reads {:#x} after setting Bus Master Enable",
                u16::from_le_bytes(cmd)
            )));
        }
        Ok(())
    }

    /// The device's own Pending bit of `vector` (a pread of the PBA).
    pub fn physical_pending(&self, vector: u16) -> Result<bool, Error> {
        if vector >= self.vectors {
            return Err(Error::Check(format!(
                "vector {vector} out of range (table size {})",
                self.vectors
            )));
        }
        let mut dword = [0u8; 4];
        self.pread(
            &self.pba,
            self.pba_offset + u64::from(vector / 32) * 4,
            &mut dword,
        )?;
        Ok(u32::from_le_bytes(dword) & (1 << (vector % 32)) != 0)
    }
}

fn check_len(n: isize, want: usize, what: impl FnOnce() -> String) -> Result<(), Error> {
    if n < 0 {
        return Err(Error::Device {
            what: what(),
            source: std::io::Error::last_os_error(),
        });
    }
    if n as usize != want {
        return Err(Error::Device {
            what: what(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{n} of {want} bytes"),
            ),
        });
    }
    Ok(())
}
