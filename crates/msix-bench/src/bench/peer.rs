//! Models of what the peer VMMs do with a VFIO device's MSI-X table, run as
//! alternative MMIO handlers over the same test guest, routing table, irqfds
//! and software source as our accelerator, so that they execute exactly the
//! same guest programs.
//!
//! Every peer traps the whole table (no memslot, no ioeventfd): each guest
//! read and write of the table exits to userspace. What differs is what the
//! VMM then does in KVM. Each model below names the public source file and
//! the behaviour it follows (read, not copied; see `docs/performance.md`):
//!
//! - [`PeerModel::QemuLike`]: QEMU `hw/vfio/pci.c` (`vfio_msix_vector_release`
//!   switches the VFIO trigger of a masked vector from the KVM irqfd to a
//!   userspace eventfd with `VFIO_DEVICE_SET_IRQS`; `vfio_msix_vector_do_use`
//!   on unmask updates the KVM MSI route, calls `kvm_irqchip_commit_routes`,
//!   which issues KVM_SET_GSI_ROUTING unconditionally, and switches the
//!   trigger back) and `hw/pci/msix.c` (`msix_handle_mask_update`: a message
//!   that arrived while masked sets the PBA bit and is sent once on unmask).
//!   We cannot re-point a VFIO trigger here, so the switch is modelled by its
//!   KVM-side equivalent: the irqfd is deassigned on mask and assigned on
//!   unmask (the eventfd counts while detached, and KVM injects that count
//!   once at assign, exactly QEMU's one pending delivery).
//! - [`PeerModel::CloudHypervisorLike`]: cloud-hypervisor `pci/src/msix.rs`
//!   (`MsixConfig::write_table` updates the route only when the entry changed
//!   and is unmasked, and then `vmm/src/interrupt.rs` rewrites the whole
//!   routing table with KVM_SET_GSI_ROUTING; a write that masks an entry is
//!   not acted on) with `pci/src/vfio.rs` forwarding table writes to it. The
//!   irqfd stays attached while the guest believes the vector masked:
//!   interrupts are delivered while masked and nothing is ever pending.
//! - [`PeerModel::DragonballLike`]: Dragonball `dbs_pci/src/msix.rs`
//!   (`MsixState::write_table`: any address/data dword write on an enabled
//!   function calls `update`, which in `dbs_interrupt` rewrites the whole
//!   routing table; a Vector Control change calls the group's `mask`/`unmask`,
//!   which deassign/assign the KVM irqfd; the PBA reads the eventfd state).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use irqfd_routes::{
    eventfd_drain, eventfd_pending, Gsi, GsiRouting, IrqchipRoutes, Irqfd, MsiRouteTable,
};
use msix_hypervisor::{CountingVm, KvmVm, MsixVm};
use msix_model::{BarOffset, Change, MsixModel};
use serde::Serialize;
use testvm::{MmioHandler, TestVm, VmConfig};
use vfio_vectors::software::SoftwareSource;
use vfio_vectors::MsixSource;

use crate::rig::BAR_GPA;
use crate::Error;

/// Which peer VMM's MSI-X handling a [`PeerDevice`] models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PeerModel {
    /// QEMU: trigger switched on every mask and unmask, routes committed on
    /// every unmask, exact pending semantics.
    QemuLike,
    /// cloud-hypervisor: routing table rewritten on every unmask, per-vector
    /// mask not acted on.
    CloudHypervisorLike,
    /// Dragonball: irqfd detached on mask and attached on unmask, whole
    /// routing table rewritten on every address/data dword write.
    DragonballLike,
}

impl PeerModel {
    /// Every peer model, in report order.
    pub const ALL: [PeerModel; 3] = [
        PeerModel::QemuLike,
        PeerModel::CloudHypervisorLike,
        PeerModel::DragonballLike,
    ];

    /// The name used in reports (`qemu-like`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PeerModel::QemuLike => "qemu-like",
            PeerModel::CloudHypervisorLike => "cloud-hypervisor-like",
            PeerModel::DragonballLike => "dragonball-like",
        }
    }
}

impl fmt::Display for PeerModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One vector's KVM side: its GSI and its irqfd.
#[derive(Debug)]
struct PeerVector {
    gsi: Gsi,
    irqfd: Irqfd,
}

#[derive(Debug)]
struct PeerState {
    msix: MsixModel,
    hv: Arc<dyn MsixVm>,
    routing: GsiRouting,
    source: SoftwareSource,
    vectors: Vec<PeerVector>,
    /// The first error met while handling a guest access (a guest cannot
    /// make the device panic; the bench reports it instead).
    last_error: Option<String>,
}

/// A trapped MSI-X table handled the way a peer VMM handles it.
#[derive(Debug)]
pub struct PeerDevice {
    model: PeerModel,
    table_gpa: u64,
    table_len: u64,
    pba_gpa: u64,
    pba_len: u64,
    state: Mutex<PeerState>,
}

