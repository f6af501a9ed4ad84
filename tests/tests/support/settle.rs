//! Waiting for the state an assertion depends on, never for a time: each
//! wait polls its condition, and fails (naming what it waited for) only
//! after a whole watchdog period in which what it watches did not move
//! ([`testvm::Watchdog`]), so a loaded machine makes it slower, not failed.

use std::time::Duration;

use msix_rig::rig::Rig;
use testvm::Watchdog;

/// Polls `done` until it holds; every change of `progress` restarts the
/// watchdog's `period`. Fails the test with `what` and the watchdog's
/// account when a whole period passes without either.
pub fn wait_for(what: &str, period: Duration, progress: impl Fn() -> u64, done: impl Fn() -> bool) {
    let mut watchdog = Watchdog::new(period, progress());
    while !done() {
        if let Err(stalled) = watchdog.check(progress()) {
            panic!("watchdog: waited for {what}: {stalled}");
        }
        // Polling: how long this sleeps changes only how soon the
        // condition is seen.
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The rig's hypervisor calls so far: what a service thread's work shows
/// as (each retired ioeventfd undone, each unmask applied by a call).
pub fn calls(r: &Rig) -> u64 {
    r.ioctls().total()
}

/// Waits until the service thread has undone every retired unmask
/// ioeventfd of `r.accel` (none left, none in flight), so that later call
/// counts see none of it. Progress: the rig's calls and the retired count.
pub fn wait_retired(r: &Rig) {
    let debug = r.accel.debug();
    wait_for(
        "the service thread to undo the retired unmask ioeventfds",
        r.vm.watchdog(),
        || (calls(r) << 16) ^ debug.retired_pending() as u64,
        || debug.retired_pending() == 0 && !debug.retiring(),
    );
}
