//! cloud-hypervisor-like, from cloud-hypervisor `pci/src/msix.rs`
//! (`MsixConfig::write_table`, `set_msg_ctl`), `pci/src/vfio.rs` (table
//! accesses emulated, every other BAR access, the PBA included, sent to the
//! device with `region_read`; MSI-X enable wires every vector's irqfd
//! eventfd to the device) and `vmm/src/interrupt.rs`
//! (`MsiInterruptGroup::update`, `set_gsi_routes`, `InterruptRoute`):
//!
//! - A table write that leaves the entry unchanged does nothing. One that
//!   leaves it unmasked (MSI-X enabled, Function Mask clear) updates its
//!   route: a GSI is allocated at the vector's first unmask, the whole table
//!   of unmasked routes is sent (KVM_SET_GSI_ROUTING, every time) and the
//!   irqfd is assigned if it is not. A write that masks the entry is not
//!   acted on ("only update routes if the entry is not masked"): the irqfd
//!   stays assigned and interrupts are delivered while masked.
//! - Message Control: when Enable or Function Mask changes and the result
//!   is enabled and not function-masked, every entry is updated (an entry
//!   with a GSI costs one KVM_SET_GSI_ROUTING each; a masked one has its
//!   irqfd deassigned); otherwise every assigned irqfd is deassigned
//!   (`disable`). So setting the Function Mask deassigns every irqfd and
//!   clearing it costs a routing call per entry with a GSI. The state
//!   starts function-masked and disabled.
//! - The PBA's bits for a VFIO vector come from the device (the model's
//!   software source), which never sees a mask.

use crate::qemu::fill_pba;
use crate::state::PeerState;
use msix_rig::Error;
use vfio_vectors::MsixSource;

/// `MsiInterruptGroup::update(index, config, masked, set_gsi = true)`.
fn update(st: &mut PeerState, v: u16, masked: bool) -> Result<(), Error> {
    if masked && st.vector(v)?.gsi.is_none() {
        return Ok(());
    }
    if masked {
        st.detach(v)?;
        st.unstage(v)?;
    } else {
        st.stage(v)?;
    }
    st.commit()?;
    if !masked {
        st.attach(v)?;
    }
    Ok(())
}

/// A guest write to the table.
pub fn write_table(st: &mut PeerState, offset: u64, data: &[u8]) -> Result<(), Error> {
    let Some(w) = st.table.write(offset, data) else {
        return Ok(());
    };
    if w.old == w.new {
        return Ok(());
    }
    if st.table.enabled && !st.table.function_mask && !w.is_masked() {
        update(st, w.vector, false)?;
    }
    Ok(())
}

/// A config write of Message Control (`set_msg_ctl`, then the VFIO side).
pub fn write_message_control(st: &mut PeerState, value: u16) -> Result<(), Error> {
    let (old_masked, old_enabled) = st.table.set_message_control(value);
    let (masked, enabled) = (st.table.function_mask, st.table.enabled);
    if old_masked != masked || old_enabled != enabled {
        if enabled && !masked {
            for v in 0..st.table.len() {
                let entry_masked = st.table.masked(v);
                update(st, v, entry_masked)?;
            }
        } else if old_enabled || !old_masked {
            for v in 0..st.table.len() {
                st.detach(v)?;
            }
        }
    }
    // Pending bits are only ever set for interrupts cloud-hypervisor emulates
    // itself, never for a VFIO vector: nothing to inject on Function Mask
    // clear.
    if !old_enabled && enabled {
        st.enable_device(1)?;
    } else if old_enabled && !enabled {
        st.disable_device()?;
    }
    Ok(())
}

/// A PBA read, sent to the device.
pub fn read_pba(st: &PeerState, offset: u64, data: &mut [u8]) -> Result<(), Error> {
    let bits: Vec<bool> = (0..st.source.vector_count())
        .map(|v| st.source.pending(v))
        .collect::<Result<_, _>>()?;
    fill_pba(&bits, offset, data);
    Ok(())
}