impl PeerDevice {
    /// A device of `vectors` entries on `source`, its table at `table_gpa`
    /// and PBA at `pba_gpa`, with one GSI allocated per vector (allocation
    /// costs no ioctl; routes reach KVM only on commit).
    pub fn new(
        model: PeerModel,
        vm: &TestVm,
        source: SoftwareSource,
        hv: Arc<dyn MsixVm>,
        table_gpa: u64,
        pba_gpa: u64,
    ) -> Result<PeerDevice, Error> {
        let vector_count = source.vector_count();
        let pba_offset = u32::try_from(pba_gpa - BAR_GPA)
            .map_err(|_| Error::Check(format!("PBA offset of {pba_gpa:#x} too large")))?;
        let table_offset = u32::try_from(table_gpa - BAR_GPA)
            .map_err(|_| Error::Check(format!("table offset of {table_gpa:#x} too large")))?;
        let msix = MsixModel::new(
            vector_count,
            BarOffset::new(0, table_offset),
            BarOffset::new(0, pba_offset),
        )
        .map_err(|e| Error::Check(format!("MSI-X model: {e}")))?;
        let _ = vm;
        let routing = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)?;
        let vectors = (0..vector_count)
            .map(|_| {
                Ok(PeerVector {
                    gsi: routing.allocate()?,
                    irqfd: Irqfd::new(hv.clone()),
                })
            })
            .collect::<Result<Vec<_>, irqfd_routes::Error>>()?;
        Ok(PeerDevice {
            model,
            table_gpa,
            table_len: msix.table_len(),
            pba_gpa,
            pba_len: msix.pba_len(),
            state: Mutex::new(PeerState {
                msix,
                hv,
                routing,
                source,
                vectors,
                last_error: None,
            }),
        })
    }

    /// The model this device follows.
    pub fn model(&self) -> PeerModel {
        self.model
    }

    fn lock(&self) -> MutexGuard<'_, PeerState> {
        // Every update leaves the state consistent between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A config-space write of Message Control (what the VMM's PCI config
    /// handler forwards).
    pub fn write_message_control(&self, value: u16) -> Result<(), Error> {
        let mut state = self.lock();
        let changes = state.msix.write_message_control(value);
        state.apply(self.model, &changes)
    }

    /// The first error met while handling a guest access, if any.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let state = self.lock();
        data.fill(0);
        if self.model == PeerModel::CloudHypervisorLike {
            // Its PBA only holds bits of interrupts it emulated itself; a
            // VFIO vector is never pending there.
            return;
        }
        for (byte, value) in data.iter_mut().enumerate() {
            let first = (offset + byte as u64) * 8;
            for bit in 0..8u64 {
                let Ok(vector) = u16::try_from(first + bit) else {
                    continue;
                };
                let masked = state.msix.is_masked(vector).unwrap_or(false);
                let pending = masked
                    && state
                        .source
                        .trigger(vector)
                        .ok()
                        .is_some_and(|fd| eventfd_pending(fd).unwrap_or(false));
                if pending {
                    *value |= 1 << bit;
                }
            }
        }
    }
}

impl PeerState {
    fn vector(&mut self, vector: u16) -> Result<(&mut PeerVector, &SoftwareSource), Error> {
        let v = self
            .vectors
            .get_mut(usize::from(vector))
            .ok_or_else(|| Error::Check(format!("vector {vector} out of range")))?;
        Ok((v, &self.source))
    }

    /// Sends the whole routing table with `vector`'s current message, even
    /// when nothing changed: the peers do not compare before committing.
    fn commit_route(&mut self, vector: u16) -> Result<(), Error> {
        let entry = self
            .msix
            .entry(vector)
            .map_err(|e| Error::Check(format!("entry {vector}: {e}")))?;
        let message = entry.message();
        let gsi = self.vector(vector)?.0.gsi;
        self.routing.stage(
            gsi,
            irqfd_routes::MsiMessage::new(message.address, message.data),
        )?;
        // One KVM_SET_GSI_ROUTING of the whole table, changed or not.
        self.hv
            .set_gsi_routing(&self.routing.entries())
            .map_err(|e| Error::Check(format!("KVM_SET_GSI_ROUTING: {e}")))?;
        Ok(())
    }

    fn attach(&mut self, vector: u16) -> Result<(), Error> {
        let (v, source) = self.vector(vector)?;
        let trigger = source.trigger(vector)?;
        let newly = !v.irqfd.is_attached();
        v.irqfd.attach(trigger, v.gsi)?;
        if newly {
            // KVM injected the count accumulated while detached at assign
            // (one delivery) but left it in the eventfd.
            eventfd_drain(trigger)?;
        }
        Ok(())
    }

    fn detach(&mut self, vector: u16) -> Result<(), Error> {
        let (v, source) = self.vector(vector)?;
        v.irqfd.detach(source.trigger(vector)?)?;
        Ok(())
    }

