//! A service thread polling for absorbed unmasks
//! (`AccelConfig::unmask_polling`): it polls only after mask traffic, and
//! everything stays exact while it does; and one leaving absorbed unmasks
//! to the guest's next exit (`AccelConfig::unmask_deferral`): exact too,
//! an unmask no exit follows is still applied, by its timer, and the
//! unmask that wakes the servicer reads back at once and releases a held
//! message at once (proven with a window no test waits out), and a
//! deferral ends at its limit however long the guest's mask exits last.
//! Whether a poll catches an unmask
//! depends on timing, so nothing here asserts that one did: the counts
//! asserted are those that hold whatever the timing (exits, unmasks
//! applied, deliveries, the PBA), and "no polling" is proven by the poll
//! iteration counter after a sentinel that the servicer handled.
//! The window's growth and shrinking are unit-tested in
//! `crates/msix-accel/src/poll_window.rs` on given delays.

#[path = "support/servicer.rs"]
mod servicer;

use std::time::Duration;

use msix_accel::ServiceScheduling;
use msix_rig::rig::Rig;
use testvm::{Program, Width};

use servicer::settle;
use servicer::{
    bring_up, entry0, linux_cycles, pending_held_and_delivered_once, rig_with, wait_unmasks, VECTOR,
};

fn rig(maskable: bool, unmask_polling: Duration) -> Rig {
    rig_with(maskable, unmask_polling, ServiceScheduling::Normal)
}

const POLL_MAX: Duration = Duration::from_micros(200);

#[test]
fn without_mask_traffic_the_servicer_never_polls() {
    // A window that could grow to a second: if anything but mask traffic
    // started polling, the counter would show it.
    let r = rig(true, Duration::from_secs(1));
    bring_up(&r, 8);
    wait_unmasks(&r, 8);
    for e in 0..8u8 {
        r.source.fire(u16::from(e)).unwrap();
        assert_eq!(r.vm.wait_irq_count(VECTOR + e, 1).unwrap(), 1);
    }
    // Table reads and a PBA read: exits and no exits, but no mask.
    let mut p = Program::new();
    for e in 0..8 {
        p.read(Width::W32, r.entry(e, 12));
    }
    p.read(Width::W64, r.pba_gpa);
    r.vm.run(0, &p).unwrap();
    // The sentinel: a BAR move retires the unmask ioeventfds, which the
    // servicer (woken for them, not for an unmask) undoes.
    let bar = r.devices[0].bar_gpa(0);
    r.accel.set_bar(0, Some(bar + 0x4_0000)).unwrap();
    settle::wait_retired(&r);
    let stats = r.accel.stats();
    assert_eq!(stats.mask_write_exits, 0);
    assert_eq!(stats.fast_path_unmasks, 8);
    assert_eq!(stats.ioeventfds_retired, 8);
    assert_eq!(stats.unmask_poll_windows, 0);
    assert_eq!(stats.unmask_poll_iterations, 0);
    assert_eq!(stats.unmasks_caught_polling, 0);
}

#[test]
fn with_polling_off_mask_traffic_never_polls() {
    let r = rig(true, Duration::ZERO);
    bring_up(&r, 1);
    wait_unmasks(&r, 1);
    assert_eq!(linux_cycles(&r, 200), 200);
    wait_unmasks(&r, 201);
    let stats = r.accel.stats();
    assert_eq!(stats.fast_path_unmasks, 201);
    assert_eq!(stats.unmask_poll_windows, 0);
    assert_eq!(stats.unmask_poll_iterations, 0);
    assert_eq!(stats.unmask_poll_window_ns, 0);
}

#[test]
fn polling_after_mask_traffic_keeps_exits_unmasks_and_pending_exact() {
    for maskable in [false, true] {
        let r = rig(maskable, POLL_MAX);
        bring_up(&r, 1);
        wait_unmasks(&r, 1);
        let before = r.ioctls();
        // Exactly one exit per cycle, whoever applies each unmask (the
        // polling servicer, the woken one, or the next mask exit).
        assert_eq!(linux_cycles(&r, 300), 300, "maskable={maskable}");
        wait_unmasks(&r, 301);
        let stats = r.accel.stats();
        assert_eq!(stats.mask_write_exits, 300);
        assert_eq!(stats.fast_path_unmasks, 301, "each unmask applied once");
        assert!(stats.unmasks_caught_polling <= 300);
        // Polling happens only in windows, and a window never passes the
        // maximum.
        if stats.unmask_poll_windows == 0 {
            assert_eq!(stats.unmask_poll_iterations, 0);
        }
        assert!(stats.unmask_poll_window_ns <= POLL_MAX.as_nanos() as u64);
        if maskable {
            let calls = r.ioctls().since(&before);
            assert_eq!((calls.irqfd_assign, calls.irqfd_deassign), (0, 0));
            assert_eq!(calls.set_gsi_routing, 0);
        }

        pending_held_and_delivered_once(&r, &format!("maskable={maskable}"));
    }
}

