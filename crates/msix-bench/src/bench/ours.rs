//! Our rows: the rig's accelerated device as a bench [`Target`], its MMIO
//! exits handled by the accelerator behind the clock register.

use std::sync::Arc;

use msix_accel::{MsixAccelerator, Policy};
use testvm::MmioHandler;
use vfio_vectors::software::SoftwareSource;

use super::workload::{CallCounts, Target};
use crate::Error;
use msix_rig::clock::ClockedMmio;
use msix_rig::rig::{Rig, RigConfig};

/// The rig's devices answer MMIO exits as in [`Rig`] itself.
#[derive(Debug)]
struct Accelerators(Vec<Arc<MsixAccelerator>>);

impl MmioHandler for Accelerators {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        self.0.iter().any(|a| a.mmio_read(addr, data))
    }
    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        self.0.iter().any(|a| a.mmio_write(addr, data))
    }
}

/// Boots a rig and puts the clock register in front of its devices.
pub fn rig(config: RigConfig) -> Result<Rig, Error> {
    let rig = Rig::new(config)?;
    let accels = rig.devices.iter().map(|d| d.accel.clone()).collect();
    rig.vm
        .set_mmio_handler(Arc::new(ClockedMmio::new(Arc::new(Accelerators(accels)))));
    Ok(rig)
}

impl Target for Rig {
    fn vm(&self) -> &testvm::TestVm {
        &self.vm
    }
    fn source(&self) -> &SoftwareSource {
        &self.source
    }
    fn calls(&self) -> CallCounts {
        CallCounts::new(Rig::ioctls(self), 0)
    }
    fn entry(&self, e: u16, offset: u64) -> u64 {
        Rig::entry(self, e, offset)
    }
    fn pba(&self) -> u64 {
        self.pba_gpa
    }
    fn write_message_control(&self, value: u16) -> Result<(), Error> {
        Ok(self.accel.write_message_control(value)?)
    }
    fn settle(&self) -> Result<(), Error> {
        self.accel.service_fast_path();
        match self.take_events().into_iter().find(|e| e.kind.is_trouble()) {
            Some(e) => Err(Error::Check(format!("accelerator: {e}"))),
            None => Ok(()),
        }
    }
    fn policy_in_force(&self) -> Option<Policy> {
        Some(self.accel.policy())
    }
    fn auto_medians(&self) -> Option<[u64; 2]> {
        let s = self.accel.stats();
        (s.auto_wake_ns > 0).then_some([s.auto_wake_ns, s.auto_inline_ns])
    }
}
