//! [`HwRig`]: a real KVM guest with the assigned device's MSI-X handled by
//! our accelerator on the kernel VFIO source, wired as a VMM wires it.

use std::sync::Arc;
use std::time::Duration;

use irqfd_routes::{GsiRouting, IrqchipRoutes};
use msix_accel::{
    AccelConfig, EventLog, MaskPath, MsixAccelerator, MsixSource, Policy, ServiceThread,
};
use msix_hypervisor::{CountingVm, IoctlCounters, KvmVm};
use msix_model::BarOffset;
use testvm::{TestVm, VmConfig};
use vfio_vectors::kernel::MsixCapability;

use crate::counted_source::{CountedSource, SourceCalls};
use crate::cycle::{CycleTarget, Work};
use crate::device::AssignedDevice;
use crate::handler::Handler;
use crate::nic::Nic;
use crate::Error;
use msix_rig::rig::{AccelMmio, BAR_GPA, TABLE_MEMSLOT};

/// Exits a Linux mask cycle costs under `policy`: the mask write only
/// (`fast`: table reads hit the read-only shadow, the unmask an
/// ioeventfd), plus the unmask write (`strict`), plus the flush read
/// (`trap`).
pub fn exits_per_cycle(policy: Policy) -> u64 {
    policy.linux_cycle_exits()
}

/// vCPUs of the guest: deliveries alternate between them, so a message
/// that reached the wrong vCPU shows.
pub const VCPUS: u8 = 2;

/// Message Control with MSI-X Enable set and Function Mask clear.
pub const MSIX_ENABLE: u16 = 0x8000;

/// Watchdog of every wait on the guest. Generous: under an emulated host
/// one exit takes ~0.2 ms and a guest program a few ms.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// Guest, accelerator on the device's kernel VFIO source, service thread.
/// Fields drop in order: service, accelerator (which disables the
/// source's MSI-X), then the guest.
#[derive(Debug)]
pub struct HwRig {
    service: Option<ServiceThread>,
    /// The accelerator.
    pub accel: Arc<MsixAccelerator>,
    /// KVM ioctls issued for the device.
    pub ioctls: Arc<IoctlCounters>,
    /// What the accelerator reported.
    pub events: Arc<EventLog>,
    /// Calls the accelerator made to the source.
    pub source_calls: Arc<SourceCalls>,
    /// The guest.
    pub vm: TestVm,
    /// The accelerator's configuration.
    pub config: AccelConfig,
    /// Guest physical address of the table.
    pub table_gpa: u64,
    /// Guest physical address of the PBA.
    pub pba_gpa: u64,
    /// Masks go to the device (source masking asked for and available);
    /// else the irqfd is detached.
    pub at_source: bool,
}

/// The guest-visible MSI-X layout of `device` under `policy`, with or
/// without source masking: the device's own table and PBA locations in one
/// BAR, except that a PBA in another BAR or sharing a page with the table
/// goes to the page after the table (a VMM chooses the layout it shows; the
/// accelerator reads the physical PBA through the source wherever it is,
/// and the table needs pages of its own to be mapped read-only).
pub fn accel_config(msix: &MsixCapability, policy: Policy, source_masking: bool) -> AccelConfig {
    const PAGE: u64 = 4096;
    let mut config = AccelConfig::new(msix.table_size, msix.table_bir, TABLE_MEMSLOT)
        .with_policy(policy)
        .with_source_masking(source_masking);
    config.table = BarOffset::new(msix.table_bir, msix.table_offset);
    let table_start = u64::from(msix.table_offset) / PAGE * PAGE;
    let table_end =
        (u64::from(msix.table_offset) + u64::from(msix.table_size) * 16).div_ceil(PAGE) * PAGE;
    let pba = u64::from(msix.pba_offset);
    let pba_end = pba + u64::from(msix.table_size).div_ceil(64) * 8;
    let own_pages = !(pba < table_end && pba_end > table_start);
    config.pba = if msix.pba_bir == msix.table_bir && own_pages {
        BarOffset::new(msix.table_bir, msix.pba_offset)
    } else {
        BarOffset::new(msix.table_bir, table_end as u32)
    };
    config
}

