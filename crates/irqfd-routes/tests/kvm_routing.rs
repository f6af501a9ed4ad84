//! GSI allocation and batched routing commits against the real /dev/kvm.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{message, routing, vm_with_irqchip};
use irqfd_routes::{
    x86_default_routes, Error, GsiRouting, IoctlCounters, IrqchipRoutes, MsiRouteTable,
    X86_IRQCHIP_GSIS,
};
use kvm_ioctls::Kvm;

#[test]
fn routing_is_bounded_by_kvm_cap_irq_routing() {
    let (routing, _) = routing();
    assert_eq!(routing.max_routes(), 4096);
    assert_eq!(routing.first_gsi(), X86_IRQCHIP_GSIS);
    assert!(!routing.is_dirty(), "KVM already holds the irqchip routes");
}

#[test]
fn staging_256_routes_commits_with_one_set_gsi_routing() {
    let (mut routing, counters) = routing();
    for vector in 0..256 {
        let gsi = routing.allocate().unwrap();
        routing.stage(gsi, message(0x20 + vector % 200)).unwrap();
    }
    assert!(routing.is_dirty());
    assert_eq!(counters.snapshot().set_gsi_routing, 0, "staging is free");
    assert!(routing.commit().unwrap());
    assert_eq!(counters.snapshot().set_gsi_routing, 1);
    assert!(!routing.is_dirty());
    assert_eq!(routing.routes().count(), 256);
}

#[test]
fn commit_with_nothing_changed_issues_no_ioctl() {
    let (mut routing, counters) = routing();
    assert!(!routing.commit().unwrap());
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    let before = counters.snapshot();
    assert!(!routing.commit().unwrap());
    assert_eq!(counters.snapshot().since(&before).total(), 0);
}

#[test]
fn restaging_the_same_message_leaves_the_table_clean() {
    let (mut routing, counters) = routing();
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    assert!(!routing.is_dirty());
    routing.stage(gsi, message(0x41)).unwrap();
    assert!(routing.is_dirty());
    routing.commit().unwrap();
    assert_eq!(counters.snapshot().set_gsi_routing, 2);
    assert_eq!(routing.route(gsi), Some(message(0x41)));
}

#[test]
fn allocation_hands_out_the_lowest_free_gsi_above_the_irqchip() {
    let (mut routing, _) = routing();
    let gsis: Vec<_> = (0..4).map(|_| routing.allocate().unwrap()).collect();
    assert_eq!(gsis, [24, 25, 26, 27]);
    routing.release(25).unwrap();
    assert_eq!(routing.allocated_count(), 3);
    assert_eq!(routing.allocate().unwrap(), 25);
    assert_eq!(routing.allocate().unwrap(), 28);
}

#[test]
fn allocation_exhausts_at_the_routing_limit_and_recovers_after_release() {
    let (mut routing, _) = routing();
    let mut allocated = 0;
    let error = loop {
        match routing.allocate() {
            Ok(_) => allocated += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, Error::GsiExhausted { max: 4096 }));
    assert_eq!(allocated, 4096 - 24);
    routing.release(1000).unwrap();
    assert_eq!(routing.allocate().unwrap(), 1000);
    assert!(matches!(
        routing.allocate(),
        Err(Error::GsiExhausted { .. })
    ));
}

#[test]
fn commit_past_the_route_limit_is_refused_before_the_ioctl() {
    let (mut routing, counters) = routing();
    while let Ok(gsi) = routing.allocate() {
        routing.stage(gsi, message(0x40)).unwrap();
    }
    // 40 irqchip entries + 4072 MSI routes.
    assert!(matches!(
        routing.commit(),
        Err(Error::RouteCapacity {
            entries: 4112,
            max: 4096
        })
    ));
    assert!(routing.is_dirty());
    assert_eq!(counters.snapshot().set_gsi_routing, 0);
    // Exactly at the limit, up to GSI 4095, KVM accepts the table.
    for gsi in 24..40 {
        routing.unstage(gsi).unwrap();
    }
    assert!(routing.commit().unwrap());
    assert_eq!(routing.entries().len(), 4096);
}

