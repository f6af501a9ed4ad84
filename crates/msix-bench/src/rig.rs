//! A test rig: a real KVM guest with one accelerated MSI-X device on the
//! software source, wired as a VMM would wire it.

use std::sync::Arc;
use std::time::Duration;

use irqfd_routes::{GsiRouting, IrqchipRoutes, SharedRouting};
use msix_accel::{AccelConfig, AccelEvent, EventLog, MsixAccelerator, Policy, ServiceThread};
use msix_hypervisor::{CountingVm, FaultyVm, IoctlCounts, KvmVm};
use testvm::{MmioHandler, TestVm, VmConfig};

use crate::Error;
use vfio_vectors::software::SoftwareSource;

/// Guest physical address of the device's MSI-X BAR.
pub const BAR_GPA: u64 = 0xFE00_0000;
/// Memslot of the table shadow (testvm's RAM is slot 0).
pub const TABLE_MEMSLOT: u32 = 1;

/// The hypervisor stack of a rig: KVM, with faults injectable, every call
/// counted (injected failures included).
pub type RigVm = CountingVm<FaultyVm<KvmVm>>;

/// How to build a rig.
#[derive(Clone, Copy, Debug)]
pub struct RigConfig {
    /// MSI-X table size.
    pub vectors: u16,
    /// Guest vCPUs.
    pub vcpus: u8,
    /// Fast-path policy.
    pub policy: Policy,
    /// Whether the software source can mask vectors itself.
    pub maskable: bool,
    /// Watchdog for every wait on the guest.
    pub watchdog: Duration,
    /// KVM_CAP_X2APIC_API as cloud-hypervisor enables it (see
    /// [`testvm::VmConfig::x2apic_api`]).
    pub x2apic_api: bool,
}

impl Default for RigConfig {
    fn default() -> Self {
        RigConfig {
            vectors: 8,
            vcpus: 1,
            policy: Policy::Fast,
            maskable: false,
            watchdog: Duration::from_secs(10),
            x2apic_api: true,
        }
    }
}

struct AccelMmio(Arc<MsixAccelerator>);

impl MmioHandler for AccelMmio {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        self.0.mmio_read(addr, data)
    }
    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        self.0.mmio_write(addr, data)
    }
}

/// A guest, an accelerated device on a software source, and the service
/// thread. Fields drop in order: service, accelerator, then the guest.
#[derive(Debug)]
pub struct Rig {
    service: Option<ServiceThread>,
    /// The accelerator.
    pub accel: Arc<MsixAccelerator>,
    /// The device's interrupt source (a clone shared with the accelerator).
    pub source: SoftwareSource,
    /// The VM's routing table.
    pub routes: SharedRouting,
    /// The VM's hypervisor calls: counted, and failable on purpose.
    pub hv: Arc<RigVm>,
    /// What the accelerator reported.
    pub events: Arc<EventLog>,
    /// The guest.
    pub vm: TestVm,
    /// Guest physical address of the table.
    pub table_gpa: u64,
    /// Guest physical address of the PBA.
    pub pba_gpa: u64,
}

impl Rig {
    /// Boots the guest and wires the device.
    pub fn new(config: RigConfig) -> Result<Rig, Error> {
        let vm = TestVm::new(VmConfig {
            vcpus: config.vcpus,
            watchdog: config.watchdog,
            x2apic_api: config.x2apic_api,
        })?;
        let hv = Arc::new(CountingVm::new(FaultyVm::new(KvmVm::new(vm.vm().clone()))));
        let routes = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)?.into_shared();
        let source = if config.maskable {
            SoftwareSource::maskable(config.vectors)?
        } else {
            SoftwareSource::new(config.vectors)?
        };
        let accel_config = AccelConfig::new(config.vectors, 0, TABLE_MEMSLOT)
            .with_policy(config.policy)
            .with_source_masking(config.maskable);
        let table_gpa = BAR_GPA + u64::from(accel_config.table.offset);
        let pba_gpa = BAR_GPA + u64::from(accel_config.pba.offset);
        let events = Arc::new(EventLog::new());
        let accel = Arc::new(MsixAccelerator::new(
            hv.clone(),
            routes.clone(),
            Box::new(source.clone()),
            accel_config,
            events.clone(),
        )?);
        // The servicer first: a table under `fast` needs one.
        let service = ServiceThread::spawn(std::slice::from_ref(&accel))?;
        accel.place(table_gpa, pba_gpa)?;
        vm.set_mmio_handler(Arc::new(AccelMmio(accel.clone())));
        Ok(Rig {
            service: Some(service),
            accel,
            source,
            routes,
            hv,
            events,
            vm,
            table_gpa,
            pba_gpa,
        })
    }

    /// Guest physical address of entry `e`'s dword at `offset` (0, 4, 8, 12).
    pub fn entry(&self, e: u16, offset: u64) -> u64 {
        self.table_gpa + u64::from(e) * 16 + offset
    }

    /// The hypervisor calls made so far.
    pub fn ioctls(&self) -> IoctlCounts {
        self.hv.counts()
    }

    /// The fault injector under the counters.
    pub fn faults(&self) -> &FaultyVm<KvmVm> {
        self.hv.inner()
    }

    /// Takes the events the accelerator reported so far.
    pub fn take_events(&self) -> Vec<AccelEvent> {
        self.events.take()
    }

    /// Stops the service thread (a table under `fast` is then placed again
    /// under `strict`, as the accelerator does without a servicer).
    pub fn stop_service(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop();
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.stop_service();
        self.vm.stop_vcpus();
    }
}
