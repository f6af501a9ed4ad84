//! 1,000 BAR moves to fresh addresses by one guest under `ulimit -n 1100`
//! (RLIMIT_NOFILE lowered in this process, which holds only this test), a
//! device of 256 entries under `fast` with its service thread running: the
//! process's fd count stays under the documented bound (what it was with
//! the table placed, plus `MsixAccelerator::retired_cap` and one more
//! placement's worth), nothing
//! fails for want of an fd (no `PlacementDegraded`), nothing is stuck.
//! The move times (first and last 100) are printed, not asserted: run with
//! `--nocapture` to see them.

#[path = "../../crates/kvm-msix/tests/support/nofile.rs"]
mod nofile;

use std::time::Instant;

use msix_accel::{EventKind, Policy};
use msix_rig::rig::{Rig, RigConfig};

const VECTORS: u16 = 256;
const MOVES: u64 = 1000;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn a_thousand_bar_moves_under_ulimit_n_1100_stay_within_the_fd_bound() {
    nofile::set_soft_nofile(1100);
    let r = Rig::new(RigConfig {
        vectors: VECTORS,
        policy: Policy::Fast,
        ..RigConfig::default()
    })
    .expect("rig boots");
    let (home, pba) = (r.table_gpa, r.pba_gpa);
    assert_eq!(r.accel.fast_entries(), VECTORS);
    // Fewer than 3C + 32 unmask eventfds, C of them in use when measured.
    let bound = open_fds() + r.accel.retired_cap() + usize::from(VECTORS);
    let mut max_fds = 0;
    let mut times_ms = Vec::new();
    let mut policies = [0u64; 3];
    for i in 1..=MOVES {
        // Downwards from the device's BAR: fresh, below 4 GiB.
        let table = home - i * 0x10_0000;
        let start = Instant::now();
        let policy = r.accel.move_bar(table, table + (pba - home)).unwrap();
        times_ms.push(start.elapsed().as_secs_f64() * 1e3);
        policies[Policy::ALL.iter().position(|p| *p == policy).unwrap()] += 1;
        max_fds = max_fds.max(open_fds());
        assert!(
            max_fds <= bound,
            "move {i}: {max_fds} fds open, bound {bound}"
        );
    }
    let events = r.take_all_events();
    assert!(
        !events
            .iter()
            .any(|e| e.kind == EventKind::PlacementDegraded),
        "a placement ran out of something: {events:?}"
    );
    assert_eq!(r.accel.debug().retired_stuck(), 0, "stuck registrations");
    let throttled = events
        .iter()
        .filter(|e| e.kind == EventKind::RelocationThrottled)
        .count();
    let first = median(times_ms[..100].to_vec());
    let last = median(times_ms[times_ms.len() - 100..].to_vec());
    eprintln!(
        "bar churn: {MOVES} moves, fds max {max_fds} (bound {bound}, limit 1100), \
         placements fast/strict/trap {policies:?}, RelocationThrottled events {throttled}, \
         move time median first 100 {first:.3} ms, last 100 {last:.3} ms (ratio {:.2})",
        last / first
    );
}
