//! GSI allocation and batched routing commits against the real /dev/kvm.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{message, routing, vm_with_irqchip};
use irqfd_routes::{Commit, Error, GsiRouting, IrqchipRoutes, MsiRouteTable, RouteState};
use kvm_ioctls::Kvm;
use msix_hypervisor::{x86, CountingVm, KvmVm};

#[test]
fn routing_is_bounded_by_kvm_cap_irq_routing() {
    let (routing, _) = routing();
    assert_eq!(routing.max_routes(), 4096);
    assert_eq!(routing.first_gsi(), x86::IRQCHIP_GSIS);
    assert!(!routing.is_dirty(), "KVM already holds the irqchip routes");
}

#[test]
fn staging_256_routes_commits_with_one_set_gsi_routing() {
    let (routing, vm) = routing();
    for vector in 0..256 {
        let gsi = routing.allocate().unwrap();
        routing.stage(gsi, message(0x20 + vector % 200)).unwrap();
    }
    assert!(routing.is_dirty());
    assert_eq!(vm.counts().set_gsi_routing, 0, "staging is free");
    assert_eq!(routing.commit().unwrap().calls, 1);
    assert_eq!(vm.counts().set_gsi_routing, 1);
    assert!(!routing.is_dirty());
    assert_eq!(routing.routes().len(), 256);
}

#[test]
fn commit_with_nothing_changed_issues_no_ioctl() {
    let (routing, vm) = routing();
    assert_eq!(routing.commit().unwrap().calls, 0);
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    let before = vm.counts();
    assert_eq!(routing.commit().unwrap().calls, 0);
    assert_eq!(vm.counts().since(&before).total(), 0);
}

#[test]
fn restaging_the_same_message_leaves_the_table_clean() {
    let (routing, vm) = routing();
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    assert!(!routing.is_dirty());
    routing.stage(gsi, message(0x41)).unwrap();
    assert!(routing.is_dirty());
    routing.commit().unwrap();
    assert_eq!(vm.counts().set_gsi_routing, 2);
    assert_eq!(routing.route(gsi), Some(message(0x41)));
}

#[test]
fn allocation_hands_out_the_lowest_free_gsi_above_the_irqchip() {
    let (routing, _) = routing();
    let gsis: Vec<_> = (0..4).map(|_| routing.allocate().unwrap()).collect();
    assert_eq!(gsis, [24, 25, 26, 27]);
    routing.release(25).unwrap();
    assert_eq!(routing.allocated_count(), 3);
    assert_eq!(routing.allocate().unwrap(), 25);
    assert_eq!(routing.allocate().unwrap(), 28);
}

#[test]
fn allocation_exhausts_at_the_routing_limit_and_recovers_after_release() {
    let (routing, _) = routing();
    let mut allocated = 0;
    let error = loop {
        match routing.allocate() {
            Ok(_) => allocated += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, Error::GsiExhausted { max: 4096 }));
    // One route per GSI, and the 40 irqchip entries: 4056 fit the table.
    assert_eq!(allocated, 4096 - 40);
    routing.release(1000).unwrap();
    assert_eq!(routing.allocate().unwrap(), 1000);
    assert!(matches!(
        routing.allocate(),
        Err(Error::GsiExhausted { .. })
    ));
}

#[test]
fn a_table_with_every_gsi_routed_fits_kvms_limit_exactly() {
    // GSIs stop where one more route would not fit: a table with every
    // allocatable GSI routed is exactly KVM's 4096 entries, never more
    // (which would fail every commit of the VM).
    let (routing, vm) = routing();
    while let Ok(gsi) = routing.allocate() {
        routing.stage(gsi, message(0x40)).unwrap();
    }
    assert_eq!(routing.entries().len(), 4096);
    assert_eq!(routing.commit().unwrap().calls, 1);
    assert_eq!(vm.counts().set_gsi_routing, 1);
    assert!(!routing.is_dirty());
}

#[test]
fn commit_keeps_the_irqchip_default_routes() {
    let (routing, _) = routing();
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    let entries = routing.entries();
    assert_eq!(entries.len(), 41);
    let defaults = x86::default_routes();
    assert_eq!(&entries[..40], &defaults[..]);
    assert_eq!(entries[40].gsi, gsi);
    // The legacy line still has its route: KVM_IRQ_LINE on GSI 4 works.
    let vm = vm_with_irqchip();
    let other = GsiRouting::new(vm.clone(), IrqchipRoutes::X86KernelIrqchip).unwrap();
    let gsi = other.allocate().unwrap();
    other.stage(gsi, message(0x40)).unwrap();
    other.commit().unwrap();
    vm.inner().vm_fd().set_irq_line(4, true).unwrap();
    vm.inner().vm_fd().set_irq_line(4, false).unwrap();
}

#[test]
fn custom_irqchip_routes_lead_the_table_and_push_gsis_above_them() {
    let vm = vm_with_irqchip();
    let custom: Vec<_> = x86::default_routes().into_iter().take(4).collect();
    let routing = GsiRouting::new(vm, IrqchipRoutes::Custom(custom)).unwrap();
    assert_eq!(routing.first_gsi(), 2);
    let gsi = routing.allocate().unwrap();
    assert_eq!(gsi, 2);
    routing.stage(gsi, message(0x40)).unwrap();
    assert_eq!(routing.commit().unwrap().calls, 1);
    assert_eq!(routing.entries().len(), 5);
}

