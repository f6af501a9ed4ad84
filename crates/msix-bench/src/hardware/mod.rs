//! Checks on a real assigned device (`msix-bench --vfio BDF`): the kernel
//! VFIO source under the accelerator, driving a real KVM guest, with the
//! device's own vectors raised through its registers.

pub mod nic;
pub mod regs;
