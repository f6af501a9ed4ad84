//! Every hypervisor operation failing at every point of every path: place,
//! BAR move, mask, unmask, message change, MSI-X enable and disable,
//! Function Mask, snapshot, restore and the service thread's fast-path
//! unmask. For each path a dry run counts the calls of each operation it
//! makes; then, for each operation and each of its calls in turn, a fresh
//! guest runs the path with exactly that call failing (EIO), the device
//! fires every vector inside the fault window, the fault heals, and with
//! no guest access and no call into the accelerator the service thread
//! retries what failed (the retry timer), then the invariants hold:
//!
//! - no panic, and a host-API error only when a fault was injected;
//! - the model (what the guest sees of the table) is what it would be
//!   without the fault;
//! - every vector converged: a masked one is held, an unmasked one delivers
//!   through an attached irqfd with a committed route;
//! - no interrupt lost: each fire made inside the fault window on an
//!   unmasked vector is delivered exactly once; one on a masked vector is
//!   pending (delivered while masked only when the host refused every way
//!   to mask it, which is then reported as MaskFailed for that vector);
//! - nothing leaked: GSIs held by the table = GSIs held by vectors; irqfds
//!   and ioeventfds registered (successful assigns minus successful
//!   deassigns) = those the accelerator holds;
//! - each failure reported at most once per vector and kind.

#[path = "support/settle.rs"]
mod settle;

use std::collections::BTreeSet;

use msix_accel::{AccelState, EventKind, MaskPath, Policy, RouteState};
use msix_hypervisor::{Op, Trigger};
use msix_model::MsixState;
use msix_rig::rig::{Rig, RigConfig};
use testvm::{Program, TestVm, Width};

const VECTORS: u16 = 4;

fn idt(v: u16) -> u8 {
    0x50 + v as u8
}

fn rig(policy: Policy, maskable: bool) -> Rig {
    Rig::new(RigConfig {
        vectors: VECTORS,
        policy,
        maskable,
        ..RigConfig::default()
    })
    .expect("rig boots")
}

/// MSI-X on; every vector programmed for its own IDT vector on vCPU 0;
/// vectors 0..3 unmasked, vector 3 masked.
fn bring_up(r: &Rig) {
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    for v in 0..VECTORS {
        p.write(Width::W32, r.entry(v, 0), TestVm::msi_address(0));
        p.write(Width::W32, r.entry(v, 8), u64::from(idt(v)));
        if v < 3 {
            p.write(Width::W32, r.entry(v, 12), 0);
        }
    }
    r.vm.run(0, &p).unwrap();
    r.accel.service_fast_path();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Place,
    MoveBar,
    Mask,
    Unmask,
    MessageChange,
    Enable,
    Disable,
    FunctionMask,
    Snapshot,
    Restore,
    ServiceThreadUnmask,
}

const PATHS: [Path; 11] = [
    Path::Place,
    Path::MoveBar,
    Path::Mask,
    Path::Unmask,
    Path::MessageChange,
    Path::Enable,
    Path::Disable,
    Path::FunctionMask,
    Path::Snapshot,
    Path::Restore,
    Path::ServiceThreadUnmask,
];

/// A snapshot with vector 3 masked and pending, from a device of its own.
fn pending_snapshot(policy: Policy, maskable: bool) -> AccelState {
    let src = rig(policy, maskable);
    bring_up(&src);
    src.source.fire(3).unwrap();
    let state = src.accel.snapshot().unwrap();
    assert!(state.is_pending(3));
    state
}

