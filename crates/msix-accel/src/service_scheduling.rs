//! How the ready-made service thread is scheduled: as spawned, or under
//! `SCHED_BATCH`, whose wake-ups do not preempt a running vCPU thread
//! (docs/fast-path.md, "Who applies an absorbed unmask").

/// How a [`crate::ServiceThread`]'s thread is scheduled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServiceScheduling {
    /// As it was spawned (normally `SCHED_OTHER`): woken by an absorbed
    /// unmask, it may preempt the vCPU thread that wrote it, when the
    /// scheduler puts it on that thread's CPU (the guest then waits for
    /// the whole pass).
    #[default]
    Normal,
    /// `SCHED_BATCH`: the same fair share, but Linux does not let its
    /// wake-up preempt the running thread; the woken servicer runs when a
    /// CPU is free or the running thread's turn ends, and the vCPU's next
    /// exit applies the unmask first if it comes sooner. Only when the
    /// unmask is applied changes (the pending interrupt is held
    /// meanwhile), never whether.
    Batch,
}

/// Puts the calling thread under `SCHED_BATCH`.
pub(crate) fn set_batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call to read; pid 0
    // is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
