//! A guest's bad message harms only its own vector: KVM (with the x2APIC
//! API, as cloud-hypervisor runs it) refuses an MSI route whose address has
//! a nonzero byte in bits 39:32. The refused route is never left staged in
//! the VM-wide table, every other vector of this device and of other
//! devices keeps delivering, the VMM's own commits keep working, the entry
//! keeps what the guest wrote, its interrupts wait as pending (none lost,
//! none delivered to a bad message), and the held interrupt is delivered
//! exactly once when the guest writes a message KVM accepts.

use msix_accel::{EventKind, MaskPath, Policy, RouteState};
use msix_rig::rig::{Rig, RigConfig, RigDevice};
use testvm::{Program, TestVm, Width};

/// Bits 39:32 of a Message Address: a byte of the upper address dword that
/// KVM reads as destination ID bits with the x2APIC API and refuses.
const BAD_UPPER: u64 = 0x1;

fn rig(policy: Policy, maskable: bool) -> Rig {
    Rig::new(RigConfig {
        devices: 2,
        vectors: 4,
        policy,
        maskable,
        ..RigConfig::default()
    })
    .expect("rig boots")
}

/// The guest programs `entry` of `d` for `idt` on vCPU 0 with `upper` as
/// its upper address, and unmasks it.
fn program(p: &mut Program, d: &RigDevice, entry: u16, idt: u8, upper: u64) {
    p.write(Width::W32, d.entry(entry, 0), TestVm::msi_address(0));
    p.write(Width::W32, d.entry(entry, 4), upper);
    p.write(Width::W32, d.entry(entry, 8), u64::from(idt));
    p.write(Width::W32, d.entry(entry, 12), 0);
}

fn one_bad_entry_stays_with_its_vector(policy: Policy, maskable: bool) {
    let what = format!("{policy} maskable={maskable}");
    let r = rig(policy, maskable);
    let (d0, d1) = (&r.devices[0], &r.devices[1]);
    for d in &r.devices {
        d.accel.write_message_control(0x8000).unwrap();
    }
    let mut p = Program::new();
    program(&mut p, d0, 0, 0x50, BAD_UPPER);
    program(&mut p, d0, 1, 0x51, 0);
    program(&mut p, d1, 0, 0x60, 0);
    let upper = p.read(Width::W32, d0.entry(0, 4));
    let out = r.vm.run(0, &p).unwrap();
    for d in &r.devices {
        d.accel.service_fast_path();
    }
    assert_eq!(
        out.get(upper),
        BAD_UPPER,
        "{what}: the entry keeps what the guest wrote"
    );

    // Device 0's entry 1 and device 1's entry 0 deliver; entry 0 holds.
    d0.source.fire(1).unwrap();
    d1.source.fire(0).unwrap();
    d0.source.fire(0).unwrap();
    d0.source.fire(0).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x51, 1).unwrap(), 1, "{what}");
    assert_eq!(r.vm.wait_irq_count(0x60, 1).unwrap(), 1, "{what}");
    r.vm.sentinel(0).unwrap();
    assert_eq!(
        r.vm.irq_count(0x50),
        0,
        "{what}: nothing to a refused message"
    );
    assert!(d0.accel.pending(0).unwrap(), "{what}: held, not lost");
    assert_ne!(
        d0.accel.debug().mask_path(0).unwrap(),
        MaskPath::Unmasked,
        "{what}"
    );
    assert!(
        matches!(d0.accel.debug().route(0).unwrap(), RouteState::Rejected { errno, .. } if errno == libc::EINVAL),
        "{what}"
    );
    let mut p = Program::new();
    let pba = p.read(Width::W64, d0.pba_gpa);
    assert_eq!(
        r.vm.run(0, &p).unwrap().get(pba) & 1,
        1,
        "{what}: the guest sees it pending"
    );

    // Reported once, for that device and vector, with the errno.
    let events = r.take_all_events();
    assert_eq!(events.len(), 1, "{what}: {events:?}");
    assert_eq!(
        (
            events[0].device,
            events[0].vector,
            events[0].kind,
            events[0].errno
        ),
        (0, Some(0), EventKind::RouteRejected, Some(libc::EINVAL)),
        "{what}"
    );
    // Nothing refused is left staged: the VMM's own commit goes through.
    let gsi = r.routes.allocate().unwrap();
    r.routes
        .stage(gsi, irqfd_routes::MsiMessage::new(0xFEE0_0000, 0x70))
        .unwrap();
    assert_eq!(r.routes.commit().unwrap().calls, 1, "{what}");
    r.routes.release(gsi).unwrap();
    r.routes.commit().unwrap();

    // The guest writes the same bad message again: still held, not reported again.
    let mut p = Program::new();
    p.write(Width::W32, d0.entry(0, 4), BAD_UPPER);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.take_all_events(), vec![], "{what}");

    // The guest fixes the message: the held interrupt arrives exactly once.
    let mut p = Program::new();
    p.write(Width::W32, d0.entry(0, 4), 0);
    r.vm.run(0, &p).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x50, 1).unwrap(), 1, "{what}");
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(0x50), 1, "{what}: exactly once");
    assert!(!d0.accel.pending(0).unwrap(), "{what}");
    assert_eq!(
        d0.accel.debug().mask_path(0).unwrap(),
        MaskPath::Unmasked,
        "{what}"
    );
    d0.source.fire(0).unwrap();
    assert_eq!(
        r.vm.wait_irq_count(0x50, 2).unwrap(),
        2,
        "{what}: it delivers again"
    );
    // The others kept working throughout.
    d1.source.fire(0).unwrap();
    assert_eq!(r.vm.wait_irq_count(0x60, 2).unwrap(), 2, "{what}");
    assert_eq!(r.take_all_events(), vec![], "{what}");
}

