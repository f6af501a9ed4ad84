//! Shared setup of the KVM tests: a VM with the x86 in-kernel irqchip and no vCPU.

use std::sync::Arc;

use irqfd_routes::{GsiRouting, IoctlCounters, IrqchipRoutes, MsiMessage};
use kvm_ioctls::{Kvm, VmFd};

/// A VM with KVM_CREATE_IRQCHIP done (routes and irqfds need it).
pub fn vm_with_irqchip() -> Arc<VmFd> {
    let vm = Kvm::new().unwrap().create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    Arc::new(vm)
}

/// A routing table over a fresh irqchip VM, and its counters.
#[allow(dead_code)] // not every test file uses every helper
pub fn routing() -> (GsiRouting, Arc<IoctlCounters>) {
    routing_on(vm_with_irqchip())
}

/// A routing table over `vm` (which has its irqchip), and its counters.
pub fn routing_on(vm: Arc<VmFd>) -> (GsiRouting, Arc<IoctlCounters>) {
    let counters = Arc::new(IoctlCounters::default());
    let routing = GsiRouting::new(vm, IrqchipRoutes::X86KernelIrqchip, counters.clone()).unwrap();
    (routing, counters)
}

/// A fixed-destination message to APIC 0 with `vector`.
pub fn message(vector: u32) -> MsiMessage {
    MsiMessage {
        address: 0xfee0_0000,
        data: vector,
    }
}
