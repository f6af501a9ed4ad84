//! Source vectors only for the entries in use: MSI-X enable wires the
//! vectors unmasked then (one at least), and a vector is added at the
//! source when the guest first unmasks it with a message KVM accepts. A
//! source that can add vectors while enabled does so; one that cannot is
//! enabled again with more, and what it held pending is kept (parked in
//! the eventfds first). An interrupt raised on a vector not wired yet is
//! held by the host and shows in the PBA. With kernel VFIO each wired
//! vector is a host IRQ (`tests/vfio-vm` counts them in /proc/interrupts).

use msix_accel::{MaskPath, Policy};
use msix_rig::rig::{Rig, RigConfig};
use testvm::{Program, TestVm, Width};
use vfio_vectors::MsixSource;

fn rig(maskable: bool, fixed_size: bool) -> Rig {
    Rig::new(RigConfig {
        vectors: 16,
        policy: Policy::Fast,
        maskable,
        fixed_size,
        ..RigConfig::default()
    })
    .expect("rig boots")
}

fn unmask(r: &Rig, e: u16) {
    let mut p = Program::new();
    p.write(Width::W32, r.entry(e, 0), TestVm::msi_address(0));
    p.write(Width::W32, r.entry(e, 8), 0x50 + u64::from(e));
    p.write(Width::W32, r.entry(e, 12), 0);
    p.read(Width::W64, r.pba_gpa); // an exit that applies the unmask
    r.vm.run(0, &p).unwrap();
}

fn pba(r: &Rig) -> u64 {
    let mut p = Program::new();
    let slot = p.read(Width::W64, r.pba_gpa);
    r.vm.run(0, &p).unwrap().get(slot)
}

fn wires_only_the_vectors_in_use(maskable: bool, fixed_size: bool) {
    let what = format!("maskable={maskable} fixed_size={fixed_size}");
    let r = rig(maskable, fixed_size);
    r.accel.write_message_control(0x8000).unwrap();
    assert_eq!(
        r.source.enabled_count(),
        1,
        "{what}: one vector to enable MSI-X"
    );
    unmask(&r, 5);
    assert_eq!(r.source.enabled_count(), 6, "{what}");
    unmask(&r, 2);
    assert_eq!(
        r.source.enabled_count(),
        6,
        "{what}: below the highest, nothing to add"
    );

    // Entry 3 masked and wired, entry 9 masked and not wired yet: both
    // hold an interrupt, and the guest sees both pending.
    let mut p = Program::new();
    for e in [3u16, 9] {
        p.write(Width::W32, r.entry(e, 0), TestVm::msi_address(0));
        p.write(Width::W32, r.entry(e, 8), 0x50 + u64::from(e));
    }
    r.vm.run(0, &p).unwrap();
    r.source.fire(3).unwrap();
    r.source.fire(9).unwrap();
    r.vm.sentinel(0).unwrap();
    assert_eq!(pba(&r) & (1 << 3 | 1 << 9), 1 << 3 | 1 << 9, "{what}");
    assert_eq!(r.vm.irq_count(0x53) + r.vm.irq_count(0x59), 0, "{what}");

    // Unmasking 9 adds vectors 6..=9 (a re-enable on a fixed-size source,
    // which must keep entry 3's interrupt): 9 is delivered once, 3 stays
    // pending until its own unmask.
    unmask(&r, 9);
    assert_eq!(r.source.enabled_count(), 10, "{what}");
    assert_eq!(r.vm.wait_irq_count(0x59, 1).unwrap(), 1, "{what}");
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x59), 1, "{what}: once");
    assert_eq!(pba(&r) & (1 << 3 | 1 << 9), 1 << 3, "{what}");
    unmask(&r, 3);
    assert_eq!(r.vm.wait_irq_count(0x53, 1).unwrap(), 1, "{what}");
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x53), 1, "{what}: the held interrupt, once");
    assert_eq!(r.take_events(), vec![], "{what}");

    // Disable gives everything back; enable again wires one.
    r.accel.write_message_control(0).unwrap();
    assert_eq!(r.source.enabled_count(), 0, "{what}");
    r.accel.write_message_control(0x8000).unwrap();
    assert_eq!(
        r.source.enabled_count(),
        10,
        "{what}: the unmasked ones, up to 9"
    );
}

#[test]
fn a_source_that_grows_while_enabled_wires_only_the_vectors_in_use() {
    wires_only_the_vectors_in_use(false, false);
    wires_only_the_vectors_in_use(true, false);
}

#[test]
fn a_fixed_size_source_is_enabled_again_to_grow_and_keeps_what_it_held() {
    wires_only_the_vectors_in_use(true, true);
}

/// A fixed-size source is disabled and enabled again to grow; the host
/// unmasks every wired entry at enable before the source can mask it
/// again. So a vector masked at the source leaves the source for that
/// moment: its irqfd is detached (nothing can reach the guest), what it
/// raises waits in its eventfd, and it goes back to source masking at its
/// next mask after an unmask.
#[test]
fn growing_a_fixed_size_source_takes_masked_vectors_off_it_first() {
    let r = rig(true, true);
    r.accel.write_message_control(0x8000).unwrap();
    unmask(&r, 2);
    let mut p = Program::new();
    p.write(Width::W32, r.entry(2, 12), 1);
    r.vm.run(0, &p).unwrap();
    let debug = r.accel.debug();
    assert_eq!(debug.mask_path(2).unwrap(), MaskPath::Source);
    assert!(debug.irqfd_attached(2).unwrap(), "masked at the source");

    unmask(&r, 9); // grows the source from 3 to 10 vectors by re-enabling it
    assert_eq!(r.source.enabled_count(), 10);
    assert_eq!(debug.mask_path(2).unwrap(), MaskPath::IrqfdDetached);
    assert!(!debug.irqfd_attached(2).unwrap());

    r.source.fire(2).unwrap();
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x52), 0, "nothing while masked");
    assert_eq!(pba(&r) & (1 << 2), 1 << 2, "held, and the guest sees it");
    unmask(&r, 2);
    assert_eq!(r.vm.wait_irq_count(0x52, 1).unwrap(), 1);
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x52), 1, "the held interrupt, once");
    let mut p = Program::new();
    p.write(Width::W32, r.entry(2, 12), 1);
    r.vm.run(0, &p).unwrap();
    assert_eq!(
        debug.mask_path(2).unwrap(),
        MaskPath::Source,
        "back on the source"
    );
    assert_eq!(r.take_events(), vec![]);
}
