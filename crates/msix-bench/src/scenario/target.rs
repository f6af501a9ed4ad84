//! [`Target`]: what the scenario runner needs of a rig, so that one runner
//! carries a file out on the software rig ([`crate::rig::Rig`]: software
//! sources, any number of devices) and on a real assigned device
//! ([`crate::hardware::scenario_rig::DeviceScenarioRig`]: the device's own
//! vectors through kernel VFIO, raised through its registers).

use msix_accel::{AccelEvent, MsixAccelerator};
use testvm::TestVm;

use crate::rig::Rig;
use crate::storm::{self, StormHandle};

/// A storm running on a target; stopped by the runner.
pub trait Storm: std::fmt::Debug {
    /// Stops the storm and waits until it has fired its last.
    fn stop(self: Box<Self>);
}

impl Storm for StormHandle {
    fn stop(self: Box<Self>) {
        StormHandle::stop(*self);
    }
}

/// A guest with accelerated MSI-X devices, as the runner drives it. Device
/// indexes are below the file's `devices` (the parser refuses others, and
/// a target is built only for a file it can hold).
pub trait Target {
    /// The guest.
    fn vm(&self) -> &TestVm;
    /// Device `device`'s accelerator.
    fn accel(&self, device: u8) -> &MsixAccelerator;
    /// Guest physical address of device `device`'s table.
    fn table_gpa(&self, device: u8) -> u64;
    /// Guest physical address of device `device`'s PBA.
    fn pba_gpa(&self, device: u8) -> u64;
    /// Guest physical address of BAR `bir` of device `device`.
    fn bar_gpa(&self, device: u8, bir: u8) -> u64;
    /// Device `device`'s interrupt source raises `entry` `count` times.
    fn fire(&self, device: u8, entry: u16, count: u64) -> Result<(), String>;
    /// Device `device`'s source starts raising `entries` round-robin at
    /// full rate, until the returned storm is stopped.
    fn storm(&self, device: u8, entries: Vec<u16>) -> Result<Box<dyn Storm>, String>;
    /// Takes the events every device's accelerator reported so far.
    fn take_events(&self) -> Vec<AccelEvent>;

    /// Guest physical address of device `device`'s entry `e`, dword at
    /// `offset` (0, 4, 8, 12).
    fn entry(&self, device: u8, e: u16, offset: u64) -> u64 {
        self.table_gpa(device) + u64::from(e) * 16 + offset
    }
}

impl Target for Rig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn accel(&self, device: u8) -> &MsixAccelerator {
        &self.devices[usize::from(device)].accel
    }
    fn table_gpa(&self, device: u8) -> u64 {
        self.devices[usize::from(device)].table_gpa
    }
    fn pba_gpa(&self, device: u8) -> u64 {
        self.devices[usize::from(device)].pba_gpa
    }
    fn bar_gpa(&self, device: u8, bir: u8) -> u64 {
        self.devices[usize::from(device)].bar_gpa(bir)
    }
    fn fire(&self, device: u8, entry: u16, count: u64) -> Result<(), String> {
        self.devices[usize::from(device)]
            .source
            .fire_n(entry, count)
            .map(drop)
            .map_err(|e| e.to_string())
    }
    fn storm(&self, device: u8, entries: Vec<u16>) -> Result<Box<dyn Storm>, String> {
        let source = &self.devices[usize::from(device)].source;
        let handle = storm::storm(source, entries, None).map_err(|e| e.to_string())?;
        Ok(Box::new(handle))
    }
    fn take_events(&self) -> Vec<AccelEvent> {
        self.take_all_events()
    }
}
