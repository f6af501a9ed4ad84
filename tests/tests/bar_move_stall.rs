//! How long a BAR move stalls a vCPU using the device: 256 entries with an
//! unmask ioeventfd each (each unregistration waits for an SRCU grace
//! period, milliseconds here), while a second vCPU toggles a mask. The new
//! ioeventfds are registered before the device's lock is taken and the old
//! ones undone by the service thread after it is released, so the toggling
//! vCPU waits only for the memslot swap. The stall is measured (guest TSC
//! between consecutive toggles) and printed, not asserted: a time is a
//! benchmark's business. What is asserted is exact: every toggle completed,
//! the fast path is whole at the new address, and every old ioeventfd was
//! undone.

#[path = "support/settle.rs"]
mod settle;

use std::time::{Duration, Instant};

use msix_accel::Policy;
use msix_rig::rig::{Rig, RigConfig};
use testvm::{Program, Width};

const ENTRIES: u16 = 256;
const TOGGLES: usize = 3000;
const MOVES: usize = 4;

#[test]
fn a_bar_move_with_256_fast_entries_is_measured_against_a_vcpu_toggling_masks() {
    let r = Rig::new(RigConfig {
        vectors: ENTRIES,
        vcpus: 2,
        policy: Policy::Fast,
        watchdog: Duration::from_secs(60),
        ..RigConfig::default()
    })
    .unwrap();
    assert_eq!(r.accel.fast_entries(), ENTRIES);
    r.accel.write_message_control(0x8000).unwrap();

    // vCPU 1 toggles entry 5's mask: the mask write exits (and takes the
    // device's lock), the unmask is absorbed; a timestamp after each.
    let mut p = Program::new();
    let stamps: Vec<_> = (0..TOGGLES)
        .map(|_| {
            p.write(Width::W32, r.entry(5, 12), 1);
            p.write(Width::W32, r.entry(5, 12), 0);
            p.timestamp()
        })
        .collect();
    r.vm.start(1, &p).unwrap();

    let bars = [r.table_gpa + 0x40_0000, r.table_gpa];
    let mut move_us = Vec::new();
    for m in 0..MOVES {
        let table = bars[m % 2];
        let started = Instant::now();
        assert_eq!(
            r.accel
                .move_bar(table, table + (r.pba_gpa - r.table_gpa))
                .unwrap(),
            Policy::Fast
        );
        move_us.push(started.elapsed().as_micros());
    }
    let out = r.vm.wait(1).unwrap();
    let retire_started = Instant::now();
    settle::wait_retired(&r);
    let retire_ms = retire_started.elapsed().as_millis();

    assert_eq!(r.accel.fast_entries(), ENTRIES, "the fast path is whole");
    let counts = r.ioctls();
    assert_eq!(
        counts.ioeventfd_assign - counts.ioeventfd_deassign,
        u64::from(ENTRIES),
        "every old ioeventfd undone, every new one in place"
    );
    assert_eq!(r.take_all_events(), vec![]);

    let khz = u64::from(r.vm.tsc_khz()).max(1);
    let mut gaps: Vec<u64> = stamps
        .windows(2)
        .map(|w| out.get(w[1]).saturating_sub(out.get(w[0])) * 1_000_000 / khz)
        .collect();
    assert_eq!(gaps.len(), TOGGLES - 1, "every toggle completed");
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    let p99 = gaps[gaps.len() * 99 / 100];
    let max = gaps[gaps.len() - 1];
    let stats = r.accel.stats();
    eprintln!(
        "BAR move stall: {MOVES} moves of a {ENTRIES}-entry fast table while vCPU 1 toggles a mask \
         ({TOGGLES} toggles): gap between toggles median {} us, p99 {} us, max {} us \
         (max/median {:.1}x). The device's lock was held at most {} us by a move step; \
         the longest memslot call (made without it) took {} us; move_bar calls took \
         {move_us:?} us; the service thread undid the old ioeventfds {retire_ms} ms after \
         the last move.",
        median / 1000,
        p99 / 1000,
        max / 1000,
        max as f64 / median.max(1) as f64,
        stats.relocation_lock_max_ns / 1000,
        stats.relocation_slot_max_ns / 1000,
    );
}
