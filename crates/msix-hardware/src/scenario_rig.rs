//! [`DeviceScenarioRig`]: a scenario file's guest on a real assigned device
//! (`msix-bench scenario --vfio BDF FILE...`). One accelerator on the
//! device's kernel VFIO source, its first `vectors` vectors shown to the
//! guest as a table of that size ([`FirstVectors`]), laid out as the file
//! says, under the file's policy, with source masking as its `source` line
//! says; `device fire E` raises vector E through the NIC's registers.
//!
//! A real device's message travels on its own time (device, host IRQ,
//! eventfd, KVM) while the software source writes its eventfd before
//! `fire` returns. So that a file's expectations read the same, a fire here
//! returns only once every raise is proven to have landed: taken by the
//! guest when the vector delivers, or held (the pending bit, and the
//! eventfd count when the message went to a detached irqfd) when it does
//! not. Every such wait is bounded by the guest's watchdog and fails the
//! step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use msix_accel::{AccelEvent, EventLog, MaskPath, MsixAccelerator, Policy, ServiceThread};
use testvm::{TestVm, VmConfig};

use crate::checks::NO_TRIGGER;
use crate::counted_source::{CountedSource, SourceCalls};
use crate::delivery_account::DeliveryAccount;
use crate::device::AssignedDevice;
use crate::first_vectors::FirstVectors;
use crate::nic::Nic;
use crate::rig::{build_accelerator, Built, WATCHDOG};
use crate::trigger_counts::TriggerCounts;
use crate::Error;
use msix_conformance::{run_on, AccelSetup, DeviceOffer, Outcome, Scenario, Storm, Target};
use msix_rig::rig::{AccelMmio, RigConfig, RigLayout};

/// Why no `device storm` runs on a real device.
pub const NO_STORM: &str = "a storm fires from another thread at full rate while the guest runs; \
     a NIC raise is a sequence of register writes (on QEMU's e1000e model one that rewrites the \
     vector's Vector Control) whose message the runner proves landed before the next step";

/// How often a wait for a raise to land looks again.
const POLL: Duration = Duration::from_micros(200);

/// What `device` offers scenario files.
pub fn offer(device: &AssignedDevice) -> DeviceOffer {
    let family = device.family().map_or("device", |f| f.name());
    DeviceOffer {
        name: format!("{family} {}", device.bdf()),
        table_size: device.msix.table_size,
        raisable: device
            .family()
            .map(|f| f.raisable())
            .ok_or_else(|| NO_TRIGGER.to_string()),
        unmaskable: if device.features.maskable {
            None
        } else {
            Some(
                device
                    .unmapped_reason
                    .clone()
                    .unwrap_or_else(|| "its MSI-X table cannot be mapped".into()),
            )
        },
        no_storm: Some(NO_STORM.into()),
    }
}

/// Runs `scenario` under `policy` on `device`, in a fresh guest with a
/// fresh accelerator.
pub fn run(device: &AssignedDevice, scenario: &Scenario, policy: Policy) -> Outcome {
    run_on(scenario, policy, |config| {
        DeviceScenarioRig::new(device, config)
    })
}

/// The guest, the accelerator on the device's source, the service thread.
/// Fields drop in order: service, accelerator (which disables the source's
/// MSI-X), then the guest.
#[derive(Debug)]
pub struct DeviceScenarioRig<'d> {
    service: Option<ServiceThread>,
    accel: Arc<MsixAccelerator>,
    events: Arc<EventLog>,
    /// The source's enabled count.
    calls: Arc<SourceCalls>,
    /// The counts of the source's trigger eventfds.
    triggers: TriggerCounts,
    layout: RigLayout,
    setup: AccelSetup,
    nic: Option<&'d Nic>,
    /// Raises against device messages and guest deliveries, printed at
    /// the end of the run where they differ.
    account: DeliveryAccount,
    vm: TestVm,
}