/// Runs `path` on `r` (already brought up, except for Restore). Host-API
/// errors are returned, not unwrapped: a fault may cause them. A path of
/// two accesses makes both whatever the first returned, as a guest does.
fn act(path: Path, r: &Rig, snapshot: Option<&AccelState>) -> Result<(), String> {
    let both =
        |a: msix_accel::Result<()>, b: msix_accel::Result<()>| a.and(b).map_err(|e| e.to_string());
    let guest = |p: Program| r.vm.run(0, &p).map(drop).map_err(|e| e.to_string());
    match path {
        // The service thread undoes retired ioeventfds while the path goes
        // on; waiting for it between steps keeps the calls of a path the
        // same from run to run (reclaiming is tested in kvm-msix).
        Path::Place => {
            let removed = r.accel.remove();
            settle::wait_retired(r);
            both(removed, r.accel.place(r.table_gpa, r.pba_gpa).map(drop))
        }
        Path::MoveBar => {
            // And back, so the guest's addresses stay valid.
            let away = r.table_gpa + 0x40_0000;
            let moved = r
                .accel
                .move_bar(away, away + (r.pba_gpa - r.table_gpa))
                .map(drop);
            settle::wait_retired(r);
            let back = r.accel.move_bar(r.table_gpa, r.pba_gpa).map(drop);
            settle::wait_retired(r);
            both(moved, back)
        }
        Path::Mask => {
            let mut p = Program::new();
            p.write(Width::W32, r.entry(0, 12), 1);
            p.read(Width::W32, r.entry(0, 0));
            guest(p)
        }
        Path::Unmask => {
            let mut p = Program::new();
            p.write(Width::W32, r.entry(3, 12), 0);
            p.read(Width::W32, r.pba_gpa); // an exit, so the unmask applies now
            guest(p)
        }
        Path::MessageChange => {
            let mut p = Program::new();
            // Redirection hint set: another message to the same vCPU.
            p.write(Width::W32, r.entry(1, 0), TestVm::msi_address(0) | 0x8);
            guest(p)
        }
        Path::Enable => both(
            r.accel.write_message_control(0),
            r.accel.write_message_control(0x8000),
        ),
        Path::Disable => r.accel.write_message_control(0).map_err(|e| e.to_string()),
        Path::FunctionMask => both(
            r.accel.write_message_control(0xC000),
            r.accel.write_message_control(0x8000),
        ),
        Path::Snapshot => r.accel.snapshot().map(drop).map_err(|e| e.to_string()),
        Path::Restore => r
            .accel
            .restore(snapshot.expect("restore needs a snapshot"))
            .map_err(|e| e.to_string()),
        Path::ServiceThreadUnmask => {
            // Absorbed by the ioeventfd under fast; the service thread (or,
            // under strict and trap, the exit itself) applies it.
            let mut p = Program::new();
            p.write(Width::W32, r.entry(3, 12), 0);
            guest(p)?;
            settle::wait_for(
                "the service thread to apply entry 3's absorbed unmask",
                r.vm.watchdog(),
                || settle::calls(r),
                || !r.accel.debug().is_masked(3).unwrap(),
            );
            Ok(())
        }
    }
}

/// Waits until the service thread undid every retired ioeventfd, those
/// KVM refused once included (the retry timer queues them again).
fn wait_retired(r: &Rig) {
    let debug = r.accel.debug();
    settle::wait_for(
        "the service thread to undo every retired ioeventfd, stuck ones included",
        r.vm.watchdog(),
        || (settle::calls(r) << 16) ^ debug.retired_pending() as u64,
        || debug.retired_pending() == 0 && !debug.retiring() && debug.retired_stuck() == 0,
    );
}

/// Waits until no vector is left to retry: the accelerator retried by
/// itself, the guest untouched. Progress: the rig's hypervisor calls (each
/// retry makes some).
fn wait_converged(r: &Rig) {
    let debug = r.accel.debug();
    settle::wait_for(
        "held vectors to be retried without a guest access",
        r.vm.watchdog(),
        || settle::calls(r),
        || !(0..VECTORS).any(|v| debug.retrying(v).unwrap_or(true)),
    );
}

/// What one run left behind.
struct Run {
    rig: Rig,
    result: Result<(), String>,
    model: MsixState,
    /// Calls made during `act`, by operation.
    calls: Vec<(Op, u64)>,
    /// Deliveries per vector since just before the in-window fires.
    fired_deliveries: Vec<u64>,
}

fn calls_of(r: &Rig) -> Vec<(Op, u64)> {
    Op::ALL
        .iter()
        .map(|op| (*op, r.faults().calls(*op)))
        .collect()
}

