//! The physical floor: what a Linux mask cycle costs on this host's KVM when
//! the VMM does nothing at all with it, built from the same real pieces our
//! fast path uses.
//!
//! - [`FloorKind::OneExit`] (`floor-1exit`): the table is shadowed by a
//!   read-only memslot (reads never exit), the unmask (a 4-byte write of 0
//!   to entry 0's Vector Control) is absorbed by an ioeventfd nobody
//!   services, and the mask write exits to an MMIO handler that does
//!   nothing but complete the access: 1 exit per Linux cycle, no work. No
//!   design that keeps the mask write visible to the VMM on upstream KVM
//!   can do less.
//! - [`FloorKind::Trap`] (`floor-trap`): no memslot, no ioeventfd; every
//!   access exits to the do-nothing handler: 3 exits per cycle.
//! - [`FloorKind::OneExitWake`] (`floor-1exit-wake`) and
//!   [`FloorKind::OneExitSpin`] (`floor-1exit-spin`): `floor-1exit` with a
//!   thread watching the unmask eventfd that does nothing with what it
//!   sees ([`super::floor_servicer`]), asleep until woken, or kept awake
//!   polling: what the wake-up of a servicer costs, apart from its work.
//!
//! Neither has MSI-X semantics (nothing is masked, nothing held): they have
//! a route and an irqfd for entry 0's vector, permanently attached, so that
//! an unmasked delivery's latency has its floor too.

use std::sync::Arc;
use std::time::Duration;

use irqfd_routes::{GsiRouting, IrqchipRoutes, Irqfd, MsiRouteTable};
use kvm_msix::TableShadow;
use msix_hypervisor::{CountingVm, KvmVm, MsixVm};
use testvm::{MmioHandler, TestVm, VmConfig};
use vfio_vectors::software::SoftwareSource;
use vfio_vectors::MsixSource;
use vmm_sys_util::eventfd::EventFd;

use super::floor_servicer::{FloorServicer, ServicerMode, ServicerShared};
use super::workload::{CallCounts, Target, VECTOR};
use crate::Error;
use msix_rig::clock::ClockedMmio;
use msix_rig::rig::{BAR_GPA, TABLE_MEMSLOT};

/// Which floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloorKind {
    /// Memslot + ioeventfd: 1 exit per Linux cycle.
    OneExit,
    /// Everything trapped: 3 exits per Linux cycle.
    Trap,
    /// [`FloorKind::OneExit`] with a do-nothing servicer woken by every
    /// absorbed unmask.
    OneExitWake,
    /// [`FloorKind::OneExit`] with a do-nothing servicer kept awake,
    /// polling the unmask eventfd.
    OneExitSpin,
}

impl FloorKind {
    /// Every floor, in report order.
    pub const ALL: [FloorKind; 4] = [
        FloorKind::OneExit,
        FloorKind::Trap,
        FloorKind::OneExitWake,
        FloorKind::OneExitSpin,
    ];

    /// `floor-1exit`, `floor-trap`, `floor-1exit-wake` or `floor-1exit-spin`.
    pub fn name(self) -> &'static str {
        match self {
            FloorKind::OneExit => "floor-1exit",
            FloorKind::Trap => "floor-trap",
            FloorKind::OneExitWake => "floor-1exit-wake",
            FloorKind::OneExitSpin => "floor-1exit-spin",
        }
    }

    /// Exits per Linux mask cycle, by construction.
    pub fn exits_per_cycle(self) -> u64 {
        match self {
            FloorKind::Trap => 3,
            _ => 1,
        }
    }

    /// The do-nothing servicer it adds, if any.
    fn servicer(self) -> Option<ServicerMode> {
        match self {
            FloorKind::OneExitWake => Some(ServicerMode::Wake),
            FloorKind::OneExitSpin => Some(ServicerMode::Spin),
            _ => None,
        }
    }
}

/// Completes every access to the table or PBA and does nothing else
/// (reads return zeros); with a servicer, notes the vCPU thread's CPU at
/// each write (the mask) for the servicer's placement count.
#[derive(Debug)]
struct NothingHandler {
    start: u64,
    end: u64,
    servicer: Option<Arc<ServicerShared>>,
}

impl MmioHandler for NothingHandler {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        data.fill(0);
        (self.start..self.end).contains(&addr)
    }
    fn mmio_write(&self, _vcpu: u8, addr: u64, _data: &[u8]) -> bool {
        if let Some(s) = &self.servicer {
            s.note_vcpu_cpu();
        }
        (self.start..self.end).contains(&addr)
    }
}

/// The read-only memslot over the table image; deleted before its pages
/// are released.
#[derive(Debug)]
struct Shadowed {
    hv: Arc<dyn MsixVm>,
    _shadow: TableShadow,
}

impl Drop for Shadowed {
    fn drop(&mut self) {
        // SAFETY: size 0 deletes the slot; no mapping is handed to KVM.
        let _ = unsafe { self.hv.set_readonly_memory(TABLE_MEMSLOT, BAR_GPA, 0, 0) };
    }
}

