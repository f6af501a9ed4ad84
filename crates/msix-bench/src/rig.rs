//! A test rig: a real KVM guest with one accelerated MSI-X device on the
//! software source, wired as a VMM would wire it.

use std::sync::Arc;
use std::time::Duration;

use irqfd_routes::{GsiRouting, IoctlCounters, IrqchipRoutes, SharedRouting};
use msix_accel::{AccelConfig, MsixAccelerator, Policy, ServiceThread};
use testvm::{MmioHandler, TestVm, VmConfig};

use crate::Error;
use vfio_vectors::software::SoftwareSource;

/// Guest physical address of the device's MSI-X BAR.
pub const BAR_GPA: u64 = 0xFE00_0000;
/// Memslot of the table shadow (testvm's RAM is slot 0).
pub const TABLE_MEMSLOT: u32 = 1;

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
}

impl Default for RigConfig {
    fn default() -> Self {
        RigConfig {
            vectors: 8,
            vcpus: 1,
            policy: Policy::Fast,
            maskable: false,
            watchdog: Duration::from_secs(10),
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
    /// KVM ioctl counters of routes, irqfds, ioeventfds and memslots.
    pub ioctls: Arc<IoctlCounters>,
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
        })?;
        let ioctls = Arc::new(IoctlCounters::default());
        let routes = GsiRouting::new(
            vm.vm().clone(),
            IrqchipRoutes::X86KernelIrqchip,
            ioctls.clone(),
        )?
        .into_shared();
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
        let accel = Arc::new(MsixAccelerator::new(
            vm.vm().clone(),
            routes.clone(),
            Box::new(source.clone()),
            accel_config,
            ioctls.clone(),
        )?);
        accel.place(table_gpa, pba_gpa)?;
        vm.set_mmio_handler(Arc::new(AccelMmio(accel.clone())));
        let service = ServiceThread::spawn(std::slice::from_ref(&accel))?;
        Ok(Rig {
            service: Some(service),
            accel,
            source,
            routes,
            ioctls,
            vm,
            table_gpa,
            pba_gpa,
        })
    }

    /// Guest physical address of entry `e`'s dword at `offset` (0, 4, 8, 12).
    pub fn entry(&self, e: u16, offset: u64) -> u64 {
        self.table_gpa + u64::from(e) * 16 + offset
    }

    /// Stops the service thread (absorbed unmasks then wait for a
    /// synchronous exit or an explicit service call).
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
