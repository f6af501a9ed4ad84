//! A test rig: a real KVM guest with accelerated MSI-X devices on software
//! sources, wired as a VMM would wire them.

use std::sync::Arc;
use std::time::Duration;

use irqfd_routes::{GsiRouting, IrqchipRoutes, SharedRouting};
use msix_accel::{
    AccelConfig, AccelEvent, BarOffset, EventLog, MsixAccelerator, Policy, ServiceScheduling,
    ServiceThread,
};
use msix_hypervisor::{CountingVm, FaultyVm, IoctlCounts, KvmVm};
use testvm::{MmioHandler, TestVm, VmConfig};

use crate::Error;
use vfio_vectors::software::SoftwareSource;

/// Guest physical address of device 0's MSI-X BAR.
pub const BAR_GPA: u64 = 0xFE00_0000;
/// Distance between the BARs of consecutive devices (a 2048-entry table
/// and its PBA take 36 KiB).
pub const BAR_STRIDE: u64 = 0x10_0000;
/// Memslot of device 0's table shadow (testvm's RAM is slot 0); device k
/// uses `TABLE_MEMSLOT + k`.
pub const TABLE_MEMSLOT: u32 = 1;
/// Distance between consecutive BARs of one device when their size is not
/// given ([`RigLayout::bar_size`]): BAR `b` of device `k` is at
/// `BAR_GPA + k * BAR_STRIDE + b * BIR_STRIDE`.
pub const BIR_STRIDE: u64 = 0x2_0000;
/// Most devices a rig holds.
pub const MAX_DEVICES: u8 = 4;

/// Where each device's table and PBA sit: the capability's BAR indexes and
/// offsets, and optionally the size of every BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RigLayout {
    /// Table BIR and offset.
    pub table: BarOffset,
    /// PBA BIR and offset.
    pub pba: BarOffset,
    /// Size of each BAR (a power of two, at most [`BIR_STRIDE`]); BARs of
    /// one device are then packed back to back (BAR `b` at `b * bar_size`
    /// from the device's first), so BARs smaller than a page share one.
    /// None: BARs [`BIR_STRIDE`] apart.
    pub bar_size: Option<u64>,
}

impl RigLayout {
    /// Today's layout for `vectors` entries: table at BAR 0 offset 0, PBA
    /// in the same BAR on the next page boundary.
    pub fn standard(vectors: u16) -> Self {
        let config = AccelConfig::new(vectors, 0, 0);
        RigLayout {
            table: config.table,
            pba: config.pba,
            bar_size: None,
        }
    }

    /// Guest physical address of BAR `bir` of device `device`.
    pub fn bar_gpa(&self, device: u8, bir: u8) -> u64 {
        let span = self.bar_size.unwrap_or(BIR_STRIDE);
        BAR_GPA + u64::from(device) * BAR_STRIDE + u64::from(bir) * span
    }

    /// Guest physical address of device `device`'s table.
    pub fn table_gpa(&self, device: u8) -> u64 {
        self.bar_gpa(device, self.table.bir) + u64::from(self.table.offset)
    }

    /// Guest physical address of device `device`'s PBA.
    pub fn pba_gpa(&self, device: u8) -> u64 {
        self.bar_gpa(device, self.pba.bir) + u64::from(self.pba.offset)
    }

    /// Reports the BARs of the table and the PBA of device `device` to its
    /// accelerator, as a VMM does once the guest programmed them.
    pub fn place(&self, accel: &MsixAccelerator, device: u8) -> Result<(), Error> {
        accel.set_bar(self.table.bir, Some(self.bar_gpa(device, self.table.bir)))?;
        accel.set_bar(self.pba.bir, Some(self.bar_gpa(device, self.pba.bir)))?;
        Ok(())
    }
}

/// The hypervisor stack of a rig: KVM, with faults injectable, every call
/// counted (injected failures included).
pub type RigVm = CountingVm<FaultyVm<KvmVm>>;

