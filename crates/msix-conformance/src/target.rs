//! [`Target`]: what the runner needs of a device under test, at the level a
//! VMM works at: a real KVM guest whose MMIO exits reach the VMM's MSI-X
//! handler (table and PBA), the Message Control register the VMM's config
//! space forwards, an interrupt source the runner can fire and storm, and,
//! where the VMM has them, the events it reports.
//!
//! What the runner checks it reads itself: deliveries through the guest's
//! interrupt counts ([`testvm`]), pending bits through the guest's reads of
//! the PBA. Our accelerator implements it on the software rig (below) and on
//! a real assigned device (`msix-hardware`'s scenario rig); each peer model
//! of the bench implements it in `msix-peers`; a VMM implements it for its
//! own emulation (the crate's README).

use msix_accel::{AccelEvent, Policy};
use testvm::TestVm;
use vfio_vectors::software::SoftwareSource;

use msix_rig::rig::{Rig, RigLayout};
use msix_rig::storm::{self, StormHandle};

/// A storm running on a target; stopped by the runner.
pub trait Storm: std::fmt::Debug {
    /// Stops the storm, once it has raised each of its entries at least
    /// once (a storm stopped before that leaves a state that depends on the
    /// machine's load), and waits until it has fired its last.
    fn stop(self: Box<Self>) -> Result<(), String>;
}

/// How long a storm may go without a fire while the runner waits for its
/// first full round.
const STORM_WATCHDOG: std::time::Duration = std::time::Duration::from_secs(10);

impl Storm for StormHandle {
    fn stop(self: Box<Self>) -> Result<(), String> {
        let round = self.wait_full_round(STORM_WATCHDOG);
        StormHandle::stop(*self);
        round.map_err(|e| e.to_string())
    }
}

/// Our accelerator's configuration as a target runs it: the expectations a
/// file writes for our accelerator alone (`expect exits`) hold under the
/// policies the file lists and the source kind it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccelSetup {
    /// Fast-path policy.
    pub policy: Policy,
    /// Whether the source masks vectors itself.
    pub maskable: bool,
}

/// A guest with MSI-X devices handled by the VMM under test, as the runner
/// drives it. Device indexes are below the file's `devices` (the parser
/// refuses others, and a target is built only for a file it can hold).
///
/// A VMM writes five methods: [`vm`](Target::vm), [`layout`](Target::layout),
/// the two of Message Control, and [`software_source`](Target::software_source)
/// when its device's interrupts come from a [`SoftwareSource`] (the stand-in
/// for VFIO's eventfds). The rest have defaults for a VMM that is not our
/// accelerator; a target whose device fires another way (a real NIC)
/// implements [`fire`](Target::fire) and [`storm`](Target::storm) itself.
pub trait Target {
    /// The guest; its MMIO exits go to the VMM's handler.
    fn vm(&self) -> &TestVm;
    /// Where the VMM placed its devices' BARs, tables and PBAs: the file's
    /// layout ([`Scenario::layout`](crate::Scenario::layout)), or
    /// [`RigLayout::standard`] for its `vectors` when it names none. The
    /// addresses below follow from it.
    fn layout(&self) -> RigLayout;
    /// Guest physical address of device `device`'s table.
    fn table_gpa(&self, device: u8) -> u64 {
        self.layout().table_gpa(device)
    }
    /// Guest physical address of device `device`'s PBA.
    fn pba_gpa(&self, device: u8) -> u64 {
        self.layout().pba_gpa(device)
    }
    /// Guest physical address of BAR `bir` of device `device`.
    fn bar_gpa(&self, device: u8, bir: u8) -> u64 {
        self.layout().bar_gpa(device, bir)
    }
    /// Device `device`'s Message Control as the VMM keeps it (MSI-X Enable
    /// and Function Mask are what the runner changes).
    fn message_control(&self, device: u8) -> u16;
    /// The guest writes device `device`'s Message Control: what the VMM's
    /// config-space handler forwards.
    fn write_message_control(&self, device: u8, value: u16) -> Result<(), String>;
    /// Device `device`'s interrupt source, when it is a software source:
    /// the default [`fire`](Target::fire) and [`storm`](Target::storm)
    /// raise it. None (the default) for a target that raises its device's
    /// interrupts another way and implements those two itself.
    fn software_source(&self, device: u8) -> Option<&SoftwareSource> {
        let _ = device;
        None
    }
    /// Device `device`'s interrupt source raises `entry` `count` times.
    fn fire(&self, device: u8, entry: u16, count: u64) -> Result<(), String> {
        self.software_source(device)
            .ok_or_else(|| no_source(device))?
            .fire_n(entry, count)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    /// Device `device`'s source starts raising `entries` round-robin at
    /// full rate, until the returned storm is stopped.
    fn storm(&self, device: u8, entries: Vec<u16>) -> Result<Box<dyn Storm>, String> {
        let source = self
            .software_source(device)
            .ok_or_else(|| no_source(device))?;
        let handle = storm::storm(source, entries, None).map_err(|e| e.to_string())?;
        Ok(Box::new(handle))
    }
    /// Takes the events every device reported so far; None (the default)
    /// when the VMM reports none (its `expect event` steps are then
    /// skipped).
    fn take_events(&self) -> Option<Vec<AccelEvent>> {
        None
    }
    /// Our accelerator's configuration, when the target is our accelerator;
    /// None (the default) for any other VMM (its `expect exits` steps are
    /// then skipped).
    fn accel_setup(&self) -> Option<AccelSetup> {
        None
    }
    /// Waits until the VMM has handled what the guest's accesses and the
    /// source's fires left for its own threads, and reports an error it met
    /// meanwhile. Called before every expectation on state.
    fn settle(&self) -> Result<(), String> {
        Ok(())
    }

    /// Guest physical address of device `device`'s entry `e`, dword at
    /// `offset` (0, 4, 8, 12).
    fn entry(&self, device: u8, e: u16, offset: u64) -> u64 {
        self.table_gpa(device) + u64::from(e) * 16 + offset
    }
}

/// Why the default [`Target::fire`] and [`Target::storm`] cannot raise
/// `device`'s interrupts.
fn no_source(device: u8) -> String {
    format!(
        "device {device} has no software source to raise (its target implements neither \
         Target::software_source nor Target::fire and Target::storm)"
    )
}

impl Target for Rig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    /// Every device of a rig sits where the one layout of its
    /// configuration puts it.
    fn layout(&self) -> RigLayout {
        self.devices[0].layout
    }
    fn message_control(&self, device: u8) -> u16 {
        self.devices[usize::from(device)].accel.message_control()
    }
    fn write_message_control(&self, device: u8, value: u16) -> Result<(), String> {
        self.devices[usize::from(device)]
            .accel
            .write_message_control(value)
            .map_err(|e| e.to_string())
    }
    fn software_source(&self, device: u8) -> Option<&SoftwareSource> {
        Some(&self.devices[usize::from(device)].source)
    }
    fn take_events(&self) -> Option<Vec<AccelEvent>> {
        Some(self.take_all_events())
    }
    fn accel_setup(&self) -> Option<AccelSetup> {
        Some(AccelSetup {
            policy: self.config.policy,
            maskable: self.config.maskable,
        })
    }
}