    fn is_masked(&self, vector: u16) -> bool {
        self.msix.is_masked(vector).unwrap_or(true)
    }

    fn apply(&mut self, model: PeerModel, changes: &[Change]) -> Result<(), Error> {
        for change in changes {
            match *change {
                Change::Enabled => {
                    let count = self.source.vector_count();
                    self.source.enable(count)?;
                }
                Change::Disabled => {
                    for vector in 0..self.source.vector_count() {
                        self.detach(vector)?;
                    }
                    self.source.disable()?;
                }
                Change::Masked { vector } => match model {
                    // QEMU: SET_IRQS to the userspace eventfd; Dragonball:
                    // irqfd deassign. Both stop delivery and keep the message.
                    PeerModel::QemuLike | PeerModel::DragonballLike => self.detach(vector)?,
                    // cloud-hypervisor: a masked entry is skipped.
                    PeerModel::CloudHypervisorLike => {}
                },
                Change::Unmasked { vector } => match model {
                    PeerModel::QemuLike | PeerModel::CloudHypervisorLike => {
                        self.commit_route(vector)?;
                        self.attach(vector)?;
                    }
                    // The route was committed with each address/data write.
                    PeerModel::DragonballLike => self.attach(vector)?,
                },
                Change::MessageChanged { vector, .. } => match model {
                    // QEMU picks the message up at the next unmask.
                    PeerModel::QemuLike => {}
                    PeerModel::CloudHypervisorLike => {
                        if !self.is_masked(vector) {
                            self.commit_route(vector)?;
                            self.attach(vector)?;
                        }
                    }
                    // Handled per dword write in `write_table`.
                    PeerModel::DragonballLike => {}
                },
            }
        }
        Ok(())
    }

    fn write_table(&mut self, model: PeerModel, offset: u64, data: &[u8]) -> Result<(), Error> {
        let changes = self.msix.write_table(offset, data);
        self.apply(model, &changes)?;
        // Dragonball updates (and commits) the route on every address/data
        // dword write of an enabled function, changed or not.
        if model == PeerModel::DragonballLike
            && self.msix.is_enabled()
            && offset % 16 < 12
            && matches!(data.len(), 4 | 8)
        {
            let vector = u16::try_from(offset / 16)
                .map_err(|_| Error::Check(format!("table offset {offset:#x}")))?;
            self.commit_route(vector)?;
        }
        Ok(())
    }
}

impl MmioHandler for PeerDevice {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            self.lock().msix.read_table(addr - self.table_gpa, data);
            true
        } else if (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr) {
            self.read_pba(addr - self.pba_gpa, data);
            true
        } else {
            false
        }
    }

    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_len).contains(&addr) {
            let mut state = self.lock();
            if let Err(e) = state.write_table(self.model, addr - self.table_gpa, data) {
                state.last_error.get_or_insert_with(|| e.to_string());
            }
            true
        } else {
            // PBA writes are ignored (read-only); other addresses are not ours.
            (self.pba_gpa..self.pba_gpa + self.pba_len).contains(&addr)
        }
    }
}

/// A guest with one trapped MSI-X device handled by a peer model: the
/// counterpart of [`crate::rig::Rig`]. Fields drop device first, then guest.
#[derive(Debug)]
pub struct PeerRig {
    /// The device model.
    pub device: Arc<PeerDevice>,
    /// The device's interrupt source (shared with the device).
    pub source: SoftwareSource,
    /// The VM's hypervisor calls, counted.
    pub hv: Arc<CountingVm<KvmVm>>,
    /// The guest.
    pub vm: TestVm,
    /// Guest physical address of the table.
    pub table_gpa: u64,
}

impl PeerRig {
    /// Boots a guest and wires a `vectors`-entry device handled by `model`.
    pub fn new(model: PeerModel, vectors: u16, watchdog: Duration) -> Result<PeerRig, Error> {
        let vm = TestVm::new(VmConfig {
            vcpus: 1,
            watchdog,
            ..VmConfig::default()
        })?;
        let hv = Arc::new(CountingVm::new(KvmVm::new(vm.vm().clone())));
        let source = SoftwareSource::new(vectors)?;
        let table_gpa = BAR_GPA;
        // The PBA on the page after the table, as our accelerator lays it out.
        let table_len = u64::from(vectors) * 16;
        let pba_gpa = BAR_GPA + table_len.div_ceil(4096) * 4096;
        let device = Arc::new(PeerDevice::new(
            model,
            &vm,
            source.clone(),
            hv.clone(),
            table_gpa,
            pba_gpa,
        )?);
        vm.set_mmio_handler(device.clone());
        Ok(PeerRig {
            device,
            source,
            hv,
            vm,
            table_gpa,
        })
    }
}

impl Drop for PeerRig {
    fn drop(&mut self) {
        self.vm.stop_vcpus();
    }
}
