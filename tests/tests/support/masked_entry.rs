//! The rig the tests of held interrupts start from: MSI-X enabled, entry 0
//! holding its message but still masked, as the function reset left it. No
//! route is committed and no irqfd assigned yet: whatever the test does next
//! (an interrupt while masked, a failing unmask) starts from nothing wired.

use msix_accel::Policy;
use msix_rig::rig::{Rig, RigConfig};
use testvm::{Program, TestVm, Width};

/// A two-vector rig under `policy`, its source masking vectors itself when
/// `maskable`, with MSI-X enabled and entry 0's message (vCPU 0, IDT vector
/// `idt`) written by the guest while the entry stays masked.
pub fn masked_entry_rig(policy: Policy, maskable: bool, idt: u8) -> Rig {
    let r = Rig::new(RigConfig {
        vectors: 2,
        policy,
        maskable,
        ..RigConfig::default()
    })
    .expect("rig boots");
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 0), TestVm::msi_address(0));
    p.write(Width::W32, r.entry(0, 8), u64::from(idt));
    r.vm.run(0, &p).unwrap();
    r
}