/// What [`build_accelerator`] wires.
#[derive(Debug)]
pub struct Built {
    /// The accelerator.
    pub accel: Arc<MsixAccelerator>,
    /// The KVM ioctls it issues.
    pub ioctls: Arc<IoctlCounters>,
    /// What it reports.
    pub events: Arc<EventLog>,
}

/// Builds the accelerator for `vm` on `source`: the one place that calls
/// `MsixAccelerator::new`.
pub fn build_accelerator(
    vm: &TestVm,
    source: Box<dyn MsixSource>,
    config: AccelConfig,
) -> Result<Built, Error> {
    let hv = Arc::new(CountingVm::new(KvmVm::new(vm.vm().clone())));
    let ioctls = hv.counters();
    let routes = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)?.into_shared();
    let events = Arc::new(EventLog::new());
    let accel = MsixAccelerator::new(hv, routes, source, config, events.clone())?;
    Ok(Built {
        accel: Arc::new(accel),
        ioctls,
        events,
    })
}

impl HwRig {
    /// Boots a guest and wires `device` under `policy`.
    pub fn new(
        device: &AssignedDevice,
        policy: Policy,
        source_masking: bool,
    ) -> Result<HwRig, Error> {
        let vm = TestVm::new(VmConfig {
            vcpus: VCPUS,
            watchdog: WATCHDOG,
            ..VmConfig::default()
        })?;
        let config = accel_config(&device.msix, policy, source_masking);
        let source_calls = Arc::new(SourceCalls::default());
        let source = CountedSource::new(device.source()?, source_calls.clone());
        let Built {
            accel,
            ioctls,
            events,
        } = build_accelerator(&vm, Box::new(source), config)?;
        // The servicer first: a table under `fast` needs one.
        let service = ServiceThread::spawn(std::slice::from_ref(&accel))?;
        let table_gpa = BAR_GPA + u64::from(config.table.offset);
        let pba_gpa = BAR_GPA + u64::from(config.pba.offset);
        let effective = accel.place(table_gpa, pba_gpa)?;
        // `auto` runs the mechanism it measured as cheaper: either
        // exact one that maps the table.
        let chosen = policy == Policy::Auto && matches!(effective, Policy::Fast | Policy::Strict);
        if effective != policy && !chosen {
            return Err(Error::Check(format!(
                "the accelerator placed the table under {effective}, not {policy}"
            )));
        }
        vm.set_mmio_handler(Arc::new(AccelMmio(vec![accel.clone()])));
        Ok(HwRig {
            service: Some(service),
            accel,
            ioctls,
            events,
            source_calls,
            vm,
            config,
            table_gpa,
            pba_gpa,
            at_source: source_masking && device.features.maskable,
        })
    }

    /// Guest physical address of entry `e`'s dword at `offset` (0, 4, 8, 12).
    pub fn entry(&self, e: u16, offset: u64) -> u64 {
        self.table_gpa + u64::from(e) * 16 + offset
    }

    /// Finishes the unmasks the service thread may not have serviced yet
    /// and reports an error the accelerator met meanwhile.
    pub fn settle(&self) -> Result<(), Error> {
        self.accel.service_fast_path();
        match self.events.events().iter().find(|e| e.kind.is_trouble()) {
            Some(e) => Err(Error::Check(format!("accelerator: {e}"))),
            None => Ok(()),
        }
    }
}

