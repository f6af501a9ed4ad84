//! crosvm-like, from crosvm `devices/src/pci/msix.rs` (`MsixConfig`:
//! `write_msix_table`, `write_msix_capability`, `msix_enable_one`,
//! `add_msi_route`, `trigger`) and `devices/src/pci/vfio_pci.rs`
//! (`VfioMsixCap::get_msix_irqfd`, `msix_vector_update`,
//! `msix_vectors_update`, `enable_msix`, `VfioPciWorker`; the table and
//! the PBA are left out of the BAR mapping, so both trap):
//!
//! - A vector is first enabled when it is unmasked on an enabled function
//!   without Function Mask: its irqfd is registered (KVM_IRQFD) and its
//!   route added (KVM_SET_GSI_ROUTING, when the address is not zero).
//! - Afterwards its route is updated only when address or data change.
//! - A flip of the Mask bit (no Function Mask) re-points the vector's VFIO
//!   trigger (VFIO_DEVICE_SET_IRQS): to the userspace event while masked,
//!   to the irqfd while unmasked. At the unmask a set pending bit is sent by
//!   writing the irqfd.
//! - The worker thread handles a message on the userspace event: masked
//!   (entry or function), the emulated PBA bit is set; else the irqfd is
//!   written.
//! - Message Control: at enable every unmasked vector is enabled and the
//!   device's MSI-X enabled (with no vector in use: two SET_IRQS, a vector
//!   0 set to a new event and then cleared, so that the device is
//!   activated); a Function Mask change re-points every vector in one
//!   SET_IRQS, and its clear sends the pending bits of unmasked entries.
//! - PBA reads exit and read the emulated bits.
//!
//! As in QEMU, the software source's re-point is far cheaper than the real
//! SET_IRQS; `msix-bench --vfio` measures the real one.

use crate::qemu::fill_pba;
use crate::state::PeerState;
use msix_rig::Error;

/// `msix_vector_masked`: the trigger goes to the userspace event.
fn vector_masked(st: &PeerState, v: u16) -> bool {
    !st.table.enabled || st.table.function_mask || st.table.masked(v)
}

fn in_use(st: &mut PeerState, v: u16) -> Result<bool, Error> {
    Ok(st.vector(v)?.gsi.is_some())
}

/// `msix_enable_one`.
fn enable_one(st: &mut PeerState, v: u16) -> Result<(), Error> {
    if in_use(st, v)? || !st.table.enabled || st.table.function_mask || st.table.masked(v) {
        return Ok(());
    }
    st.gsi(v)?;
    st.attach(v)?;
    add_route(st, v)
}

/// `add_msi_route`: one routing call, unless the address is zero.
fn add_route(st: &mut PeerState, v: u16) -> Result<(), Error> {
    if st.table.message(v).0 == 0 {
        return Ok(());
    }
    st.stage(v)?;
    st.commit()
}

/// `msix_vector_update(index, get_msix_irqfd(index))`: one SET_IRQS.
fn vector_update(st: &mut PeerState, v: u16) -> Result<(), Error> {
    if in_use(st, v)? {
        let to_user = vector_masked(st, v);
        st.set_trigger(v, to_user)
    } else {
        // No irqfd yet: the trigger is cleared (fd -1); nothing to point.
        st.set_irqs += 1;
        Ok(())
    }
}

/// `inject_msix_and_clear_pba`.
fn inject_pending(st: &mut PeerState, v: u16) -> Result<(), Error> {
    if std::mem::take(&mut st.pba[usize::from(v)]) && in_use(st, v)? {
        st.signal_irqfd(v)?;
    }
    Ok(())
}

/// A guest write to the table (`write_msix_table`, then the VFIO side).
pub fn write_table(st: &mut PeerState, offset: u64, data: &[u8]) -> Result<(), Error> {
    let Some(w) = st.table.write(offset, data) else {
        return Ok(());
    };
    let v = w.vector;
    if st.table.enabled
        && !st.table.function_mask
        && !in_use(st, v)?
        && w.was_masked()
        && !w.is_masked()
    {
        enable_one(st, v)?;
        return vector_update(st, v);
    }
    if st.table.enabled && w.message_changed() && in_use(st, v)? {
        add_route(st, v)?;
    }
    if !st.table.function_mask {
        if w.was_masked() && !w.is_masked() {
            inject_pending(st, v)?;
            vector_update(st, v)?;
        } else if !w.was_masked() && w.is_masked() {
            vector_update(st, v)?;
        }
    }
    Ok(())
}

/// A config write of Message Control (`write_msix_capability`, then
/// `VfioPciDevice`'s reaction).
pub fn write_message_control(st: &mut PeerState, value: u16) -> Result<(), Error> {
    let (old_masked, old_enabled) = st.table.set_message_control(value);
    let (masked, enabled) = (st.table.function_mask, st.table.enabled);
    if !old_enabled && enabled {
        for v in 0..st.table.len() {
            enable_one(st, v)?;
        }
    }
    if old_masked && !masked {
        for v in 0..st.table.len() {
            if !st.table.masked(v) {
                inject_pending(st, v)?;
            }
        }
    }
    if !old_enabled && enabled {
        let any_in_use = st.vectors.iter().any(|v| v.gsi.is_some());
        if any_in_use {
            repoint_all(st)?;
            st.enable_device(0)?;
        } else {
            st.enable_device(2)?;
        }
    } else if old_enabled && !enabled {
        st.disable_device()?;
    } else if enabled && old_masked != masked {
        repoint_all(st)?;
    }
    Ok(())
}

/// `msix_vectors_update`: every vector's trigger in one SET_IRQS.
fn repoint_all(st: &mut PeerState) -> Result<(), Error> {
    for v in 0..st.table.len() {
        if in_use(st, v)? {
            let to_user = vector_masked(st, v);
            let to = if to_user {
                Some(st.vector(v)?.user_fd.clone())
            } else {
                None
            };
            st.source.repoint(v, to)?;
        }
    }
    st.set_irqs += 1;
    Ok(())
}

/// A message on vector `v`'s userspace event (`MsixConfig::trigger`).
pub fn user_event(st: &mut PeerState, v: u16) -> Result<(), Error> {
    if st.table.masked(v) || st.table.function_mask {
        st.pba[usize::from(v)] = true;
        Ok(())
    } else if in_use(st, v)? {
        st.signal_irqfd(v)
    } else {
        Ok(())
    }
}

/// A PBA read: the emulated bits (`read_pba_entries`).
pub fn read_pba(st: &PeerState, offset: u64, data: &mut [u8]) -> Result<(), Error> {
    fill_pba(&st.pba, offset, data);
    Ok(())
}
