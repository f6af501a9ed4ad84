//! [`PeerDevice`]: a trapped MSI-X table, PBA and Message Control handled
//! the way a peer VMM handles them.

use std::sync::{Arc, Mutex};

use testvm::MmioHandler;

use msix_rig::Error;

use crate::model::PeerModel;
use crate::state::{lock, record, PeerState};
use crate::{cloud_hypervisor, crosvm, dragonball, qemu};

/// A trapped MSI-X table handled the way a peer VMM handles it.
#[derive(Debug)]
pub struct PeerDevice {
    pub(crate) model: PeerModel,
    pub(crate) table_gpa: u64,
    pub(crate) table_len: u64,
    pub(crate) pba_gpa: u64,
    pub(crate) pba_len: u64,
    pub(crate) state: Arc<Mutex<PeerState>>,
}

impl PeerDevice {
    /// The model this device follows.
    pub fn model(&self) -> PeerModel {
        self.model
    }

    /// A config-space write of Message Control (what the VMM's PCI config
    /// handler forwards).
    pub fn write_message_control(&self, value: u16) -> Result<(), Error> {
        let mut state = lock(&self.state);
        state.message_control = value;
        match self.model {
            PeerModel::QemuLike => qemu::write_message_control(&mut state, value),
            PeerModel::CloudHypervisorLike => {
                cloud_hypervisor::write_message_control(&mut state, value)
            }
            PeerModel::DragonballLike => dragonball::write_message_control(&mut state, value),
            PeerModel::CrosvmLike => crosvm::write_message_control(&mut state, value),
        }
    }

    /// Message Control as the guest reads it from config space: the value
    /// it last wrote (0 at reset, Function Mask included, whatever the
    /// model keeps inside: cloud-hypervisor's state starts function-masked
    /// while the device's register reads clear).
    pub fn message_control(&self) -> u16 {
        lock(&self.state).message_control
    }

    /// Guest physical address of the PBA.
    pub fn pba_gpa(&self) -> u64 {
        self.pba_gpa
    }

    /// VFIO_DEVICE_SET_IRQS-like calls made so far.
    pub fn set_irqs(&self) -> u64 {
        lock(&self.state).set_irqs
    }

    /// The first error met while handling a guest access, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.state).last_error.clone()
    }
}

impl MmioHandler for PeerDevice {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            let state = lock(&self.state);
            let offset = addr - self.table_gpa;
            match self.model {
                PeerModel::DragonballLike => state.table.read_bytes(offset, data),
                _ => state.table.read(offset, data),
            }
            true
        } else if (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr) {
            let mut state = lock(&self.state);
            let offset = addr - self.pba_gpa;
            let result = match self.model {
                PeerModel::QemuLike => qemu::read_pba(&state, offset, data),
                PeerModel::CloudHypervisorLike => cloud_hypervisor::read_pba(&state, offset, data),
                PeerModel::DragonballLike => dragonball::read_pba(&state, offset, data),
                PeerModel::CrosvmLike => crosvm::read_pba(&state, offset, data),
            };
            record(&mut state, result);
            true
        } else {
            false
        }
    }

    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            let mut state = lock(&self.state);
            let offset = addr - self.table_gpa;
            let result = match self.model {
                PeerModel::QemuLike => qemu::write_table(&mut state, offset, data),
                PeerModel::CloudHypervisorLike => {
                    cloud_hypervisor::write_table(&mut state, offset, data)
                }
                PeerModel::DragonballLike => dragonball::write_table(&mut state, offset, data),
                PeerModel::CrosvmLike => crosvm::write_table(&mut state, offset, data),
            };
            record(&mut state, result);
            true
        } else {
            // PBA writes are ignored (read-only); other addresses are not ours.
            (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr)
        }
    }
}