#[test]
fn a_refused_route_under_fast_stays_with_its_vector_and_is_delivered_once_fixed() {
    one_bad_entry_stays_with_its_vector(Policy::Fast, false);
    one_bad_entry_stays_with_its_vector(Policy::Fast, true);
}

#[test]
fn a_refused_route_under_strict_stays_with_its_vector_and_is_delivered_once_fixed() {
    one_bad_entry_stays_with_its_vector(Policy::Strict, false);
    one_bad_entry_stays_with_its_vector(Policy::Strict, true);
}

#[test]
fn a_refused_route_under_trap_stays_with_its_vector_and_is_delivered_once_fixed() {
    one_bad_entry_stays_with_its_vector(Policy::Trap, false);
    one_bad_entry_stays_with_its_vector(Policy::Trap, true);
}

#[test]
fn a_live_change_to_a_refused_message_holds_the_vector_until_fixed() {
    for maskable in [false, true] {
        let what = format!("maskable={maskable}");
        let r = rig(Policy::Fast, maskable);
        let d = &r.devices[0];
        d.accel.write_message_control(0x8000).unwrap();
        let mut p = Program::new();
        program(&mut p, d, 2, 0x52, 0);
        r.vm.run(0, &p).unwrap();
        d.accel.service_fast_path();
        d.source.fire(2).unwrap();
        assert_eq!(r.vm.wait_irq_count(0x52, 1).unwrap(), 1, "{what}");

        // Changed while unmasked (no mask around it) to a refused message.
        let mut p = Program::new();
        p.write(Width::W32, d.entry(2, 4), BAD_UPPER);
        r.vm.run(0, &p).unwrap();
        assert_ne!(
            d.accel.debug().mask_path(2).unwrap(),
            MaskPath::Unmasked,
            "{what}"
        );
        d.source.fire(2).unwrap();
        r.vm.sentinel(0).unwrap();
        assert_eq!(r.vm.irq_count(0x52), 1, "{what}: held");
        assert!(d.accel.pending(2).unwrap(), "{what}");
        let kinds: Vec<EventKind> = r.take_all_events().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![EventKind::RouteRejected], "{what}");

        let mut p = Program::new();
        p.write(Width::W32, d.entry(2, 4), 0);
        r.vm.run(0, &p).unwrap();
        assert_eq!(r.vm.wait_irq_count(0x52, 2).unwrap(), 2, "{what}");
        r.vm.sentinel(0).unwrap();
        assert_eq!(r.vm.irq_count(0x52), 2, "{what}: the held one, once");
    }
}
