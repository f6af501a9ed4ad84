//! The process's soft RLIMIT_NOFILE, for tests that make fd creation fail
//! for real. The limit is the whole process's: a test binary that lowers it
//! holds that one test, so no other test runs under it.
//!
//! Shared by `fd_exhaustion.rs` here and the workspace's
//! `tests/tests/bar_churn_fd_limit.rs` (by `#[path]`): it needs only libc,
//! which both already depend on, so neither gains a dependency.

/// Sets the soft RLIMIT_NOFILE to `limit`, at most the hard limit; returns
/// the soft limit it replaced, for the test to put back.
pub fn set_soft_nofile(limit: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    let previous = rl.rlim_cur;
    rl.rlim_cur = limit.min(rl.rlim_max);
    // SAFETY: setrlimit reads one valid rlimit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) }, 0);
    previous
}
