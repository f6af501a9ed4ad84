//! The guest's accesses to the table and PBA that exit to userspace: the
//! VMM hands every MMIO exit in the device's BARs to
//! [`MsixAccelerator::mmio_read`] / [`MsixAccelerator::mmio_write`].

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use kvm_msix::BarRegion;

use crate::absorbed::Scope;
use crate::device::Device;
use crate::stats::Counters;
use crate::MsixAccelerator;

impl MsixAccelerator {
    /// Whether `gpa` is in this device's table or PBA (as placed).
    pub fn claims(&self, gpa: u64) -> bool {
        self.claimed.may_claim(gpa) && self.lock().decode(gpa).is_some()
    }

    /// Starts handling a synchronous exit at `gpa`: takes the device lock,
    /// decodes the address, and services the unmasks absorbed before it (the
    /// guest issued them first, so they apply first). None when not ours.
    fn begin_exit(&self, gpa: u64, len: usize) -> Option<(MutexGuard<'_, Device>, BarRegion)> {
        // Another device's exit never waits for this device's lock.
        if !self.claimed.may_claim(gpa) {
            return None;
        }
        let mut device = self.lock();
        let region = device.decode(gpa)?;
        let scope = match region {
            // An access to entries depends on their own pending unmasks.
            BarRegion::Table(offset) => {
                let last_entry = self.config.table_size.saturating_sub(1);
                let first = (offset / 16).min(u64::from(last_entry)) as u16;
                let last =
                    ((offset + len.max(1) as u64 - 1) / 16).min(u64::from(last_entry)) as u16;
                Scope::Entries(first..=last)
            }
            // Pending bits depend on every entry's mask.
            BarRegion::Pba(_) => Scope::GuestAll,
        };
        device.service(scope);
        Some((device, region))
    }

    /// Handles a guest MMIO read that exited to userspace. Returns false when
    /// the address is not this device's table or PBA.
    pub fn mmio_read(&self, gpa: u64, data: &mut [u8]) -> bool {
        let Some((mut device, region)) = self.begin_exit(gpa, data.len()) else {
            return false;
        };
        match region {
            BarRegion::Table(offset) => {
                Counters::bump(&self.counters.table_read_exits);
                device.model.read_table(offset, data);
            }
            BarRegion::Pba(offset) => {
                Counters::bump(&self.counters.pba_read_exits);
                // Vectors are in range by construction; a failure here means
                // the source cannot say, and the model's bits stand.
                let _ = device.refresh_pending(offset, data.len());
                device.model.read_pba(offset, data);
            }
        }
        true
    }

    /// Handles a guest MMIO write that exited to userspace. Returns false
    /// when the address is not this device's table or PBA. Whatever the
    /// write does to the hypervisor or the source, a failure stays with the
    /// vector concerned and is reported as an event.
    pub fn mmio_write(&self, gpa: u64, data: &[u8]) -> bool {
        let Some((mut device, region)) = self.begin_exit(gpa, data.len()) else {
            return false;
        };
        match region {
            BarRegion::Table(offset) => {
                self.count_table_write(offset, data);
                if device.defer_unmask_write(offset, data) {
                    return true;
                }
                let changes = device.model.write_table(offset, data);
                device.apply(&changes);
                let size = u64::from(self.config.table_size);
                let first = offset / 16;
                let last = (offset + data.len().max(1) as u64 - 1) / 16;
                for v in first..=last.min(size.saturating_sub(1)) {
                    device.sync_shadow(v as u16);
                }
            }
            BarRegion::Pba(offset) => {
                Counters::bump(&self.counters.pba_write_exits);
                let changes = device.model.write_pba(offset, data);
                device.apply(&changes);
            }
        }
        true
    }

    fn count_table_write(&self, offset: u64, data: &[u8]) {
        let counter = match (data.len(), offset % 16) {
            (4, 12) if data[0] & 1 == 1 => {
                if !self.config.unmask_polling.is_zero() {
                    // SAFETY: sched_getcpu has no preconditions.
                    let cpu = unsafe { libc::sched_getcpu() };
                    self.mask_exit_cpu.store(cpu, Ordering::Relaxed);
                }
                self.note_mask_exit();
                &self.counters.mask_write_exits
            }
            (4, 12) => &self.counters.unmask_write_exits,
            (4, 0 | 4 | 8) => &self.counters.message_write_exits,
            _ => &self.counters.other_table_write_exits,
        };
        Counters::bump(counter);
    }
}