impl<'d> DeviceScenarioRig<'d> {
    /// Boots a guest as `config` says (one device, at most the device's
    /// table size, source masking only where the device has it) and wires
    /// the device's first `config.vectors` vectors.
    pub fn new(device: &'d AssignedDevice, config: RigConfig) -> Result<Self, Error> {
        if config.devices != 1 {
            return Err(Error::Check(format!(
                "{} devices: a real device is one",
                config.devices
            )));
        }
        if config.maskable && !device.features.maskable {
            return Err(Error::Check(
                "source masking asked for, but the device's table cannot be mapped".into(),
            ));
        }
        let vm = TestVm::new(VmConfig {
            vcpus: config.vcpus,
            watchdog: WATCHDOG,
            x2apic_api: config.x2apic_api,
        })?;
        let layout = config
            .layout
            .unwrap_or_else(|| RigLayout::standard(config.vectors));
        let source = FirstVectors::new(device.source()?, config.vectors)?;
        let triggers = TriggerCounts::of(&source)?;
        let calls = Arc::new(SourceCalls::default());
        let Built { accel, events, .. } = build_accelerator(
            &vm,
            Box::new(CountedSource::new(source, calls.clone())),
            config.accel_config(&layout, 0),
        )?;
        // The servicer first: a table under `fast` needs one.
        let service = ServiceThread::spawn(std::slice::from_ref(&accel))?;
        layout.place(&accel, 0)?;
        vm.set_mmio_handler(Arc::new(AccelMmio(vec![accel.clone()])));
        Ok(DeviceScenarioRig {
            service: Some(service),
            accel,
            events,
            calls,
            triggers,
            layout,
            setup: AccelSetup {
                policy: config.policy,
                maskable: config.maskable,
            },
            nic: device.nic.as_ref(),
            account: DeliveryAccount::new(device.bdf(), config.vectors),
            vm,
        })
    }

    /// Waits, bounded by the guest's watchdog, until `done` holds.
    fn until(
        &self,
        what: &str,
        mut done: impl FnMut() -> Result<bool, String>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + self.vm.watchdog();
        loop {
            if done()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what} within the {} ms watchdog",
                    self.vm.watchdog().as_millis()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Raises `entry` once and waits until the raise has landed.
    fn raise_and_land(&self, nic: &Nic, entry: u16) -> Result<(), String> {
        let debug = self.accel.debug();
        let path = debug.mask_path(entry).map_err(err)?;
        if path == MaskPath::Unmasked {
            // Delivers: taken by the guest on the IDT vector of its message.
            let idt = (debug.entry(entry).map_err(err)?.data & 0xff) as u8;
            let before = self.vm.irq_count(idt);
            nic.raise(entry).map_err(err)?;
            return self.until(
                &format!("raise of unmasked entry {entry}: IDT vector {idt:#x} not taken"),
                || Ok(self.vm.irq_count(idt) > before),
            );
        }
        // Held. Masked at the source, or not wired yet (the host holds it
        // masked): the device's Pending bit. Wired with its irqfd detached:
        // the message reaches the eventfd, whose count must grow.
        let to_eventfd = path == MaskPath::IrqfdDetached && entry < self.calls.enabled();
        let before = self.triggers.count(entry).map_err(err)?;
        nic.raise(entry).map_err(err)?;
        self.until(&format!("raise of masked entry {entry}: not held"), || {
            let held = self.accel.pending(entry).map_err(err)?;
            let arrived = !to_eventfd || self.triggers.count(entry).map_err(err)? > before;
            Ok(held && arrived)
        })
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Target for DeviceScenarioRig<'_> {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn message_control(&self, _device: u8) -> u16 {
        self.accel.message_control()
    }
    fn write_message_control(&self, _device: u8, value: u16) -> Result<(), String> {
        self.accel.write_message_control(value).map_err(err)
    }
    fn layout(&self) -> RigLayout {
        self.layout
    }
    /// Each raise lands before the next. Unmasks the guest left absorbed
    /// are applied first, so the vector's path cannot change during a
    /// raise (on QEMU's e1000e model a raise rewrites Vector Control, and
    /// would undo a source unmask made meanwhile).
    fn fire(&self, _device: u8, entry: u16, count: u64) -> Result<(), String> {
        let nic = self.nic.ok_or(NO_TRIGGER)?;
        self.accel.service_fast_path();
        for _ in 0..count {
            self.account.raised(entry);
            self.raise_and_land(nic, entry)?;
        }
        Ok(())
    }
    fn storm(&self, _device: u8, _entries: Vec<u16>) -> Result<Box<dyn Storm>, String> {
        Err(NO_STORM.into())
    }
    fn take_events(&self) -> Option<Vec<AccelEvent>> {
        Some(self.events.take())
    }
    fn accel_setup(&self) -> Option<AccelSetup> {
        Some(self.setup)
    }
}

impl Drop for DeviceScenarioRig<'_> {
    fn drop(&mut self) {
        for line in self.account.mismatches(&self.accel, &self.vm) {
            eprintln!("INFO {line}");
        }
        if let Some(s) = self.service.take() {
            s.stop();
        }
        self.vm.stop_vcpus();
    }
}
