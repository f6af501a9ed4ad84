//! `auto` in a real KVM guest: it reports what it chose (a stat and an
//! event), the Linux mask cycle then costs exactly the chosen mechanism's
//! exits with PCI semantics exact, a pinned verdict yields each mechanism
//! through the same measuring path, and measurements stay within their
//! documented bound (counted, never timed).

use std::time::{Duration, Instant};

use msix_accel::{AccelStats, EventKind, Policy};
use msix_rig::rig::{Rig, RigConfig};

#[path = "support/entry0.rs"]
mod entry0;
use entry0::linux_cycles;

const VECTOR: u8 = 0x40;

/// Entry 0 programmed for [`VECTOR`], MSI-X enabled, unmasked.
fn bring_up(r: &Rig) {
    entry0::bring_up(r, VECTOR);
}

fn rig(pinned: Option<Policy>, maskable: bool, recheck: Duration) -> Rig {
    Rig::new(RigConfig {
        policy: Policy::Auto,
        maskable,
        auto_pinned: pinned,
        auto_recheck: recheck,
        ..RigConfig::default()
    })
    .expect("rig boots")
}

/// The choice as the stats and the one event state it.
fn reported_choice(r: &Rig) -> Policy {
    let s: AccelStats = r.accel.stats();
    assert_eq!(s.auto_measurements, 1, "one measurement at placement");
    assert_eq!(s.auto_chose_fast + s.auto_chose_strict, 1);
    let events = r.take_events();
    let chosen: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::PolicyChosen)
        .collect();
    assert_eq!(chosen.len(), 1, "{events:?}");
    eprintln!("{}", chosen[0].detail);
    assert_eq!(s.events_of(EventKind::PolicyChosen), 1);
    let stated = if s.auto_chose_fast == 1 {
        Policy::Fast
    } else {
        Policy::Strict
    };
    assert!(
        chosen[0]
            .detail
            .starts_with(&format!("auto chose {stated}")),
        "{}",
        chosen[0].detail
    );
    stated
}

/// The cycle's exits are the chosen mechanism's, a fire while masked is
/// held as pending (none delivered: a sentinel after it) and delivered
/// exactly once on unmask.
fn exact_under(r: &Rig, chosen: Policy, what: &str) {
    assert_eq!(r.accel.policy(), chosen, "{what}: policy in force");
    bring_up(r);
    assert_eq!(
        linux_cycles(r, 100),
        100 * chosen.linux_cycle_exits(),
        "{what}: exits of 100 cycles under {chosen}"
    );
    entry0::mask(r);
    r.source.fire_n(0, 3).unwrap();
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(VECTOR), 0, "{what}: delivered while masked");
    assert!(r.accel.pending(0).unwrap(), "{what}: PBA bit while masked");
    entry0::unmask_delivers_once(r, VECTOR, what);
    assert!(!r.accel.pending(0).unwrap(), "{what}: PBA clear after");
}

#[test]
fn a_pinned_verdict_yields_each_mechanism_with_its_exact_exits() {
    for maskable in [false, true] {
        for pinned in [Policy::Fast, Policy::Strict] {
            let r = rig(Some(pinned), maskable, msix_accel::DEFAULT_AUTO_RECHECK);
            let what = format!("pinned {pinned} maskable={maskable}");
            assert_eq!(reported_choice(&r), pinned, "{what}");
            exact_under(&r, pinned, &what);
        }
    }
}

#[test]
fn the_measured_choice_is_reported_and_its_exits_are_exact() {
    for maskable in [false, true] {
        let r = rig(None, maskable, msix_accel::DEFAULT_AUTO_RECHECK);
        let chosen = reported_choice(&r);
        exact_under(&r, chosen, &format!("measured maskable={maskable}"));
    }
}

/// Moves device 0's table and PBA `n` times between two addresses.
fn move_back_and_forth(r: &Rig, n: u64) {
    let home = (r.table_gpa, r.pba_gpa);
    for i in 0..n {
        let away = if i % 2 == 0 { 0x10_0000 } else { 0 };
        r.accel.move_bar(home.0 - away, home.1 - away).unwrap();
    }
}

#[test]
fn measurements_stay_within_one_per_recheck_interval() {
    let interval = Duration::from_secs(3600);
    let moves = 20u64;
    let start = Instant::now();
    let r = rig(Some(Policy::Fast), true, interval);
    move_back_and_forth(&r, moves);
    let elapsed = start.elapsed();
    // The bound whatever the timing: 1 + t / interval in t (here t is
    // counted from before the first placement's measurement).
    let bound = 1 + elapsed.as_secs() / interval.as_secs();
    let s = r.accel.stats();
    assert!(
        (1..=bound).contains(&s.auto_measurements),
        "{} measurements in {moves} moves over {elapsed:?}",
        s.auto_measurements
    );
    assert_eq!(r.accel.policy(), Policy::Fast);

    // A zero interval measures at every placement: one each, none more.
    let r = rig(Some(Policy::Strict), true, Duration::ZERO);
    move_back_and_forth(&r, moves);
    let s = r.accel.stats();
    assert_eq!(s.auto_measurements, 1 + moves);
    assert_eq!(s.auto_chose_strict, 1 + moves);
    // The choice never changed: one event.
    assert_eq!(s.events_of(EventKind::PolicyChosen), 1);
    assert_eq!(r.accel.policy(), Policy::Strict);
}

#[test]
fn without_a_servicer_auto_places_strict_and_does_not_measure() {
    let mut r = rig(Some(Policy::Fast), true, Duration::ZERO);
    assert_eq!(r.accel.stats().auto_measurements, 1);
    assert_eq!(r.accel.policy(), Policy::Fast);
    r.stop_service();
    move_back_and_forth(&r, 1);
    assert_eq!(r.accel.policy(), Policy::Strict);
    assert_eq!(r.accel.stats().auto_measurements, 1);
}