/// One run of `path`, with `fault` (operation, which of its calls during
/// the path) failing with EIO.
fn run(path: Path, policy: Policy, maskable: bool, fault: Option<(Op, u64)>) -> Run {
    let snapshot = (path == Path::Restore).then(|| pending_snapshot(policy, maskable));
    let r = rig(policy, maskable);
    if path != Path::Restore {
        bring_up(&r);
    }
    r.take_events();
    let before = calls_of(&r);
    if let Some((op, n)) = fault {
        r.faults().fail(op, Trigger::Nth(n), libc::EIO);
    }
    let result = act(path, &r, snapshot.as_ref());
    let calls = calls_of(&r)
        .into_iter()
        .zip(before)
        .map(|((op, after), (_, before))| (op, after - before))
        .collect();
    // Fires inside the fault window: nothing may be lost.
    r.vm.sentinel(0).unwrap();
    let base: Vec<u64> = (0..VECTORS).map(|v| r.vm.irq_count(idt(v))).collect();
    for v in 0..VECTORS {
        r.source.fire(v).unwrap();
    }
    r.faults().heal();
    // Nothing touches the guest or calls the accelerator now: the service
    // thread retries what failed on its own (the retry timer) and undoes
    // retired ioeventfds. A driver in steady state may never exit again.
    wait_retired(&r);
    wait_converged(&r);
    let model = without_pending(r.accel.debug().model_state());
    let fired_deliveries = (0..VECTORS)
        .map(|v| {
            if !r.accel.debug().is_masked(v).unwrap() {
                r.vm.wait_irq_count(idt(v), base[usize::from(v)] + 1)
                    .unwrap();
            }
            0
        })
        .collect::<Vec<_>>();
    r.vm.sentinel(0).unwrap();
    let fired_deliveries = fired_deliveries
        .iter()
        .enumerate()
        .map(|(v, _)| r.vm.irq_count(idt(v as u16)) - base[v])
        .collect();
    Run {
        rig: r,
        result,
        model,
        calls,
        fired_deliveries,
    }
}

fn without_pending(mut s: MsixState) -> MsixState {
    s.pending.clear();
    s
}

/// The invariants of the module documentation.
fn check(run: &Run, reference: &MsixState, what: &str) {
    let r = &run.rig;
    let debug = r.accel.debug();
    let injected = r.faults().injected();
    if let Err(e) = &run.result {
        assert!(!injected.is_empty(), "{what}: error without a fault: {e}");
    }
    assert_eq!(
        &run.model, reference,
        "{what}: the model differs from the fault-free run"
    );

    let events = r.take_all_events();
    let mut seen = BTreeSet::new();
    for e in &events {
        assert!(
            seen.insert((e.vector, e.kind)),
            "{what}: reported twice: {e}"
        );
    }
    let mask_failed = |v: u16| {
        events
            .iter()
            .any(|e| e.kind == EventKind::MaskFailed && e.vector == Some(v))
    };

    let enabled = r.accel.message_control() & 0x8000 != 0;
    let mut attached = 0u64;
    let mut gsis = 0usize;
    for v in 0..VECTORS {
        let masked = debug.is_masked(v).unwrap();
        let path = debug.mask_path(v).unwrap();
        let delivered = run.fired_deliveries[usize::from(v)];
        if masked {
            assert_ne!(
                path,
                MaskPath::Unmasked,
                "{what}: masked vector {v} delivers"
            );
            if delivered > 0 {
                assert!(
                    mask_failed(v),
                    "{what}: vector {v} delivered while masked, unreported"
                );
                assert_eq!(delivered, 1, "{what}: vector {v}");
            } else if enabled {
                assert!(
                    r.accel.pending(v).unwrap(),
                    "{what}: masked vector {v} lost its interrupt"
                );
            }
        } else {
            assert_eq!(path, MaskPath::Unmasked, "{what}: unmasked vector {v} held");
            assert!(debug.irqfd_attached(v).unwrap(), "{what}: vector {v} irqfd");
            assert!(
                matches!(debug.route(v).unwrap(), RouteState::Committed(_)),
                "{what}: vector {v} route {:?}",
                debug.route(v).unwrap()
            );
            assert_eq!(
                delivered, 1,
                "{what}: vector {v}: fired once in the fault window"
            );
        }
        attached += u64::from(debug.irqfd_attached(v).unwrap());
        gsis += usize::from(debug.gsi(v).unwrap().is_some());
    }
    assert_eq!(r.table.allocated_count(), gsis, "{what}: GSIs leaked");

    let counts = r.ioctls();
    let failed = |op: Op| injected.iter().filter(|f| f.op == op).count() as u64;
    let irqfds = (counts.irqfd_assign - failed(Op::IrqfdAssign))
        - (counts.irqfd_deassign - failed(Op::IrqfdDeassign));
    assert_eq!(irqfds, attached, "{what}: irqfds registered vs attached");
    let ioeventfds = (counts.ioeventfd_assign - failed(Op::IoeventfdAssign))
        - (counts.ioeventfd_deassign - failed(Op::IoeventfdDeassign));
    // Nothing stuck once the fault healed: every registration is in use.
    assert_eq!(
        ioeventfds,
        u64::from(r.accel.fast_entries()),
        "{what}: ioeventfds registered vs in use"
    );

    // After convergence the device works: unmasked vectors deliver once
    // more, masked ones hold.
    let base: Vec<u64> = (0..VECTORS).map(|v| r.vm.irq_count(idt(v))).collect();
    for v in 0..VECTORS {
        r.source.fire(v).unwrap();
        if !debug.is_masked(v).unwrap() {
            r.vm.wait_irq_count(idt(v), base[usize::from(v)] + 1)
                .unwrap();
        }
    }
    r.vm.sentinel(0).unwrap();
    for v in 0..VECTORS {
        let masked = debug.is_masked(v).unwrap();
        let got = r.vm.irq_count(idt(v)) - base[usize::from(v)];
        assert_eq!(got, u64::from(!masked), "{what}: vector {v} after recovery");
    }
}

