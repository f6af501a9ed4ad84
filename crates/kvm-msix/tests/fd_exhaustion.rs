//! A BAR move that runs out of file descriptors (EMFILE) at any point,
//! epoll sets and eventfds included, leaves every unmask ioeventfd
//! registered exactly where the placement's records say, or not at all.
//!
//! The fault is real: the process's RLIMIT_NOFILE is lowered so that the
//! k-th fd the move creates fails, for every k until a move needs no more.
//! This binary holds this one test, so no other test shares the limit.
//! The hypervisor is the fake behind `MsixVm`, which keeps ioeventfds as
//! KVM does (a registration holds its eventfd until undone at the same
//! address) and says whether a guest write would have been absorbed.

#[path = "support/nofile.rs"]
mod nofile;

use std::sync::Arc;

use kvm_msix::{Location, PlacementConfig, Policy, TablePlacement};
use msix_hypervisor::fake::FakeVm;

const ENTRIES: u16 = 8;
const TABLE_LEN: u64 = ENTRIES as u64 * 16;

fn vector_control(table: u64, v: u16) -> u64 {
    table + u64::from(v) * 16 + 12
}

/// The soft RLIMIT_NOFILE under which exactly `spare` more fds can be
/// created (fd numbers are allocated lowest first, holes included).
fn limit_leaving(spare: u64) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .collect();
    // The directory's own fd is listed too, and closed by now.
    let mut free = 0;
    let mut n = 0;
    loop {
        let is_free =
            !open.contains(&n) || std::fs::metadata(format!("/proc/self/fd/{n}")).is_err();
        if is_free {
            if free == spare {
                return n;
            }
            free += 1;
        }
        n += 1;
    }
}

/// Moves the table to `to` with only `spare` fds left to create; returns
/// whether the move fell below `fast` for want of one.
fn move_with_spare_fds(vm: &FakeVm, t: &mut TablePlacement, to: u64, spare: u64) -> bool {
    let normal = nofile::set_soft_nofile(limit_leaving(spare));
    let work = t.relocate(
        Some(Location {
            table_gpa: to,
            pba_gpa: Some(to + 0x1000),
            table_pages_shared: false,
        }),
        None,
    );
    let outcome = work.run(vm);
    t.finish(outcome);
    nofile::set_soft_nofile(normal);
    t.take_fallback().is_some()
}

/// What the guest can do to the table at `table`, moved away from `old`,
/// while retired registrations may still wait to be undone.
fn check_writes(vm: &FakeVm, t: &TablePlacement, table: u64, old: u64, what: &str) {
    let zero = 0u32.to_le_bytes();
    let mut ready = Vec::new();
    t.unmask_events().ready(&mut ready).unwrap();
    assert!(ready.is_empty(), "{what}: unmasks nobody wrote: {ready:?}");
    // Writes of 0 outside the table, at the old address included: a
    // registration may still absorb them there (retired, not yet undone),
    // but they never unmask anything.
    for v in 0..ENTRIES {
        vm.guest_write(vector_control(old, v), &zero);
    }
    for stray in [table + TABLE_LEN + 12, table + 0x800 + 12, table - 4] {
        assert!(!vm.guest_write(stray, &zero), "{what}: {stray:#x} absorbed");
    }
    t.unmask_events().ready(&mut ready).unwrap();
    assert!(
        ready.is_empty(),
        "{what}: a write outside the table unmasked {ready:?}"
    );
    // Each entry's unmask is absorbed exactly when the placement says so,
    // and then heard as that entry's.
    for v in 0..ENTRIES {
        let absorbed = vm.guest_write(vector_control(table, v), &zero);
        assert_eq!(absorbed, t.absorbs_unmask(v), "{what}: entry {v}");
        if absorbed {
            assert_eq!(
                t.unmask_events().address(v),
                Some(vector_control(table, v)),
                "{what}: entry {v}'s eventfd is registered elsewhere"
            );
            let mut ready = Vec::new();
            t.unmask_events().ready(&mut ready).unwrap();
            assert_eq!(ready, vec![v], "{what}: entry {v}'s unmask");
            assert!(t.unmask_events().drain(v).unwrap());
        }
    }
}

/// Once every retired registration is undone: nothing stuck, nothing left
/// at the old address (a write there exits), nothing registered that the
/// placement does not use.
fn check_undone(vm: &FakeVm, t: &TablePlacement, table: u64, old: u64, what: &str) {
    t.retired()
        .undo_all()
        .unwrap_or_else(|e| panic!("{what}: undo: {e}"));
    assert_eq!(t.retired().stuck(), 0, "{what}: stuck registrations");
    assert_eq!(t.retired().pending(), 0, "{what}: pending registrations");
    for v in 0..ENTRIES {
        assert!(
            !vm.guest_write(vector_control(old, v), &0u32.to_le_bytes()),
            "{what}: a write at the vacated entry {v} was swallowed"
        );
    }
    assert_eq!(
        vm.ioeventfd_count(),
        usize::from(t.fast_entries()),
        "{what}: registrations beyond those in use"
    );
    check_writes(vm, t, table, old, what);
}

#[test]
fn running_out_of_fds_at_any_point_of_a_move_leaves_every_ioeventfd_where_recorded() {
    // Only `fast` registers unmask ioeventfds; `strict` and `trap` must
    // create nothing per move, so their first round already needs no fd.
    for policy in Policy::ALL {
        let faults = out_of_fds_under(policy);
        if policy.absorbs_unmask() {
            assert!(
                faults > u32::from(ENTRIES),
                "{policy}: only {faults} fault points"
            );
        } else {
            assert_eq!(faults, 0, "{policy}: a move created an fd");
        }
    }
}

/// Every fault point of a move under `policy`; returns how many there were.
fn out_of_fds_under(policy: Policy) -> u32 {
    let vm = Arc::new(FakeVm::new(4096));
    let mut t = TablePlacement::new(
        vm.clone(),
        PlacementConfig {
            policy,
            memslot: 1,
            table_len: TABLE_LEN,
            pba_len: 8,
            fast_entries: 256,
        },
    )
    .unwrap();
    let home = 0x1000_0000u64;
    t.place(home, home + 0x1000, false).unwrap();
    let full = if policy.absorbs_unmask() { ENTRIES } else { 0 };
    assert_eq!(t.fast_entries(), full);
    let mut faults = 0;
    for spare in 0.. {
        let away = home + (spare + 1) * 0x10_0000;
        let what = format!("{policy}, {spare} fds to spare");
        // Away to a fresh address, its retired registrations left waiting.
        let degraded_away = move_with_spare_fds(&vm, &mut t, away, spare);
        check_writes(&vm, &t, away, home, &format!("{what}, away"));
        // Back home, where the move reclaims what waits there.
        let degraded_back = move_with_spare_fds(&vm, &mut t, home, spare);
        check_writes(&vm, &t, home, away, &format!("{what}, back"));
        check_undone(&vm, &t, home, away, &format!("{what}, back"));
        // A full placement again before the next round.
        move_with_spare_fds(&vm, &mut t, home + 0x100_0000, 1024);
        move_with_spare_fds(&vm, &mut t, home, 1024);
        t.retired().undo_all().unwrap();
        if !degraded_away && !degraded_back {
            break;
        }
        faults += 1;
        assert!(spare < 64, "a move still runs out of fds with 64 to spare");
    }
    faults
}