/// A guest whose table is handled by a floor. Fields drop in order: the
/// servicer (stopped), the memslot (deleted), the unmask ioeventfd, the irqfd, then the guest.
#[derive(Debug)]
pub struct FloorRig {
    kind: FloorKind,
    servicer: Option<FloorServicer>,
    _shadow: Option<Shadowed>,
    unmask: Option<EventFd>,
    irqfd: Irqfd,
    _routing: GsiRouting,
    source: SoftwareSource,
    hv: Arc<CountingVm<KvmVm>>,
    vm: TestVm,
}

/// Table entries of a floor's device (8, as every row's cycle device).
const FLOOR_VECTORS: u16 = 8;

impl FloorRig {
    /// Boots a guest and sets up the floor `kind` for an 8-entry table at
    /// the rows' BAR address, entry 0 programmed for [`VECTOR`].
    pub fn new(kind: FloorKind, watchdog: Duration) -> Result<FloorRig, Error> {
        let vm = TestVm::new(VmConfig {
            vcpus: 1,
            watchdog,
            ..VmConfig::default()
        })?;
        let hv = Arc::new(CountingVm::new(KvmVm::new(vm.vm().clone())));
        let table_len = u64::from(FLOOR_VECTORS) * 16;
        let mut source = SoftwareSource::new(FLOOR_VECTORS)?;
        source.enable(FLOOR_VECTORS)?;
        let routing = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)?;
        let gsi = routing.allocate()?;
        routing.stage(
            gsi,
            irqfd_routes::MsiMessage::new(TestVm::msi_address(0), u32::from(VECTOR)),
        )?;
        routing.commit()?;
        let mut irqfd = Irqfd::new(hv.clone());
        irqfd.attach(source.trigger(0)?, gsi)?;
        let (shadow, unmask) = match kind {
            FloorKind::Trap => (None, None),
            FloorKind::OneExit | FloorKind::OneExitWake | FloorKind::OneExitSpin => {
                let shadow_error = |e: kvm_msix::Error| Error::Check(format!("floor shadow: {e}"));
                let shadow = TableShadow::new(table_len).map_err(shadow_error)?;
                // Entry 0 as the guest programs it (reads are served from
                // here without an exit).
                shadow
                    .store_entry(0, [TestVm::msi_address(0) as u32, 0, u32::from(VECTOR), 0])
                    .map_err(shadow_error)?;
                // SAFETY: the pages belong to `shadow`, which the returned
                // `Shadowed` owns and which deletes the slot in its Drop
                // before the pages are released.
                unsafe {
                    hv.set_readonly_memory(
                        TABLE_MEMSLOT,
                        BAR_GPA,
                        shadow.size(),
                        shadow.host_address(),
                    )
                }
                .map_err(|e| Error::Check(format!("floor memslot: {e}")))?;
                let shadowed = Shadowed {
                    hv: hv.clone(),
                    _shadow: shadow,
                };
                let fd = EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(|e| Error::Check(format!("floor ioeventfd: {e}")))?;
                hv.register_ioeventfd(&fd, BAR_GPA + 12, 0)
                    .map_err(|e| Error::Check(format!("floor ioeventfd: {e}")))?;
                (Some(shadowed), Some(fd))
            }
        };
        let servicer = match (kind.servicer(), &unmask) {
            (Some(mode), Some(fd)) => Some(FloorServicer::spawn(mode, fd)?),
            _ => None,
        };
        vm.set_mmio_handler(Arc::new(ClockedMmio::new(Arc::new(NothingHandler {
            start: BAR_GPA,
            end: BAR_GPA + 0x2000,
            servicer: servicer.as_ref().map(FloorServicer::shared),
        }))));
        Ok(FloorRig {
            kind,
            servicer,
            _shadow: shadow,
            unmask,
            irqfd,
            _routing: routing,
            source,
            hv,
            vm,
        })
    }

    /// Which floor this is.
    pub fn kind(&self) -> FloorKind {
        self.kind
    }
}

impl Drop for FloorRig {
    fn drop(&mut self) {
        self.servicer = None;
        self.vm.stop_vcpus();
        if let Some(fd) = &self.unmask {
            let _ = self.hv.unregister_ioeventfd(fd, BAR_GPA + 12, 0);
        }
        if let Ok(fd) = self.source.trigger(0) {
            let _ = self.irqfd.detach(fd);
        }
    }
}

impl Target for FloorRig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn source(&self) -> &SoftwareSource {
        &self.source
    }
    fn calls(&self) -> CallCounts {
        CallCounts::new(self.hv.counts(), 0)
    }
    fn entry(&self, e: u16, offset: u64) -> u64 {
        BAR_GPA + u64::from(e) * 16 + offset
    }
    fn pba(&self) -> u64 {
        BAR_GPA + 0x1000
    }
    fn write_message_control(&self, _value: u16) -> Result<(), Error> {
        // A floor has no MSI-X state: its route and irqfd are always live.
        Ok(())
    }
    fn settle(&self) -> Result<(), Error> {
        Ok(())
    }
    fn measuring(&self, on: bool) {
        if let Some(s) = &self.servicer {
            s.measuring(on);
        }
    }
    fn servicer_placement(&self) -> Option<[u64; 2]> {
        self.servicer.as_ref().map(|s| s.shared().placement())
    }
}