/// After a BAR move and back: nothing is left registered at the address
/// the table visited (a guest write there exits and nobody claims it), and
/// a write of 0 outside the table never unmasks anything.
fn check_vacated(run: &Run, what: &str) {
    let r = &run.rig;
    let away = r.table_gpa + 0x40_0000;
    let before = r.vm.exits();
    let mut p = Program::new();
    for v in 0..VECTORS {
        p.write(Width::W32, away + u64::from(v) * 16 + 12, 0);
    }
    r.vm.run(0, &p).unwrap();
    assert_eq!(
        r.vm.exits().since(&before).mmio_unclaimed,
        u64::from(VECTORS),
        "{what}: a write at the vacated table was swallowed"
    );
    let masks: Vec<bool> = (0..VECTORS)
        .map(|v| r.accel.debug().is_masked(v).unwrap())
        .collect();
    let mut p = Program::new();
    for offset in [u64::from(VECTORS) * 16 + 12, 0x800 + 12, 0xFF0 + 12] {
        p.write(Width::W32, r.table_gpa + offset, 0);
    }
    r.vm.run(0, &p).unwrap();
    r.accel.service_fast_path();
    let after: Vec<bool> = (0..VECTORS)
        .map(|v| r.accel.debug().is_masked(v).unwrap())
        .collect();
    assert_eq!(after, masks, "{what}: a write outside the table unmasked");
}

fn every_fault_of(path: Path) {
    for policy in Policy::ALL {
        for maskable in [false, true] {
            let setup = format!("{path:?} {policy} maskable={maskable}");
            let clean = run(path, policy, maskable, None);
            assert!(clean.result.is_ok(), "{setup}: {:?}", clean.result);
            check(&clean, &clean.model, &format!("{setup} without faults"));
            let mut exercised = 0;
            for (op, count) in clean.calls.clone() {
                for n in 1..=count {
                    let what = format!("{setup}, {op} call {n} of {count} fails");
                    let faulty = run(path, policy, maskable, Some((op, n)));
                    check(&faulty, &clean.model, &what);
                    if path == Path::MoveBar {
                        check_vacated(&faulty, &what);
                    }
                    exercised += 1;
                }
            }
            if std::env::var_os("FAULT_VERBOSE").is_some() {
                eprintln!("{setup}: {exercised} faults, calls {:?}", clean.calls);
            }
        }
    }
}

#[test]
fn every_fault_while_placing_is_contained() {
    every_fault_of(Path::Place);
}

#[test]
fn every_fault_while_moving_the_bar_is_contained() {
    every_fault_of(Path::MoveBar);
}

#[test]
fn every_fault_while_masking_is_contained() {
    every_fault_of(Path::Mask);
}

#[test]
fn every_fault_while_unmasking_is_contained() {
    every_fault_of(Path::Unmask);
}

#[test]
fn every_fault_while_changing_a_message_is_contained() {
    every_fault_of(Path::MessageChange);
}

#[test]
fn every_fault_while_enabling_is_contained() {
    every_fault_of(Path::Enable);
}

#[test]
fn every_fault_while_disabling_is_contained() {
    every_fault_of(Path::Disable);
}

#[test]
fn every_fault_while_function_masking_is_contained() {
    every_fault_of(Path::FunctionMask);
}

#[test]
fn every_fault_while_taking_a_snapshot_is_contained() {
    every_fault_of(Path::Snapshot);
}

#[test]
fn every_fault_while_restoring_is_contained() {
    every_fault_of(Path::Restore);
}

#[test]
fn every_fault_of_the_service_threads_unmask_is_contained() {
    every_fault_of(Path::ServiceThreadUnmask);
}

#[test]
fn every_path_makes_hypervisor_calls_to_fail() {
    // The suite above is only as good as the calls it can fail: each path
    // makes some under fast without source masking.
    for path in PATHS {
        let clean = run(path, Policy::Fast, false, None);
        let total: u64 = clean.calls.iter().map(|(_, n)| n).sum();
        assert!(
            total > 0 || path == Path::Snapshot,
            "{path:?} made no hypervisor call"
        );
    }
}
