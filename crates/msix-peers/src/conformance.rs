//! Each peer model as a target of the conformance kit: the same guest
//! programs as our accelerator runs, handled the way the peer VMM handles
//! its MSI-X table, PBA and Message Control, on a plain software source.
//! A peer reports no events and is not held to our exit counts (the runner
//! skips those steps and says why).

use msix_conformance::{Candidate, Scenario, Target, SCENARIO_WATCHDOG};
use msix_rig::rig::RigLayout;
use testvm::{TestVm, VmConfig};
use vfio_vectors::software::SoftwareSource;
use vfio_vectors::MsixSource;

use crate::model::PeerModel;
use crate::rig::PeerRig;

/// Why a file with several devices does not run on a peer model.
pub const ONE_DEVICE: &str =
    "the peer models hold one device per guest (each commits the routing table it keeps alone)";

impl Candidate for PeerModel {
    fn name(&self) -> String {
        PeerModel::name(*self).into()
    }
    fn source(&self) -> String {
        "plain".into()
    }
    fn skip_reason(&self, scenario: &Scenario) -> Option<String> {
        if scenario.devices > 1 {
            return Some(format!("needs {} devices: {ONE_DEVICE}", scenario.devices));
        }
        let standard = RigLayout::standard(scenario.vectors);
        match scenario.layout {
            Some(l) if l != standard => Some(
                "its layout: the peer models place the table at BAR 0 offset 0 and the PBA on \
                 the next page"
                    .into(),
            ),
            _ => None,
        }
    }
    fn build(&self, scenario: &Scenario) -> Result<Box<dyn Target>, String> {
        let rig = PeerRig::with_guest(
            *self,
            scenario.vectors,
            VmConfig {
                vcpus: scenario.vcpus,
                watchdog: SCENARIO_WATCHDOG,
                x2apic_api: scenario.x2apic_api,
            },
        )
        .map_err(|e| e.to_string())?;
        Ok(Box::new(rig))
    }
}

impl Target for PeerRig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    /// The standard layout, the only one a peer model runs (see
    /// `skip_reason`): the table at BAR 0 offset 0, the PBA on the next
    /// page, where `PeerRig` placed them.
    fn layout(&self) -> RigLayout {
        RigLayout::standard(self.source.vector_count())
    }
    fn message_control(&self, _device: u8) -> u16 {
        self.device.message_control()
    }
    fn write_message_control(&self, _device: u8, value: u16) -> Result<(), String> {
        self.device
            .write_message_control(value)
            .map_err(|e| e.to_string())
    }
    fn software_source(&self, _device: u8) -> Option<&SoftwareSource> {
        Some(&self.source)
    }
    fn settle(&self) -> Result<(), String> {
        PeerRig::settle(self).map_err(|e| e.to_string())
    }
}