#[test]
fn deferral_keeps_every_count_exact_and_applies_a_lone_unmask_by_its_timer() {
    let r = rig_with_deferral(Duration::from_millis(1));
    bring_up(&r, 1);
    wait_unmasks(&r, 1);
    // The bring-up made no mask exit: nothing was deferred.
    assert_eq!(r.accel.stats().unmask_deferrals, 0);
    assert_eq!(linux_cycles(&r, 300), 300);
    wait_unmasks(&r, 301);
    let stats = r.accel.stats();
    assert_eq!(stats.mask_write_exits, 300);
    assert_eq!(stats.fast_path_unmasks, 301, "each unmask applied once");
    // Mask, fire while masked, read the PBA, unmask, and no exit after it:
    // only the servicer (at the deferral's end, if it deferred) can apply
    // the unmask, and the held message must arrive exactly once.
    pending_held_and_delivered_once(&r, "deferral");
}

/// A deferral window no test waits out: what the tests below see shown or
/// delivered was done by the servicer's look or by an exit, never by the
/// deferral's timer (every wait is bounded by the guest's watchdog, far
/// shorter).
const LONG_WINDOW: Duration = Duration::from_secs(3600);

/// A rig deferring for `window` with no coalescing window: no timer of the
/// servicer's but the deferral's can end anything during a test (a
/// coalescing window left armed by the bring-up would apply every absorbed
/// unmask when it ends, deferred or not).
fn rig_deferring_only(window: Duration) -> Rig {
    Rig::new(msix_rig::rig::RigConfig {
        policy: msix_accel::Policy::Fast,
        maskable: true,
        unmask_deferral: window,
        unmask_coalescing: Duration::ZERO,
        ..msix_rig::rig::RigConfig::default()
    })
    .expect("rig boots")
}

/// A rig deferring for [`LONG_WINDOW`], entry 0 brought up (the servicer
/// applied its unmask), then masked as Linux masks it: the tests' next
/// unmask comes within the window after that mask exit. Returns the rig and
/// what the mask's flush read saw.
fn entry0_masked_under_a_long_deferral() -> (Rig, u64) {
    let r = rig_deferring_only(LONG_WINDOW);
    bring_up(&r, 1);
    wait_unmasks(&r, 1);
    let flush = entry0::mask(&r);
    (r, flush)
}

#[test]
fn a_deferred_unmask_reads_back_from_the_servicers_look_and_the_next_exit_applies_it() {
    let (r, flush) = entry0_masked_under_a_long_deferral();
    assert_eq!(flush, 0xFEE0_0000, "the flush read");
    // The unmask wakes the servicer within the window after that mask
    // exit: it defers, but shows the unmask in the shadow first. The guest
    // spins reading Vector Control without exits, so only the servicer's
    // look can end the spin (the timer would take an hour; the watchdog
    // fails the run long before).
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 0);
    p.poll_until(Width::W32, r.entry(0, 12), 1, 0);
    r.vm.run(0, &p).unwrap();
    settle::wait_for(
        "the servicer to defer the unmask",
        r.vm.watchdog(),
        || r.accel.stats().unmask_deferrals,
        || r.accel.stats().unmask_deferrals >= 1,
    );
    let stats = r.accel.stats();
    assert_eq!(stats.unmask_deferrals, 1);
    assert_eq!(stats.mask_write_exits, 1);
    assert_eq!(
        stats.fast_path_unmasks, 2,
        "taken in by the servicer's look"
    );
    // Shown, not applied: the source still masks the vector, so a message
    // now is held, not delivered.
    r.source.fire(0).unwrap();
    r.vm.sentinel_all().unwrap();
    assert_eq!(
        r.vm.irq_count(VECTOR),
        0,
        "held until the unmask is applied"
    );
    // The guest's next exit applies it first: a PBA read (which depends on
    // every entry's mask) finds the message already delivered.
    let mut pba = Program::new();
    let bits = pba.read(Width::W64, r.pba_gpa);
    let out = r.vm.run(0, &pba).unwrap();
    assert_eq!(
        out.get(bits) & 1,
        0,
        "PBA bit 0 after the exit applied the unmask"
    );
    assert_eq!(r.vm.wait_irq_count(VECTOR, 1).unwrap(), 1);
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(VECTOR), 1, "delivered once");
    assert!(!r.accel.pending(0).unwrap());
    assert_eq!(r.accel.stats().unmask_deferrals, 1);
}

#[test]
fn under_deferral_an_unmask_with_a_held_message_releases_it_at_once() {
    let (r, _) = entry0_masked_under_a_long_deferral();
    r.source.fire_n(0, 3).unwrap();
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(VECTOR), 0);
    // The unmask makes no exit and comes within the window after the mask
    // exit; only the servicer's look, seeing the held message, can deliver
    // it before the watchdog (the timer would take an hour).
    entry0::unmask_delivers_once(&r, VECTOR, "released by the servicer's look");
    let stats = r.accel.stats();
    assert_eq!(
        stats.unmask_deferrals, 0,
        "not deferred: a message was held"
    );
    assert_eq!(stats.mask_write_exits, 1);
    assert!(!r.accel.pending(0).unwrap());
}