/// How to build a rig.
#[derive(Clone, Copy, Debug)]
pub struct RigConfig {
    /// Devices in the VM, 1..=[`MAX_DEVICES`], sharing its routing table.
    pub devices: u8,
    /// MSI-X table size of each device.
    pub vectors: u16,
    /// Guest vCPUs.
    pub vcpus: u8,
    /// Fast-path policy.
    pub policy: Policy,
    /// Whether the software source can mask vectors itself.
    pub maskable: bool,
    /// A maskable source whose vector count is fixed while enabled (growing
    /// re-enables and forgets pending bits, as VFIO without dynamic MSI-X).
    pub fixed_size: bool,
    /// Watchdog for every wait on the guest.
    pub watchdog: Duration,
    /// KVM_CAP_X2APIC_API as cloud-hypervisor enables it (see
    /// [`testvm::VmConfig::x2apic_api`]).
    pub x2apic_api: bool,
    /// [`AccelConfig::unmask_coalescing`] of every device.
    pub unmask_coalescing: Duration,
    /// [`AccelConfig::unmask_batch`] of every device.
    pub unmask_batch: u16,
    /// [`AccelConfig::fast_entries`] of every device.
    pub fast_entries: u16,
    /// [`AccelConfig::unmask_polling`] of every device.
    pub unmask_polling: Duration,
    /// How the service thread is scheduled.
    pub service_scheduling: ServiceScheduling,
    /// [`AccelConfig::unmask_deferral`] of every device.
    pub unmask_deferral: Duration,
    /// Where every device's table and PBA sit; None: [`RigLayout::standard`].
    pub layout: Option<RigLayout>,
    /// [`AccelConfig::auto_pinned`] of every device.
    pub auto_pinned: Option<Policy>,
    /// [`AccelConfig::auto_recheck`] of every device.
    pub auto_recheck: Duration,
}

impl Default for RigConfig {
    fn default() -> Self {
        RigConfig {
            devices: 1,
            vectors: 8,
            vcpus: 1,
            policy: Policy::Fast,
            maskable: false,
            fixed_size: false,
            watchdog: Duration::from_secs(10),
            x2apic_api: true,
            unmask_coalescing: msix_accel::DEFAULT_UNMASK_COALESCING,
            unmask_batch: msix_accel::DEFAULT_UNMASK_BATCH,
            fast_entries: msix_accel::DEFAULT_FAST_ENTRIES,
            unmask_polling: msix_accel::DEFAULT_UNMASK_POLLING,
            service_scheduling: ServiceScheduling::default(),
            unmask_deferral: msix_accel::DEFAULT_UNMASK_DEFERRAL,
            layout: None,
            auto_pinned: None,
            auto_recheck: msix_accel::DEFAULT_AUTO_RECHECK,
        }
    }
}

impl RigConfig {
    /// The accelerator configuration of device `device` with `layout`.
    pub fn accel_config(&self, layout: &RigLayout, device: u8) -> AccelConfig {
        let config = AccelConfig::new(self.vectors, 0, TABLE_MEMSLOT + u32::from(device))
            .with_layout(layout.table, layout.pba)
            .with_policy(self.policy)
            .with_source_masking(self.maskable)
            .with_device_id(u32::from(device))
            .with_fast_entries(self.fast_entries)
            .with_unmask_coalescing(self.unmask_coalescing, self.unmask_batch)
            .with_unmask_polling(self.unmask_polling)
            .with_unmask_deferral(self.unmask_deferral)
            .with_auto_pinned(self.auto_pinned)
            .with_auto_recheck(self.auto_recheck);
        match layout.bar_size {
            Some(size) => config.with_table_bar_size(size),
            None => config,
        }
    }
}

/// The VM's MMIO exits go to whichever device claims the address: the MMIO
/// handler a VMM installs for its accelerated devices.
#[derive(Debug)]
pub struct AccelMmio(pub Vec<Arc<MsixAccelerator>>);

impl MmioHandler for AccelMmio {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        self.0.iter().any(|a| a.mmio_read(addr, data))
    }
    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        self.0.iter().any(|a| a.mmio_write(addr, data))
    }
}

/// One accelerated device of a rig.
#[derive(Debug)]
pub struct RigDevice {
    /// The accelerator.
    pub accel: Arc<MsixAccelerator>,
    /// Its interrupt source (a clone shared with the accelerator).
    pub source: SoftwareSource,
    /// What the accelerator reported.
    pub events: Arc<EventLog>,
    /// Guest physical address of the table.
    pub table_gpa: u64,
    /// Guest physical address of the PBA.
    pub pba_gpa: u64,
    /// Where its table and PBA sit.
    pub layout: RigLayout,
    /// Its index in the rig.
    pub index: u8,
}

impl RigDevice {
    /// Guest physical address of its BAR `bir` as placed at start.
    pub fn bar_gpa(&self, bir: u8) -> u64 {
        self.layout.bar_gpa(self.index, bir)
    }

    /// Guest physical address of entry `e`'s dword at `offset`.
    pub fn entry(&self, e: u16, offset: u64) -> u64 {
        self.table_gpa + u64::from(e) * 16 + offset
    }
}

