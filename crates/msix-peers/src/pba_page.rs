//! [`PbaPage`]: the device page a PBA read reaches without an exit (QEMU).

use std::sync::Arc;

use kvm_msix::TableShadow;
use msix_hypervisor::MsixVm;

use msix_rig::rig::TABLE_MEMSLOT;
use msix_rig::Error;

/// The device page a PBA read reaches without an exit: mapped read-only
/// while the model lets the guest read the device's PBA directly.
#[derive(Debug)]
pub struct PbaPage {
    hv: Arc<dyn MsixVm>,
    gpa: u64,
    page: TableShadow,
    mapped: bool,
}

impl PbaPage {
    pub(crate) fn new(hv: Arc<dyn MsixVm>, gpa: u64, len: u64) -> Result<PbaPage, Error> {
        let page = TableShadow::new(len).map_err(|e| Error::Check(format!("PBA page: {e}")))?;
        Ok(PbaPage {
            hv,
            gpa,
            page,
            mapped: false,
        })
    }

    /// Maps the page (KVM_SET_USER_MEMORY_REGION) unless mapped.
    pub fn map(&mut self) -> Result<(), Error> {
        if !self.mapped {
            // SAFETY: the pages belong to `self.page`, which lives as long
            // as `self`; `unmap` (also called by Drop) deletes the slot
            // before they are released.
            unsafe {
                self.hv.set_readonly_memory(
                    TABLE_MEMSLOT,
                    self.gpa,
                    self.page.size(),
                    self.page.host_address(),
                )
            }
            .map_err(|e| Error::Check(format!("PBA memslot: {e}")))?;
            self.mapped = true;
        }
        Ok(())
    }

    /// Deletes the slot unless already deleted: reads of the PBA exit.
    pub fn unmap(&mut self) -> Result<(), Error> {
        if self.mapped {
            // SAFETY: size 0 deletes the slot; no mapping is handed to KVM.
            unsafe { self.hv.set_readonly_memory(TABLE_MEMSLOT, self.gpa, 0, 0) }
                .map_err(|e| Error::Check(format!("PBA memslot: {e}")))?;
            self.mapped = false;
        }
        Ok(())
    }
}

impl Drop for PbaPage {
    fn drop(&mut self) {
        let _ = self.unmap();
    }
}
