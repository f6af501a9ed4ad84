//! The fast-path protocol seen from inside a real KVM guest: exact exit and
//! ioctl counts per Linux mask cycle, and delivery semantics.

use msix_accel::Policy;
use msix_rig::rig::{Rig, RigConfig};

#[path = "support/entry0.rs"]
mod entry0;
use entry0::linux_cycles;

const VECTOR: u8 = 0x40;

/// Entry 0 programmed for [`VECTOR`], MSI-X enabled, unmasked.
fn bring_up(r: &Rig) {
    entry0::bring_up(r, VECTOR);
}

fn rig(policy: Policy, maskable: bool) -> Rig {
    Rig::new(RigConfig {
        policy,
        maskable,
        ..RigConfig::default()
    })
    .expect("rig boots")
}

#[test]
fn linux_cycle_costs_one_exit_under_fast_two_under_strict_three_under_trap() {
    for (policy, per_cycle) in [(Policy::Fast, 1), (Policy::Strict, 2), (Policy::Trap, 3)] {
        let r = rig(policy, false);
        bring_up(&r);
        assert_eq!(linux_cycles(&r, 100), 100 * per_cycle, "policy {policy}");
        // Deliveries still work after the cycles.
        r.accel.service_fast_path();
        r.source.fire(0).unwrap();
        assert_eq!(
            r.vm.wait_irq_count(VECTOR, 1).unwrap(),
            1,
            "policy {policy}"
        );
    }
}

#[test]
fn with_source_masking_the_cycle_costs_one_exit_and_no_irqfd_ioctls() {
    let r = rig(Policy::Fast, true);
    bring_up(&r);
    let before = r.ioctls();
    assert_eq!(linux_cycles(&r, 50), 50);
    r.accel.service_fast_path();
    let ioctls = r.ioctls().since(&before);
    assert_eq!(ioctls.irqfd_assign, 0);
    assert_eq!(ioctls.irqfd_deassign, 0);
    assert_eq!(ioctls.set_gsi_routing, 0);
    let stats = r.accel.stats();
    assert!(stats.masks_at_source >= 50);
    assert_eq!(stats.masks_by_irqfd_detach, 0);
}

#[test]
fn masked_fire_is_pending_and_delivered_once_on_unmask() {
    for maskable in [false, true] {
        for policy in Policy::ALL {
            let r = rig(policy, maskable);
            bring_up(&r);
            assert_eq!(entry0::mask(&r), 0xFEE0_0000);
            r.source.fire_n(0, 3).unwrap();
            // An interrupt that got through would be taken before the sentinel.
            r.vm.sentinel_all().unwrap();
            assert_eq!(r.vm.irq_count(VECTOR), 0, "{policy} maskable={maskable}");
            assert!(r.accel.pending(0).unwrap(), "{policy} maskable={maskable}");
            entry0::unmask_delivers_once(&r, VECTOR, &format!("{policy} maskable={maskable}"));
            assert!(!r.accel.pending(0).unwrap());
        }
    }
}
