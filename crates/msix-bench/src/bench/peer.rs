//! A peer model's guest ([`msix_peers::PeerRig`]) as a row of the bench:
//! the workloads drive it as they drive ours, its calls counted with the
//! VFIO_DEVICE_SET_IRQS-like calls the model makes.

use msix_peers::PeerRig;
use testvm::TestVm;
use vfio_vectors::software::SoftwareSource;

use super::workload::{CallCounts, Target};
use crate::Error;

impl Target for PeerRig {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn source(&self) -> &SoftwareSource {
        &self.source
    }
    fn calls(&self) -> CallCounts {
        CallCounts::new(self.hv.counts(), self.device.set_irqs())
    }
    fn entry(&self, e: u16, offset: u64) -> u64 {
        self.table_gpa + u64::from(e) * 16 + offset
    }
    fn pba(&self) -> u64 {
        self.device.pba_gpa()
    }
    fn write_message_control(&self, value: u16) -> Result<(), Error> {
        self.device.write_message_control(value)
    }
    fn settle(&self) -> Result<(), Error> {
        PeerRig::settle(self)
    }
}
