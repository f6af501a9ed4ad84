//! Irqfd attach/detach and eventfd pending state against the real /dev/kvm.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::Vm;
use common::{message, routing_on, vm_with_irqchip};
use irqfd_routes::{eventfd_drain, eventfd_pending, Error, Irqfd, IrqfdOp, MsiRouteTable};
use msix_hypervisor::IoctlCounts;
use vmm_sys_util::eventfd::EventFd;

fn trigger() -> EventFd {
    EventFd::new(libc::EFD_NONBLOCK).unwrap()
}

/// An irqfd on a VM whose GSI routes an MSI, the route committed first (as
/// on unmask), and the VM.
fn routed_irqfd() -> (Irqfd, u32, Arc<Vm>) {
    let (routing, vm) = routing_on(vm_with_irqchip());
    let gsi = routing.allocate().unwrap();
    routing.stage(gsi, message(0x40)).unwrap();
    routing.commit().unwrap();
    (Irqfd::new(vm.clone()), gsi, vm)
}

#[test]
fn attach_is_idempotent_and_costs_one_assign() {
    let vm = vm_with_irqchip();
    let fd = trigger();
    let mut irqfd = Irqfd::new(vm.clone());
    assert!(!irqfd.is_attached());
    irqfd.attach(&fd, 24).unwrap();
    irqfd.attach(&fd, 24).unwrap();
    assert!(irqfd.is_attached());
    assert_eq!(irqfd.gsi(), Some(24));
    irqfd.detach(&fd).unwrap();
    irqfd.detach(&fd).unwrap();
    assert!(!irqfd.is_attached());
    assert_eq!(
        vm.counts(),
        IoctlCounts {
            irqfd_assign: 1,
            irqfd_deassign: 1,
            ..IoctlCounts::default()
        }
    );
}

#[test]
fn detach_when_never_attached_issues_no_ioctl() {
    let vm = vm_with_irqchip();
    let mut irqfd = Irqfd::new(vm.clone());
    irqfd.detach(&trigger()).unwrap();
    assert_eq!(vm.counts().total(), 0);
}

#[test]
fn second_irqfd_on_the_same_eventfd_is_ebusy() {
    let vm = vm_with_irqchip();
    let fd = trigger();
    let mut first = Irqfd::new(vm.clone());
    let mut second = Irqfd::new(vm.clone());
    first.attach(&fd, 24).unwrap();
    match second.attach(&fd, 25) {
        Err(Error::Irqfd {
            op: IrqfdOp::Assign,
            gsi: 25,
            errno,
        }) => assert_eq!(errno, libc::EBUSY),
        other => panic!("expected EBUSY, got {other:?}"),
    }
    assert!(!second.is_attached());
    assert_eq!(vm.counts().irqfd_assign, 2, "failed calls count too");
}

#[test]
fn attaching_to_another_gsi_rebinds() {
    let vm = vm_with_irqchip();
    let fd = trigger();
    let mut irqfd = Irqfd::new(vm.clone());
    irqfd.attach(&fd, 24).unwrap();
    irqfd.attach(&fd, 25).unwrap();
    assert_eq!(irqfd.gsi(), Some(25));
    let counts = vm.counts();
    assert_eq!((counts.irqfd_assign, counts.irqfd_deassign), (2, 1));
}

#[test]
fn detach_through_another_eventfd_is_refused() {
    let fd = trigger();
    let other = trigger();
    let mut irqfd = Irqfd::new(vm_with_irqchip());
    irqfd.attach(&fd, 24).unwrap();
    assert!(matches!(
        irqfd.detach(&other),
        Err(Error::EventFdMismatch { .. })
    ));
    assert!(matches!(
        irqfd.attach(&other, 24),
        Err(Error::EventFdMismatch { .. })
    ));
    assert!(irqfd.is_attached());
}

#[test]
fn attach_does_not_consume_a_count_accumulated_while_detached() {
    let (mut irqfd, gsi, _) = routed_irqfd();
    let fd = trigger();
    fd.write(2).unwrap();
    irqfd.attach(&fd, gsi).unwrap();
    // KVM injected it, but the count stays: the caller drains it.
    assert!(eventfd_pending(&fd).unwrap());
    assert_eq!(eventfd_drain(&fd).unwrap(), 2);
    assert!(!eventfd_pending(&fd).unwrap());
}

#[test]
fn signal_while_attached_is_consumed_by_kvm() {
    let (mut irqfd, gsi, _) = routed_irqfd();
    let fd = trigger();
    irqfd.attach(&fd, gsi).unwrap();
    fd.write(1).unwrap();
    assert!(!eventfd_pending(&fd).unwrap());
}

#[test]
fn signals_accumulate_while_detached() {
    let (mut irqfd, gsi, vm) = routed_irqfd();
    let fd = trigger();
    irqfd.attach(&fd, gsi).unwrap();
    irqfd.detach(&fd).unwrap();
    for _ in 0..3 {
        fd.write(1).unwrap();
    }
    assert!(eventfd_pending(&fd).unwrap());
    assert!(eventfd_pending(&fd).unwrap(), "poll never consumes");
    assert_eq!(eventfd_drain(&fd).unwrap(), 3);
    let counts = vm.counts();
    assert_eq!(
        (
            counts.set_gsi_routing,
            counts.irqfd_assign,
            counts.irqfd_deassign
        ),
        (1, 1, 1)
    );
}