#[test]
fn commit_keeps_the_irqchip_default_routes() {
    let (mut routing, _) = routing();
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    let entries = routing.entries();
    assert_eq!(entries.len(), 41);
    let defaults = x86_default_routes();
    for (sent, default) in entries.iter().zip(&defaults) {
        assert_eq!(format!("{sent:?}"), format!("{default:?}"));
        assert_eq!((sent.gsi, sent.type_), (default.gsi, default.type_));
    }
    assert_eq!(entries[40].gsi, gsi);
    // The legacy line still has its route: KVM_IRQ_LINE on GSI 4 works.
    let vm = vm_with_irqchip();
    let mut other = GsiRouting::new(
        vm.clone(),
        IrqchipRoutes::X86KernelIrqchip,
        Arc::new(IoctlCounters::default()),
    )
    .unwrap();
    let gsi = other.allocate().unwrap();
    other.stage(gsi, message(0x40)).unwrap();
    other.commit().unwrap();
    vm.set_irq_line(4, true).unwrap();
    vm.set_irq_line(4, false).unwrap();
}

#[test]
fn custom_irqchip_routes_lead_the_table_and_push_gsis_above_them() {
    let vm = vm_with_irqchip();
    let custom: Vec<_> = x86_default_routes().into_iter().take(4).collect();
    let mut routing = GsiRouting::new(
        vm,
        IrqchipRoutes::Custom(custom),
        Arc::new(IoctlCounters::default()),
    )
    .unwrap();
    assert_eq!(routing.first_gsi(), 2);
    let gsi = routing.allocate().unwrap();
    assert_eq!(gsi, 2);
    routing.stage(gsi, message(0x40)).unwrap();
    assert!(routing.commit().unwrap());
    assert_eq!(routing.entries().len(), 5);
}

#[test]
fn failed_commit_keeps_the_table_staged_and_dirty() {
    // x86 KVM refuses routing before the irqchip exists: EINVAL.
    let vm = Arc::new(Kvm::new().unwrap().create_vm().unwrap());
    let counters = Arc::new(IoctlCounters::default());
    let mut routing = GsiRouting::new(vm.clone(), IrqchipRoutes::None, counters.clone()).unwrap();
    let gsi = routing.allocate().unwrap();
    assert_eq!(gsi, 0);
    routing.stage(gsi, message(0x40)).unwrap();
    match routing.commit() {
        Err(Error::SetGsiRouting { entries: 1, errno }) => assert_eq!(errno, libc::EINVAL),
        other => panic!("expected SetGsiRouting, got {other:?}"),
    }
    assert!(routing.is_dirty());
    assert_eq!(routing.route(gsi), Some(message(0x40)));
    assert_eq!(counters.snapshot().set_gsi_routing, 1);
    vm.create_irq_chip().unwrap();
    assert!(routing.commit().unwrap());
    assert!(!routing.is_dirty());
}

#[test]
fn unallocated_gsis_are_rejected() {
    let (mut routing, _) = routing();
    assert!(matches!(
        routing.stage(30, message(0x40)),
        Err(Error::UnknownGsi { gsi: 30 })
    ));
    assert!(matches!(
        routing.unstage(4),
        Err(Error::UnknownGsi { gsi: 4 })
    ));
    assert!(matches!(
        routing.release(30),
        Err(Error::UnknownGsi { gsi: 30 })
    ));
    assert!(!routing.is_dirty());
}

#[test]
fn release_and_unstage_remove_the_route() {
    let (mut routing, _) = routing();
    let kept = routing.allocate().unwrap();
    let released = routing.allocate().unwrap();
    routing.stage(kept, message(0x40)).unwrap();
    routing.stage(released, message(0x41)).unwrap();
    routing.commit().unwrap();
    routing.release(released).unwrap();
    assert!(routing.is_dirty());
    assert_eq!(routing.route(released), None);
    routing.commit().unwrap();
    routing.unstage(kept).unwrap();
    assert_eq!(routing.routes().count(), 0);
    routing.commit().unwrap();
    routing.unstage(kept).unwrap();
    assert!(
        !routing.is_dirty(),
        "unstaging a missing route changes nothing"
    );
}

#[test]
fn shared_routing_is_usable_through_the_trait_object() {
    let (routing, counters) = routing();
    let shared = routing.into_shared();
    let mut table = shared.lock().unwrap();
    let gsi = table.allocate().unwrap();
    table.stage(gsi, message(0x40)).unwrap();
    assert!(table.commit().unwrap());
    assert_eq!(counters.snapshot().set_gsi_routing, 1);
}