impl CycleTarget for HwRig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn entry(&self, e: u16, offset: u64) -> u64 {
        HwRig::entry(self, e, offset)
    }
    fn work(&self) -> Work {
        let calls = self.source_calls.snapshot();
        Work::from_kvm(
            self.ioctls.snapshot(),
            calls.set_irqs,
            calls.masks + calls.unmasks,
        )
    }
    fn settle(&self) -> Result<(), Error> {
        HwRig::settle(self)
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Handler for HwRig {
    fn source_enabled(&self) -> Option<u16> {
        Some(self.source_calls.enabled())
    }

    fn enable_msix(&self) -> Result<(), Error> {
        Ok(self.accel.write_message_control(MSIX_ENABLE)?)
    }
    fn pba_gpa(&self) -> u64 {
        self.pba_gpa
    }
    fn check_wired(&self, vector: u16) -> Result<(), String> {
        let path = self.accel.debug().mask_path(vector).map_err(err)?;
        let attached = self.accel.debug().irqfd_attached(vector).map_err(err)?;
        if path != MaskPath::Unmasked || !attached {
            return Err(format!("mask path {path:?}, irqfd attached {attached}"));
        }
        Ok(())
    }
    fn check_masked(&self, vector: u16) -> Result<(), String> {
        let want = if self.at_source {
            MaskPath::Source
        } else {
            MaskPath::IrqfdDetached
        };
        let path = self.accel.debug().mask_path(vector).map_err(err)?;
        if path != want {
            return Err(format!("mask path {path:?}, want {want:?}"));
        }
        Ok(())
    }
    fn held(&self, nic: &Nic, vector: u16) -> Result<bool, Error> {
        if self.at_source {
            nic.regs().physical_pending(vector)
        } else {
            Ok(self.accel.pending(vector)?)
        }
    }
    fn held_where(&self) -> &'static str {
        if self.at_source {
            "the device's Pending bit"
        } else {
            "the eventfd count of the detached irqfd"
        }
    }
    fn still_pending(&self, nic: &Nic, vector: u16) -> Result<Option<String>, Error> {
        if self.at_source && nic.regs().physical_pending(vector)? {
            return Ok(Some("the device's Pending bit is still set".into()));
        }
        if self.accel.pending(vector)? {
            return Ok(Some("the accelerator still reports it pending".into()));
        }
        Ok(None)
    }
    fn exits_per_cycle(&self) -> u64 {
        // The mechanism in force: under `auto`, the one it chose.
        exits_per_cycle(self.accel.policy())
    }
    fn errors(&self) -> Result<(), String> {
        let events: Vec<_> = self
            .events
            .events()
            .into_iter()
            .filter(|e| e.kind.is_trouble())
            .collect();
        if let Some(last) = events.last() {
            return Err(format!(
                "the accelerator reported {} events (last: {last})",
                events.len()
            ));
        }
        Ok(())
    }
}

impl Drop for HwRig {
    fn drop(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop();
        }
        self.vm.stop_vcpus();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(
        table_bir: u8,
        table_offset: u32,
        pba_bir: u8,
        pba_offset: u32,
        size: u16,
    ) -> MsixCapability {
        MsixCapability {
            cap_offset: 0x70,
            table_size: size,
            table_bir,
            table_offset,
            pba_bir,
            pba_offset,
        }
    }

    #[test]
    fn guest_layout_keeps_a_pba_on_its_own_page() {
        // igb and e1000e: table at 0, PBA at 0x2000 of BAR 3.
        let c = accel_config(&cap(3, 0, 3, 0x2000, 10), Policy::Fast, true);
        assert_eq!(c.table, BarOffset::new(3, 0));
        assert_eq!(c.pba, BarOffset::new(3, 0x2000));
        assert_eq!(c.policy, Policy::Fast);
        assert!(c.source_masking);
    }

    #[test]
    fn guest_layout_moves_a_pba_sharing_the_tables_page_after_it() {
        // virtio-pci: table at 0 and PBA at 0x800 of the same 4 KiB BAR.
        let c = accel_config(&cap(1, 0, 1, 0x800, 4), Policy::Strict, false);
        assert_eq!(c.table, BarOffset::new(1, 0));
        assert_eq!(c.pba, BarOffset::new(1, 0x1000));
    }

    #[test]
    fn guest_layout_brings_a_pba_from_another_bar_after_the_table() {
        let c = accel_config(&cap(2, 0x3000, 4, 0, 300), Policy::Trap, false);
        assert_eq!(c.table, BarOffset::new(2, 0x3000));
        // 300 entries end at 0x3000 + 0x12c0: the PBA goes to the next page.
        assert_eq!(c.pba, BarOffset::new(2, 0x5000));
    }
}
