//! Dragonball-like, from the dragonball-sandbox crates `dbs-pci`
//! (`msix.rs`: `MsixState::set_msg_ctl`, `write_table`, `read_pba`) and
//! `dbs-interrupt` (`kvm/msi_irq.rs`: `MsiIrq::enable`, `disable`,
//! `update`, `mask`, `unmask`, `get_pending_state`):
//!
//! - MSI-X enabled: every vector's route is added in one routing call
//!   (KVM_SET_GSI_ROUTING) and every irqfd assigned; then every vector that
//!   is masked, or all of them under Function Mask, is masked: its irqfd
//!   deassigned. Linux enables with Function Mask set: 1 routing call, N
//!   assigns and N deassigns.
//! - MSI-X disabled: every irqfd deassigned, the routes removed (one
//!   routing call).
//! - Function Mask changes (enabled): every entry whose Mask bit is clear
//!   is unmasked or masked (irqfd assign or deassign).
//! - A table write of an enabled function: an address or data dword updates
//!   the route (`modify`: KVM_SET_GSI_ROUTING of the whole table, changed or
//!   not); a Vector Control change, without Function Mask, masks (irqfd
//!   deassign) or unmasks (irqfd assign).
//! - PBA: for a masked entry, the irqfd eventfd's count (peeked).
//! - Entries start at zero (unmasked), not at the PCI reset value.
//! - Table reads and writes of any width up to 8 bytes inside one entry
//!   reach its bytes (`read_table`, `write_table`): a 1-byte write to
//!   Vector Control masks or unmasks.
//!
//! After an assign the model drains the eventfd count that KVM injected at
//! assign, so that one masked period gives one delivery, as the pending
//! check expects.

use irqfd_routes::{eventfd_drain, eventfd_pending};
use vfio_vectors::MsixSource;

use crate::qemu::fill_pba;
use crate::state::PeerState;
use msix_model::{
    MESSAGE_CONTROL_ENABLE as MSIX_ENABLE, MESSAGE_CONTROL_FUNCTION_MASK as FUNCTION_MASK,
};
use msix_rig::Error;

fn unmask(st: &mut PeerState, v: u16) -> Result<(), Error> {
    let newly = !st.vector(v)?.irqfd.is_attached();
    st.attach(v)?;
    if newly {
        eventfd_drain(st.source.trigger(v)?)?;
    }
    Ok(())
}

/// A config write of Message Control (`set_msg_ctl`).
pub fn write_message_control(st: &mut PeerState, value: u16) -> Result<(), Error> {
    let new_masked = value & FUNCTION_MASK != 0;
    let new_enabled = value & MSIX_ENABLE != 0;
    let (old_masked, old_enabled) = (st.table.function_mask, st.table.enabled);
    if old_enabled == new_enabled && old_masked == new_masked {
        return Ok(());
    }
    let n = st.table.len();
    match (old_enabled, new_enabled) {
        (false, true) => {
            for v in 0..n {
                st.stage(v)?;
            }
            st.commit()?;
            for v in 0..n {
                st.attach(v)?;
            }
            st.enable_device(1)?;
            for v in 0..n {
                if new_masked || st.table.masked(v) {
                    st.detach(v)?;
                }
            }
        }
        (true, false) => {
            for v in 0..n {
                st.detach(v)?;
                st.unstage(v)?;
            }
            st.commit()?;
            st.disable_device()?;
        }
        (true, true) => {
            for v in 0..n {
                if st.table.masked(v) {
                    continue;
                }
                if old_masked && !new_masked {
                    unmask(st, v)?;
                } else if !old_masked && new_masked {
                    st.detach(v)?;
                }
            }
        }
        (false, false) => {}
    }
    st.table.enabled = new_enabled;
    st.table.function_mask = new_masked;
    Ok(())
}

/// A guest write to the table (`write_table`).
pub fn write_table(st: &mut PeerState, offset: u64, data: &[u8]) -> Result<(), Error> {
    let Some(w) = st.table.write_bytes(offset, data) else {
        return Ok(());
    };
    if !st.table.enabled {
        return Ok(());
    }
    if w.offset_in_entry < 12 {
        st.stage(w.vector)?;
        st.commit()?;
    }
    if w.offset_in_entry + w.len as u64 >= 12 && !st.table.function_mask {
        if !w.was_masked() && w.is_masked() {
            st.detach(w.vector)?;
        } else if w.was_masked() && !w.is_masked() {
            unmask(st, w.vector)?;
        }
    }
    Ok(())
}

/// A PBA read (`read_pba`): masked entries whose irqfd eventfd counts.
pub fn read_pba(st: &PeerState, offset: u64, data: &mut [u8]) -> Result<(), Error> {
    if !st.table.enabled {
        data.fill(0);
        return Ok(());
    }
    let bits: Vec<bool> = (0..st.table.len())
        .map(|v| Ok(st.table.masked(v) && eventfd_pending(st.source.trigger(v)?)?))
        .collect::<Result<_, Error>>()?;
    fill_pba(&bits, offset, data);
    Ok(())
}