#[test]
fn failed_commit_keeps_the_table_staged_and_dirty() {
    // x86 KVM refuses any routing table before the irqchip exists (EINVAL):
    // the refusal stays without the new route too, so it is an error.
    let fd = Arc::new(Kvm::new().unwrap().create_vm().unwrap());
    let vm = Arc::new(CountingVm::new(KvmVm::new(fd.clone())));
    let routing = GsiRouting::new(vm.clone(), IrqchipRoutes::None).unwrap();
    let gsi = routing.allocate().unwrap();
    assert_eq!(gsi, 0);
    routing.stage(gsi, message(0x40)).unwrap();
    match routing.commit() {
        Err(Error::SetGsiRouting { entries: 0, errno }) => assert_eq!(errno, libc::EINVAL),
        other => panic!("expected SetGsiRouting, got {other:?}"),
    }
    assert!(routing.is_dirty());
    assert_eq!(routing.route(gsi), Some(message(0x40)));
    assert_eq!(
        vm.counts().set_gsi_routing,
        2,
        "the table, then the table without the new route"
    );
    fd.create_irq_chip().unwrap();
    assert_eq!(routing.commit().unwrap().calls, 1);
    assert!(!routing.is_dirty());
}

#[test]
fn unallocated_gsis_are_rejected() {
    let (routing, _) = routing();
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
    let (routing, _) = routing();
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
    assert_eq!(routing.routes().len(), 0);
    routing.commit().unwrap();
    routing.unstage(kept).unwrap();
    assert!(
        !routing.is_dirty(),
        "unstaging a missing route changes nothing"
    );
}

#[test]
fn shared_routing_is_usable_through_the_trait_object() {
    let (routing, vm) = routing();
    let table = routing.into_shared();
    let gsi = table.allocate().unwrap();
    table.stage(gsi, message(0x40)).unwrap();
    assert_eq!(table.commit().unwrap().calls, 1);
    assert_eq!(vm.counts().set_gsi_routing, 1);
}

/// An address KVM refuses with the x2APIC API's 32-bit IDs: a nonzero byte in
/// bits 7:0 of the upper address dword, as a hostile guest may write.
fn refused(vector: u32) -> irqfd_routes::MsiMessage {
    irqfd_routes::MsiMessage::new(0x0000_0001_fee0_0000, vector)
}

#[test]
fn a_route_kvm_refuses_is_isolated_and_every_other_route_commits() {
    let (routing, vm) = common::routing_on(common::vm_with_x2apic_api());
    let gsis: Vec<u32> = (0..8).map(|_| routing.allocate().unwrap()).collect();
    for (i, gsi) in gsis.iter().enumerate() {
        let m = if i == 5 {
            refused(0x45)
        } else {
            message(0x40 + i as u32)
        };
        routing.stage(*gsi, m).unwrap();
    }
    let commit = routing.commit().unwrap();
    assert_eq!(commit.rejected.len(), 1);
    assert_eq!(commit.rejected[0].gsi, gsis[5]);
    assert_eq!(commit.rejected[0].errno, libc::EINVAL);
    assert!(
        commit.calls <= 3 + 2 * 3,
        "isolation by halves, not one call per route: {commit:?}"
    );
    assert_eq!(vm.counts().set_gsi_routing, u64::from(commit.calls));
    for (i, gsi) in gsis.iter().enumerate() {
        let state = routing.state(*gsi);
        if i == 5 {
            assert_eq!(
                state,
                RouteState::Rejected {
                    message: refused(0x45),
                    errno: libc::EINVAL
                }
            );
        } else {
            assert_eq!(state, RouteState::Committed(message(0x40 + i as u32)));
        }
    }
    assert!(!routing.is_dirty(), "nothing refused is left staged");

    // Another device's route commits with one call: nothing bad is staged.
    let other = routing.allocate().unwrap();
    routing.stage(other, message(0x50)).unwrap();
    assert_eq!(
        routing.commit().unwrap(),
        Commit {
            calls: 1,
            rejected: vec![]
        }
    );
    // The same refused message again costs nothing and stays refused...
    routing.stage(gsis[5], refused(0x45)).unwrap();
    assert!(!routing.is_dirty());
    assert_eq!(routing.commit().unwrap().calls, 0);
    // ...and a message KVM accepts commits at once.
    routing.stage(gsis[5], message(0x45)).unwrap();
    assert_eq!(routing.commit().unwrap().calls, 1);
    assert_eq!(routing.state(gsis[5]), RouteState::Committed(message(0x45)));
}

#[test]
fn a_refused_message_change_leaves_the_previous_route_in_kvm() {
    let (routing, _) = common::routing_on(common::vm_with_x2apic_api());
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    routing.stage(gsi, refused(0x41)).unwrap();
    let commit = routing.commit().unwrap();
    assert_eq!(commit.rejected.len(), 1);
    // KVM holds the old route, and so does the table: the next commit sends
    // exactly what KVM has.
    assert_eq!(routing.route(gsi), Some(message(0x40)));
    assert!(!routing.is_dirty());
    assert!(matches!(routing.state(gsi), RouteState::Rejected { .. }));
}
