//! What the service-thread tests share: a `fast` rig whose service thread
//! polls or is scheduled as asked, entries brought up without a mask
//! write, Linux mask cycles, and the pending check.

#![allow(dead_code)]

use std::time::Duration;

use msix_accel::{Policy, ServiceScheduling};
use msix_rig::rig::{Rig, RigConfig};
use testvm::{Program, Width};

#[path = "settle.rs"]
pub mod settle;

#[path = "entry0.rs"]
pub mod entry0;
pub use entry0::linux_cycles;

/// IDT vector of entry 0.
pub const VECTOR: u8 = 0x40;

/// A `fast` rig, its service thread polling at most `unmask_polling` and
/// scheduled as `scheduling` says.
pub fn rig_with(maskable: bool, unmask_polling: Duration, scheduling: ServiceScheduling) -> Rig {
    Rig::new(RigConfig {
        policy: Policy::Fast,
        maskable,
        unmask_polling,
        service_scheduling: scheduling,
        ..RigConfig::default()
    })
    .expect("rig boots")
}

/// Programs entry `e` for IDT vector [`VECTOR`] + `e` and unmasks it,
/// without any mask write (the entry is masked from reset); the servicer
/// applies the unmask.
pub fn bring_up(r: &Rig, entries: u16) {
    r.accel.write_message_control(0x8000).unwrap();
    let mut p = Program::new();
    for e in 0..entries {
        p.write(Width::W32, r.entry(e, 0), 0xFEE0_0000);
        p.write(Width::W32, r.entry(e, 4), 0);
        p.write(Width::W32, r.entry(e, 8), u64::from(VECTOR) + u64::from(e));
        p.write(Width::W32, r.entry(e, 12), 0);
    }
    r.vm.run(0, &p).unwrap();
}

/// Waits until the servicer (not a VMM call) has taken `n` absorbed
/// unmasks in all, then until its pass is over (a VMM call takes the
/// device's lock after it).
pub fn wait_unmasks(r: &Rig, n: u64) {
    settle::wait_for(
        "the servicer to apply the absorbed unmasks",
        r.vm.watchdog(),
        || r.accel.stats().fast_path_unmasks,
        || r.accel.stats().fast_path_unmasks >= n,
    );
    r.accel.service_fast_path();
}

/// Right after mask cycles (the servicer possibly still polling or not yet
/// run): a message raised while masked is held (none delivered), shown in
/// the PBA, and delivered exactly once at the unmask.
pub fn pending_held_and_delivered_once(r: &Rig, what: &str) {
    entry0::mask(r);
    r.source.fire_n(0, 3).unwrap();
    r.vm.sentinel_all().unwrap();
    assert_eq!(r.vm.irq_count(VECTOR), 0, "{what}");
    let mut pba = Program::new();
    let bits = pba.read(Width::W64, r.pba_gpa);
    let out = r.vm.run(0, &pba).unwrap();
    assert_eq!(out.get(bits) & 1, 1, "PBA bit 0, {what}");
    entry0::unmask_delivers_once(r, VECTOR, what);
    assert!(!r.accel.pending(0).unwrap());
}
