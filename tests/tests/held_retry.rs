//! A vector held because the host failed (a routing commit or an irqfd
//! assignment refused once) is retried by the accelerator itself: once the
//! host recovers, what it held is delivered exactly once, with no guest
//! access and no call into the accelerator (a driver in steady state never
//! touches the device again). Under every policy, with and without source
//! masking. The two-device case where GSIs run out and another device frees
//! them is `tests/scenarios/gsi-exhaustion-recovery*.scn`.

#[allow(dead_code)] // each test file uses its own part of the shared waits
#[path = "support/settle.rs"]
mod settle;

#[path = "support/masked_entry.rs"]
mod masked_entry;

use msix_accel::{EventKind, MaskPath, Policy};
use msix_hypervisor::{Op, Trigger};
use msix_rig::rig::Rig;
use testvm::{Program, Width};

const IDT: u8 = 0x50;

/// Waits until `what` holds of the accelerator; fails only after a whole
/// watchdog period in which the rig saw no hypervisor call (each retry
/// makes some), so a loaded host makes the wait longer, not failed.
fn wait_for(r: &Rig, what: &str, done: impl Fn(&Rig) -> bool) {
    settle::wait_for(what, r.vm.watchdog(), || settle::calls(r), || done(r));
}

fn held_then_recovered(policy: Policy, maskable: bool, op: Op) {
    let what = format!("{policy} maskable={maskable} {op}");
    // The message first (masked: no commit yet), then the unmask, whose
    // commit or irqfd assignment fails once with ENOMEM.
    let r = masked_entry::masked_entry_rig(policy, maskable, IDT);
    // Every call fails until heal(): the retry timer cannot succeed before
    // the test has seen the vector held.
    r.faults().fail(op, Trigger::From(1), libc::ENOMEM);
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    // Under fast the service thread applies the unmask within its window.
    wait_for(&r, "the unmask was applied and failed", |r| {
        !r.faults().injected().is_empty()
    });
    assert!(
        r.accel.debug().retrying(0).unwrap(),
        "{what}: the failure leaves the vector to retry"
    );
    assert_ne!(r.accel.debug().mask_path(0).unwrap(), MaskPath::Unmasked);
    // An interrupt while held, then the host recovers: nothing touches the
    // guest or the accelerator from here on.
    r.source.fire(0).unwrap();
    r.faults().heal();
    r.vm.wait_irq_count(IDT, 1)
        .unwrap_or_else(|e| panic!("{what}: the held interrupt never came: {e}"));
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(IDT), 1, "{what}: delivered exactly once");
    wait_for(&r, "the vector stopped retrying", |r| {
        !r.accel.debug().retrying(0).unwrap()
    });
    assert_eq!(r.accel.debug().mask_path(0).unwrap(), MaskPath::Unmasked);
    let kind = match op {
        Op::SetGsiRouting => EventKind::CommitFailed,
        _ => EventKind::UnmaskFailed,
    };
    let events = r.take_all_events();
    assert_eq!(
        events.iter().filter(|e| e.kind == kind).count(),
        1,
        "{what}: {events:?}"
    );
    // It keeps delivering.
    r.source.fire(0).unwrap();
    r.vm.wait_irq_count(IDT, 2).unwrap();
    r.vm.sentinel(0).unwrap();
    assert_eq!(r.vm.irq_count(IDT), 2, "{what}");
}

#[test]
fn a_vector_held_by_a_failed_commit_is_delivered_once_the_host_recovers() {
    for policy in Policy::ALL {
        for maskable in [false, true] {
            held_then_recovered(policy, maskable, Op::SetGsiRouting);
        }
    }
}

#[test]
fn a_vector_held_by_a_failed_irqfd_assignment_is_delivered_once_the_host_recovers() {
    for policy in Policy::ALL {
        for maskable in [false, true] {
            held_then_recovered(policy, maskable, Op::IrqfdAssign);
        }
    }
}
