//! Shared setup of the KVM tests: a VM with the x86 in-kernel irqchip and no
//! vCPU, its calls counted.

use std::sync::Arc;

use irqfd_routes::{GsiRouting, IrqchipRoutes, MsiMessage};
use kvm_ioctls::Kvm;
use msix_hypervisor::{CountingVm, KvmVm};

/// The VM the tests use: KVM, every call counted.
pub type Vm = CountingVm<KvmVm>;

/// A VM with KVM_CREATE_IRQCHIP done (routes and irqfds need it).
pub fn vm_with_irqchip() -> Arc<Vm> {
    let vm = Kvm::new().unwrap().create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    Arc::new(CountingVm::new(KvmVm::new(Arc::new(vm))))
}

/// A routing table over a fresh irqchip VM, and the VM.
#[allow(dead_code)] // not every test file uses every helper
pub fn routing() -> (GsiRouting, Arc<Vm>) {
    routing_on(vm_with_irqchip())
}

/// A routing table over `vm` (which has its irqchip), and the VM.
pub fn routing_on(vm: Arc<Vm>) -> (GsiRouting, Arc<Vm>) {
    let routing = GsiRouting::new(vm.clone(), IrqchipRoutes::X86KernelIrqchip).unwrap();
    (routing, vm)
}

/// A fixed-destination message to APIC 0 with `vector`.
pub fn message(vector: u32) -> MsiMessage {
    MsiMessage::new(0xfee0_0000, vector)
}

/// A VM with its irqchip and KVM_CAP_X2APIC_API enabled as cloud-hypervisor
/// runs KVM (32-bit APIC IDs, broadcast quirk off): KVM then refuses an MSI
/// route whose address has bits 39:32 set.
#[allow(dead_code)]
pub fn vm_with_x2apic_api() -> Arc<Vm> {
    let vm = Kvm::new().unwrap().create_vm().unwrap();
    vm.create_irq_chip().unwrap();
    let mut cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_X2APIC_API,
        ..Default::default()
    };
    cap.args[0] = u64::from(
        kvm_bindings::KVM_X2APIC_API_USE_32BIT_IDS
            | kvm_bindings::KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    );
    vm.enable_cap(&cap).unwrap();
    Arc::new(CountingVm::new(KvmVm::new(Arc::new(vm))))
}
