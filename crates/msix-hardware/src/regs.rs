//! [`DeviceRegs`]: 32-bit register access to a vfio-pci device's BAR 0 and
//! config space, and reads of its physical Pending Bit Array, with pread and
//! pwrite on the VFIO device fd.
//!
//! It holds its own duplicate of the device fd, so it keeps working while
//! the device's `VfioMsixSource` belongs to an accelerator. vfio-pci lets
//! pread/pwrite reach BAR registers, config space and the PBA (not the
//! MSI-X table).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

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
    table: RegionInfo,
    table_offset: u64,
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
            table: source.region_info(u32::from(msix.table_bir))?,
            table_offset: u64::from(msix.table_offset),
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

impl DeviceRegs {
    /// Maps the pages of the MSI-X table (the host must allow it:
    /// VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) to read and write Vector Control.
    pub fn map_vector_controls(&self) -> Result<VectorControls, Error> {
        if !self.table.msix_mappable() || !self.table.mmap() {
            return Err(Error::Check(format!(
                "the host does not let userspace map the MSI-X table of BAR{} (caps {:?})",
                self.table.index, self.table.caps
            )));
        }
        const PAGE: u64 = 4096;
        let start = self.table_offset / PAGE * PAGE;
        let end = (self.table_offset + u64::from(self.vectors) * 16).div_ceil(PAGE) * PAGE;
        let len = (end - start) as usize;
        // SAFETY: a fresh shared mapping of the device fd at an address the
        // kernel picks; it aliases no Rust object. Checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                (self.table.offset + start) as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Device {
                what: format!("mmap of the MSI-X table pages of BAR{}", self.table.index),
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::Device {
            what: "mmap of the MSI-X table returned NULL".into(),
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        })?;
        Ok(VectorControls {
            base,
            len,
            table_start: (self.table_offset - start) as usize,
            vectors: self.vectors,
        })
    }
}

/// The Vector Control dwords of the device's MSI-X table, through a shared
/// mapping of the table's pages. Only whole 32-bit accesses to Vector
/// Control are made (with interrupt remapping, address and data hold the
/// host's remap handles and are never touched).
#[derive(Debug)]
pub struct VectorControls {
    base: NonNull<u8>,
    len: usize,
    table_start: usize,
    vectors: u16,
}

impl VectorControls {
    fn dword(&self, vector: u16) -> Result<*mut u32, Error> {
        let offset = self.table_start + usize::from(vector) * 16 + 12;
        if vector >= self.vectors || offset + 4 > self.len {
            return Err(Error::Check(format!(
                "vector {vector} out of range (table size {})",
                self.vectors
            )));
        }
        // SAFETY: `offset + 4 <= len`: the dword lies inside the mapping,
        // and it is 4-byte aligned (page-aligned base, 16-byte entries).
        Ok(unsafe { self.base.as_ptr().add(offset) }.cast::<u32>())
    }

    /// Vector Control of `vector` as the device holds it.
    pub fn get(&self, vector: u16) -> Result<u32, Error> {
        let ptr = self.dword(vector)?;
        // SAFETY: an aligned dword of our live mapping; volatile because it
        // is device memory.
        Ok(unsafe { ptr.read_volatile() })
    }

    /// Writes Vector Control of `vector`, then reads it back so the posted
    /// write has reached the device when this returns.
    pub fn set(&self, vector: u16, value: u32) -> Result<(), Error> {
        let ptr = self.dword(vector)?;
        // SAFETY: as in `get`; the mapping is writable.
        unsafe { ptr.write_volatile(value) };
        self.get(vector).map(|_| ())
    }
}

impl Drop for VectorControls {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe the mapping we created and own; no
        // pointer into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
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
