//! A service thread under `SCHED_BATCH` (`ServiceScheduling::Batch`): its
//! wake-ups never preempt the vCPU thread, so an absorbed unmask is applied
//! by the servicer when it gets a CPU or by the vCPU's next exit, whichever
//! comes first. Which one does depends on timing: what is asserted holds
//! whatever it is. One test in its own process, so that its rig's service
//! thread is the only one.

#[path = "support/servicer.rs"]
mod servicer;

use std::time::Duration;

use msix_accel::ServiceScheduling;

use servicer::{bring_up, linux_cycles, pending_held_and_delivered_once, rig_with, wait_unmasks};

/// The scheduling policy of this process's service threads.
fn service_thread_policies() -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid: i32 = entry.file_name().to_str().unwrap().parse().unwrap();
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"));
        if comm.is_ok_and(|c| c.trim() == "msix-fast-path") {
            // SAFETY: sched_getscheduler only reads the thread's policy.
            out.push(unsafe { libc::sched_getscheduler(tid) });
        }
    }
    out
}

#[test]
fn a_batch_service_thread_runs_under_sched_batch_and_stays_exact() {
    for maskable in [false, true] {
        let r = rig_with(maskable, Duration::ZERO, ServiceScheduling::Batch);
        // One rig at a time in this test: its service thread is the only one.
        assert_eq!(service_thread_policies(), [libc::SCHED_BATCH]);
        bring_up(&r, 1);
        wait_unmasks(&r, 1);
        assert_eq!(linux_cycles(&r, 300), 300, "maskable={maskable}");
        wait_unmasks(&r, 301);
        let stats = r.accel.stats();
        assert_eq!(stats.mask_write_exits, 300);
        assert_eq!(stats.fast_path_unmasks, 301, "each unmask applied once");
        pending_held_and_delivered_once(&r, &format!("batch, maskable={maskable}"));
    }
}
