//! [`PeerModel`]: which peer VMM a device follows, and its name in reports.

use std::fmt;

use serde::Serialize;

/// Which peer VMM's MSI-X handling a [`crate::PeerDevice`] models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PeerModel {
    /// QEMU (`hw/vfio/pci.c`, `hw/pci/msix.c`).
    QemuLike,
    /// cloud-hypervisor (`pci/src/msix.rs`, `pci/src/vfio.rs`,
    /// `vmm/src/interrupt.rs`).
    CloudHypervisorLike,
    /// Dragonball (`dbs-pci` `msix.rs`, `dbs-interrupt` `kvm/msi_irq.rs`).
    DragonballLike,
    /// crosvm (`devices/src/pci/vfio_pci.rs`, `devices/src/pci/msix.rs`).
    CrosvmLike,
}

impl PeerModel {
    /// Every peer model, in report order.
    pub const ALL: [PeerModel; 4] = [
        PeerModel::QemuLike,
        PeerModel::CloudHypervisorLike,
        PeerModel::DragonballLike,
        PeerModel::CrosvmLike,
    ];

    /// The name used in reports (`qemu-like`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PeerModel::QemuLike => "qemu-like",
            PeerModel::CloudHypervisorLike => "cloud-hypervisor-like",
            PeerModel::DragonballLike => "dragonball-like",
            PeerModel::CrosvmLike => "crosvm-like",
        }
    }

    /// Whether a masked vector's messages go to a userspace eventfd that a
    /// thread of the VMM handles.
    pub(crate) fn has_worker(self) -> bool {
        matches!(self, PeerModel::QemuLike | PeerModel::CrosvmLike)
    }
}

impl fmt::Display for PeerModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
