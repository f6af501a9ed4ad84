//! QEMU-like, from QEMU `hw/vfio/pci.c` and `hw/pci/msix.c` (KVM with the
//! in-kernel irqchip, a device without VFIO's per-vector mask support):
//!
//! - A vector is masked when its Mask bit, the Function Mask or a clear
//!   MSI-X Enable says so (`msix_is_masked`); a change of that state calls
//!   the release or use notifier (`msix_handle_mask_update`).
//! - Release (`vfio_msix_vector_release`): with a KVM route, the KVM setup
//!   stays and the VFIO trigger is re-pointed to the userspace eventfd
//!   (`interrupt`) with VFIO_DEVICE_SET_IRQS.
//! - Use (`vfio_msix_vector_do_use`): the first time, the route is added,
//!   committed (KVM_SET_GSI_ROUTING) and the irqfd assigned on
//!   `kvm_interrupt`; afterwards the route is updated and committed
//!   (`vfio_update_kvm_msi_virq` -> `kvm_irqchip_commit_routes`: a
//!   KVM_SET_GSI_ROUTING on every unmask). Then the trigger is re-pointed
//!   back to `kvm_interrupt` (SET_IRQS), the vector's bit leaves
//!   `vdev->msix->pending` and, when none is left, PBA emulation is
//!   switched off. Then `msix_handle_mask_update` sends a message the
//!   emulated PBA held (`msix_notify`: KVM_SIGNAL_MSI).
//! - A message on the userspace eventfd (`vfio_msi_interrupt`, main loop):
//!   if masked, the bit is set in `vdev->msix->pending` and PBA emulation is
//!   switched on; then `msix_notify` sets the emulated PBA bit if masked or
//!   sends the message.
//! - PBA: `vfio_msix_setup` disables QEMU's PBA region, so the guest reads
//!   the device's own PBA through the BAR mapping without an exit; only
//!   while a masked vector has fired through QEMU is it emulated (the region
//!   enabled: reads exit and see `msix_pba`). Modelled by a read-only
//!   memslot of the device page, deleted and re-added
//!   (KVM_SET_USER_MEMORY_REGION) as QEMU's memory topology changes.
//! - MSI-X enable (`vfio_msix_enable`): vectors already unmasked are used
//!   (one batched commit); then one SET_IRQS (with vectors, or
//!   `vfio_enable_msix_no_vec`).
//!
//! The software source cannot model what a real SET_IRQS costs (the host's
//! IRQ teardown and setup): here a re-point is a pointer swap. The
//! real-device comparison (`msix-bench --vfio`) is the authority on it.

use irqfd_routes::MsiRouteTable;

use crate::state::PeerState;
use msix_rig::Error;

fn effective_masked(st: &PeerState, v: u16) -> bool {
    !st.table.enabled || st.table.function_mask || st.table.masked(v)
}

/// The unmask path: `vfio_msix_vector_do_use` with a message, then the
/// pending message sent.
fn vector_use(st: &mut PeerState, v: u16) -> Result<(), Error> {
    st.vector(v)?.in_use = true;
    let first = st.vector(v)?.gsi.is_none();
    st.stage(v)?;
    st.commit()?;
    if first {
        st.attach(v)?;
    }
    st.set_trigger(v, false)?;
    st.vfio_pending[usize::from(v)] = false;
    if !st.vfio_pending.iter().any(|&p| p) {
        if let Some(page) = st.pba_page.as_mut() {
            page.map()?;
        }
    }
    let bit = &mut st.pba[usize::from(v)];
    if *bit {
        *bit = false;
        st.signal_msi(v)?;
    }
    Ok(())
}

/// The mask path: `vfio_msix_vector_release`.
fn vector_release(st: &mut PeerState, v: u16) -> Result<(), Error> {
    if st.vector(v)?.gsi.is_some() {
        st.set_trigger(v, true)?;
    }
    Ok(())
}

