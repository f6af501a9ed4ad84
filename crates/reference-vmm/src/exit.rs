//! How the VMM learns that the guest is done: the first reason given
//! (guest reset through the i8042, a shutdown exit, a fatal vCPU error)
//! wins and wakes the main thread.

use std::sync::{Mutex, PoisonError};

use vmm_sys_util::eventfd::EventFd;

/// The VM's exit request: set once, waited for by the main thread.
#[derive(Debug)]
pub struct ExitRequest {
    reason: Mutex<Option<String>>,
    wake: EventFd,
}

impl ExitRequest {
    /// A request not yet made.
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitRequest {
            reason: Mutex::new(None),
            wake: EventFd::new(0)?,
        })
    }

    /// Asks the VMM to stop, for `reason`; later reasons are ignored.
    pub fn request(&self, reason: impl Into<String>) {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason.into());
        }
        // An eventfd write only fails when the counter would overflow,
        // which a handful of requests cannot reach.
        let _ = self.wake.write(1);
    }

    /// Blocks until a request was made; returns its reason.
    pub fn wait(&self) -> String {
        loop {
            // A blocking eventfd read fails only on EINTR: wait again.
            if self.wake.read().is_ok() {
                if let Some(reason) = self
                    .reason
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
                {
                    return reason;
                }
            }
        }
    }
}

/// vm-superio's i8042 calls this on the CPU-reset command (0xfe to port
/// 0x64), which Linux sends for `reboot=k`: the guest's reboot ends the VMM.
#[derive(Debug)]
pub struct ResetTrigger(pub std::sync::Arc<ExitRequest>);

impl vm_superio::Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.request("guest reset (i8042)");
        Ok(())
    }
}
