//! Checks on a real assigned device (`msix-bench --vfio BDF`): the kernel
//! VFIO source under our accelerator, driving a real KVM guest, with the
//! device's own vectors raised through its registers ([`nic`], the one
//! place that knows device registers), next to QEMU-like and crosvm-like
//! handlers of the same device ([`peers`]); and the conformance kit's
//! target on such a device ([`scenario_rig`], `msix-bench scenario --vfio`).
//! See docs/hardware.md.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

pub mod checks;
pub mod counted_source;
pub mod cycle;
pub mod delivery_account;
pub mod device;
pub mod first_vectors;
pub mod handler;
pub mod host_irqs;
pub mod nic;
pub mod peers;
pub mod regs;
pub mod report;
pub mod rig;
pub mod scenario_rig;
pub mod stale_pending;
pub mod trigger_counts;
pub mod vfio_irqs;

use msix_rig::Error;