#[test]
fn under_deferral_an_unmask_that_needs_a_route_commit_is_not_deferred() {
    let (r, _) = entry0_masked_under_a_long_deferral();
    // A new message under mask: the entry's route is stale until a commit,
    // which only an exit on entry 0 or a servicer pass would make.
    let moved = VECTOR + 1;
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 8), u64::from(moved));
    r.vm.run(0, &p).unwrap();
    // The unmask wakes the servicer within the window after the mask
    // exit; deferred, it would wait an hour, and the message below would
    // stay held until the watchdog.
    let unmasks = r.accel.stats().unmasks;
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    // The servicer's decision first (a message fired before its look would
    // not be deferred anyway): it deferred, or it applied the unmask.
    wait_applied_or_deferred(&r, unmasks);
    // Only the servicer's pass (no VMM call here, no exit) can have
    // applied it, and only then is this message delivered before the
    // watchdog.
    r.source.fire(0).unwrap();
    assert_eq!(r.vm.wait_irq_count(moved, 1).unwrap(), 1);
    r.vm.sentinel_all().unwrap();
    assert_eq!(
        r.vm.irq_count(moved),
        1,
        "delivered once, to the new message"
    );
    assert_eq!(r.vm.irq_count(VECTOR), 0, "none to the old message");
    let stats = r.accel.stats();
    assert_eq!(
        stats.unmask_deferrals, 0,
        "not deferred: it needed a commit"
    );
    assert_eq!(stats.mask_write_exits, 1);
}

#[test]
fn a_deferral_ends_after_its_limit_while_the_guest_keeps_cycling_masks() {
    // Long against the gap between two of the guest's programs below, so
    // that mask exits keep coming less than a window apart throughout (the
    // limit stat below fails the test if they did not).
    const WINDOW: Duration = Duration::from_millis(250);
    // Far beyond the limit (4 windows): what fails the test if the
    // deferral never ends.
    const PATIENCE: Duration = Duration::from_secs(30);
    let r = rig_deferring_only(WINDOW);
    bring_up(&r, 2);
    wait_unmasks(&r, 2);
    let cycle_entry1 = |n: u64| {
        let mut p = Program::new();
        p.repeat(n, |p| {
            p.write(Width::W32, r.entry(1, 12), 1);
            p.read(Width::W32, r.entry(1, 0));
            p.write(Width::W32, r.entry(1, 12), 0);
        });
        r.vm.run(0, &p).unwrap();
    };
    // A mask cycle of entry 1: its unmask wakes the servicer, which defers
    // (nothing held, the route current) and stops watching unmasks; unless
    // it woke a window late and applied it, then try again.
    let start = std::time::Instant::now();
    while r.accel.stats().unmask_deferrals == 0 {
        assert!(start.elapsed() < PATIENCE, "the servicer never deferred");
        let unmasks = r.accel.stats().unmasks;
        cycle_entry1(1);
        wait_applied_or_deferred(&r, unmasks);
    }
    // Entry 0: masked, a new message (its route needs a commit, which
    // only an exit on entry 0 or a servicer pass makes), a message held.
    let moved = VECTOR + 2;
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 1);
    p.write(Width::W32, r.entry(0, 8), u64::from(moved));
    r.vm.run(0, &p).unwrap();
    r.source.fire(0).unwrap();
    // Its unmask wakes nobody (the servicer is deferring), and the mask
    // exits of entry 1 that follow do not apply it (it needs a commit).
    let mut p = Program::new();
    p.write(Width::W32, r.entry(0, 12), 0);
    r.vm.run(0, &p).unwrap();
    // The guest cycles entry 1 until the message arrives: only the
    // deferral's limit can end the deferral while mask exits keep coming.
    let start = std::time::Instant::now();
    while r.vm.irq_count(moved) == 0 {
        assert!(
            start.elapsed() < PATIENCE,
            "the deferral outlived its limit: entry 0's message still held after {PATIENCE:?}"
        );
        cycle_entry1(200);
    }
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(moved), 1, "delivered once");
    assert_eq!(r.vm.irq_count(VECTOR), 0, "none to the old message");
    assert!(!r.accel.pending(0).unwrap());
    // It was the limit, not a pause of the guest's mask exits.
    assert!(r.accel.stats().unmask_deferral_limits >= 1);
}

/// Waits until the servicer, woken by an unmask, applied it (more than
/// `unmasks` unmasks in all) or deferred (a deferral counted).
fn wait_applied_or_deferred(r: &Rig, unmasks: u64) {
    settle::wait_for(
        "the servicer to apply or defer the unmask",
        r.vm.watchdog(),
        || r.accel.stats().unmasks + r.accel.stats().unmask_deferrals,
        || {
            let s = r.accel.stats();
            s.unmasks > unmasks || s.unmask_deferrals > 0
        },
    );
}

fn rig_with_deferral(window: Duration) -> Rig {
    Rig::new(msix_rig::rig::RigConfig {
        policy: msix_accel::Policy::Fast,
        maskable: true,
        unmask_deferral: window,
        ..msix_rig::rig::RigConfig::default()
    })
    .expect("rig boots")
}