fn mask_update(st: &mut PeerState, v: u16, was_masked: bool) -> Result<(), Error> {
    let masked = effective_masked(st, v);
    match (was_masked, masked) {
        (false, true) => vector_release(st, v),
        (true, false) => vector_use(st, v),
        _ => Ok(()),
    }
}

/// A guest write to the table (`msix_table_mmio_write`).
pub fn write_table(st: &mut PeerState, offset: u64, data: &[u8]) -> Result<(), Error> {
    let v = (offset / 16) as u16;
    let was_masked = effective_masked(st, v);
    if st.table.write(offset, data).is_none() {
        return Ok(());
    }
    mask_update(st, v, was_masked)
}

/// A config write of Message Control (`vfio_pci_write_config`, then
/// `msix_write_config`).
pub fn write_message_control(st: &mut PeerState, value: u16) -> Result<(), Error> {
    let was: Vec<bool> = (0..st.table.len())
        .map(|v| effective_masked(st, v))
        .collect();
    let (was_masked_bit, was_enabled) = st.table.set_message_control(value);
    let was_function_masked = !was_enabled || was_masked_bit;
    let function_masked = !st.table.enabled || st.table.function_mask;
    if !was_enabled && st.table.enabled {
        // vfio_msix_enable: the unmasked vectors used in one batch.
        let used: Vec<u16> = (0..st.table.len())
            .filter(|&v| !effective_masked(st, v))
            .collect();
        for &v in &used {
            st.vector(v)?.in_use = true;
            st.stage(v)?;
        }
        if !used.is_empty() {
            st.commit()?;
        }
        for &v in &used {
            st.attach(v)?;
        }
        return st.enable_device(1);
    }
    if was_enabled && !st.table.enabled {
        // vfio_msix_disable: every used vector released, MSI-X disabled on
        // the device, the KVM routes and irqfds removed.
        for v in 0..st.table.len() {
            if st.vector(v)?.in_use {
                vector_release(st, v)?;
                st.detach(v)?;
                st.unstage(v)?;
                let vector = st.vector(v)?;
                vector.in_use = false;
                if let Some(gsi) = vector.gsi.take() {
                    st.routing.release(gsi)?;
                }
            }
        }
        st.pba.iter_mut().for_each(|b| *b = false);
        return st.disable_device();
    }
    if st.table.enabled && was_function_masked != function_masked {
        for v in 0..st.table.len() {
            mask_update(st, v, was[usize::from(v)])?;
        }
    }
    Ok(())
}

/// A message on vector `v`'s userspace eventfd (`vfio_msi_interrupt`).
pub fn user_event(st: &mut PeerState, v: u16) -> Result<(), Error> {
    if effective_masked(st, v) {
        st.vfio_pending[usize::from(v)] = true;
        if let Some(page) = st.pba_page.as_mut() {
            page.unmap()?;
        }
    }
    // msix_notify: only for a vector in use.
    if !st.vector(v)?.in_use {
        return Ok(());
    }
    if effective_masked(st, v) {
        st.pba[usize::from(v)] = true;
        Ok(())
    } else {
        st.signal_msi(v)
    }
}

/// A PBA read that exited: QEMU's emulated PBA (`msix_pba_mmio_read`).
pub fn read_pba(st: &PeerState, offset: u64, data: &mut [u8]) -> Result<(), Error> {
    fill_pba(&st.pba, offset, data);
    Ok(())
}

/// PBA bytes at `offset` from per-vector bits.
pub fn fill_pba(bits: &[bool], offset: u64, data: &mut [u8]) {
    data.fill(0);
    for (byte, value) in data.iter_mut().enumerate() {
        for bit in 0..8u64 {
            let v = (offset + byte as u64) * 8 + bit;
            if bits.get(v as usize).copied().unwrap_or(false) {
                *value |= 1 << bit;
            }
        }
    }
}
