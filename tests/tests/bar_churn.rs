//! A guest rewriting its BAR in a loop cannot grow the host's state: the
//! unmask ioeventfds each placement retires wait for the servicer to undo
//! them (milliseconds each), and once their backlog reaches
//! `MsixAccelerator::retired_cap` (one placement's fast entries) the next
//! moves place the table under `strict` (no new ioeventfd), reported once
//! as `RelocationThrottled`, until the servicer has caught up. The servicer
//! here is declared but stalled (a VMM's busy event loop), so without the
//! cap every move would add a placement's worth of registrations and fds.

use msix_accel::{EventKind, Policy, RETIRED_SLACK};
use msix_rig::rig::{Rig, RigConfig};
use testvm::{Program, Width};

const VECTORS: u16 = 64;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn bar_churn_with_a_stalled_servicer_keeps_the_retired_backlog_and_fds_bounded() {
    let mut r = Rig::new(RigConfig {
        vectors: VECTORS,
        policy: Policy::Fast,
        ..RigConfig::default()
    })
    .expect("rig boots");
    // A servicer that never runs: retired registrations are never undone.
    r.stop_service();
    r.accel.register_servicer();
    let home = (r.table_gpa, r.pba_gpa);
    assert_eq!(r.accel.move_bar(home.0, home.1).unwrap(), Policy::Fast);
    let cap = r.accel.retired_cap();
    assert_eq!(cap, usize::from(VECTORS) + RETIRED_SLACK);
    let fds_before = open_fds();
    let mut policies = Vec::new();
    for i in 1..=40u64 {
        let table = home.0 - i * 0x10_0000;
        let policy = r.accel.move_bar(table, table + (home.1 - home.0)).unwrap();
        policies.push(policy);
        // The documented bound: current and retired registrations together
        // fewer than three placements' worth plus the slack.
        let backlog = r.accel.debug().retired_pending() + r.accel.debug().retired_stuck();
        let current = usize::from(r.accel.fast_entries());
        assert!(
            backlog + current < 3 * usize::from(VECTORS) + RETIRED_SLACK,
            "move {i}: {backlog} retired registrations wait, {current} in use (cap {cap})"
        );
        let fds = open_fds();
        assert!(
            fds < fds_before + 2 * usize::from(VECTORS) + RETIRED_SLACK,
            "move {i}: {fds} fds open, {fds_before} before the moves"
        );
    }
    // The first moves still went fast (backlog under the cap); the rest
    // waited.
    assert_eq!(policies[..2], [Policy::Fast, Policy::Fast]);
    assert!(
        policies[2..].iter().all(|p| *p == Policy::Strict),
        "{policies:?}"
    );
    let events = r.take_all_events();
    let throttled = events
        .iter()
        .filter(|e| e.kind == EventKind::RelocationThrottled)
        .count();
    assert_eq!(throttled, 1, "reported once: {events:?}");

    // The throttled placement is exact: an unmask exits and applies.
    r.accel.write_message_control(0x8000).unwrap();
    let at = home.0 - 40 * 0x10_0000;
    let mut p = Program::new();
    p.write(Width::W32, at + 12, 0);
    p.read(Width::W32, at + 12);
    r.vm.run(0, &p).unwrap();
    assert!(!r.accel.debug().is_masked(0).unwrap());
    assert!(r.accel.stats().unmask_write_exits >= 1, "the unmask exited");

    // The servicer catches up and places the table again where it is,
    // under fast, without waiting for another move.
    r.accel.undo_retired();
    assert_eq!(r.accel.debug().retired_pending(), 0);
    assert_eq!(r.accel.policy(), Policy::Fast);
    assert_eq!(r.accel.fast_entries(), VECTORS);
    let back = r.accel.move_bar(home.0, home.1).unwrap();
    assert_eq!(back, Policy::Fast);
    assert_eq!(r.accel.fast_entries(), VECTORS);
    r.accel.unregister_servicer();
}
