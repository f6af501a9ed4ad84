//! The few host facts the bench needs from the kernel: whether /dev/kvm can
//! be opened, the process's CPU time, and the open-file limit.

use std::fs::OpenOptions;
use std::io;

/// Opens /dev/kvm read-write once, as every guest will: a one-line reason
/// naming the device and the errno when that fails.
pub fn check_kvm() -> Result<(), String> {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("/dev/kvm: cannot open it read-write: {e}")),
    }
}

/// User plus system CPU time of the whole process (every thread: vCPUs,
/// service thread, storm), in nanoseconds.
pub fn process_cpu_ns() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is valid writable memory of the size getrusage fills,
    // and RUSAGE_SELF is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    // SAFETY: getrusage returned 0, so it initialised the struct (and the
    // zeroed bytes were a valid rusage already).
    let usage = unsafe { usage.assume_init() };
    let ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (a 2048-vector device
/// needs about two descriptors per vector); returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: `limit` is a valid rlimit whose soft value does not exceed its
    // hard one, which setrlimit only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit.rlim_cur)
}