/// A guest, accelerated devices on software sources sharing the VM's
/// routing table, and one service thread. Device 0 is also reachable
/// through the single-device fields. Fields drop in order: service,
/// accelerators, then the guest.
#[derive(Debug)]
pub struct Rig {
    service: Option<ServiceThread>,
    /// Device 0's accelerator.
    pub accel: Arc<MsixAccelerator>,
    /// Device 0's interrupt source (a clone shared with the accelerator).
    pub source: SoftwareSource,
    /// Every device, device 0 first.
    pub devices: Vec<RigDevice>,
    /// The VM's routing table, as the devices share it.
    pub routes: SharedRouting,
    /// The same table, for looking inside (allocated GSIs, staged routes).
    pub table: Arc<GsiRouting>,
    /// The VM's hypervisor calls: counted, and failable on purpose.
    pub hv: Arc<RigVm>,
    /// What device 0 reported.
    pub events: Arc<EventLog>,
    /// The guest.
    pub vm: TestVm,
    /// Guest physical address of device 0's table.
    pub table_gpa: u64,
    /// Guest physical address of device 0's PBA.
    pub pba_gpa: u64,
    /// How it was built.
    pub config: RigConfig,
}

impl Rig {
    /// Boots the guest and wires the devices.
    pub fn new(config: RigConfig) -> Result<Rig, Error> {
        if !(1..=MAX_DEVICES).contains(&config.devices) {
            return Err(Error::Check(format!(
                "{} devices: a rig holds 1 to {MAX_DEVICES}",
                config.devices
            )));
        }
        let vm = TestVm::new(VmConfig {
            vcpus: config.vcpus,
            watchdog: config.watchdog,
            x2apic_api: config.x2apic_api,
        })?;
        let hv = Arc::new(CountingVm::new(FaultyVm::new(KvmVm::new(vm.vm().clone()))));
        let table = Arc::new(GsiRouting::new(
            hv.clone(),
            IrqchipRoutes::X86KernelIrqchip,
        )?);
        let routes: SharedRouting = table.clone();
        let layout = config
            .layout
            .unwrap_or_else(|| RigLayout::standard(config.vectors));
        if layout
            .bar_size
            .is_some_and(|size| !size.is_power_of_two() || size > BIR_STRIDE)
        {
            return Err(Error::Check(format!(
                "BAR size {:?}: a power of two up to {BIR_STRIDE:#x}",
                layout.bar_size
            )));
        }
        let mut devices = Vec::new();
        for k in 0..config.devices {
            let source = if config.maskable && config.fixed_size {
                SoftwareSource::maskable_fixed(config.vectors)?
            } else if config.maskable {
                SoftwareSource::maskable(config.vectors)?
            } else {
                SoftwareSource::new(config.vectors)?
            };
            let accel_config = config.accel_config(&layout, k);
            let events = Arc::new(EventLog::new());
            let accel = Arc::new(MsixAccelerator::new(
                hv.clone(),
                routes.clone(),
                Box::new(source.clone()),
                accel_config,
                events.clone(),
            )?);
            devices.push(RigDevice {
                accel,
                source,
                events,
                table_gpa: layout.table_gpa(k),
                pba_gpa: layout.pba_gpa(k),
                layout,
                index: k,
            });
        }
        let accels: Vec<Arc<MsixAccelerator>> = devices.iter().map(|d| d.accel.clone()).collect();
        // The servicer first: a table under `fast` needs one.
        let service = ServiceThread::spawn_with(&accels, config.service_scheduling)?;
        for d in &devices {
            layout.place(&d.accel, d.index)?;
        }
        vm.set_mmio_handler(Arc::new(AccelMmio(accels)));
        let first = &devices[0];
        Ok(Rig {
            service: Some(service),
            accel: first.accel.clone(),
            source: first.source.clone(),
            events: first.events.clone(),
            table_gpa: first.table_gpa,
            pba_gpa: first.pba_gpa,
            devices,
            routes,
            table,
            hv,
            vm,
            config,
        })
    }

    /// Guest physical address of device 0's entry `e`'s dword at `offset`
    /// (0, 4, 8, 12).
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

    /// Takes the events device 0 reported so far.
    pub fn take_events(&self) -> Vec<AccelEvent> {
        self.events.take()
    }

    /// Takes the events every device reported so far.
    pub fn take_all_events(&self) -> Vec<AccelEvent> {
        self.devices.iter().flat_map(|d| d.events.take()).collect()
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
