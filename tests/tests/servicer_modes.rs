//! A service thread polling for absorbed unmasks
//! (`AccelConfig::unmask_polling`): it polls only after mask traffic, and
//! everything stays exact while it does; and one leaving absorbed unmasks
//! to the guest's next exit (`AccelConfig::unmask_deferral`): exact too,
//! and an unmask no exit follows is still applied, by its timer. Whether a poll catches an unmask
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
    bring_up, linux_cycles, pending_held_and_delivered_once, rig_with, wait_unmasks, VECTOR,
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

fn rig_with_deferral(window: Duration) -> Rig {
    Rig::new(msix_rig::rig::RigConfig {
        policy: msix_accel::Policy::Fast,
        maskable: true,
        unmask_deferral: window,
        ..msix_rig::rig::RigConfig::default()
    })
    .expect("rig boots")
}
