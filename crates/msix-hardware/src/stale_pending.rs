//! Pending messages a device still holds from an earlier run.
//!
//! The device is opened once for a whole `--vfio` run and every check or
//! scenario builds a fresh accelerator on it. A run that ends with a vector
//! masked at the source (source masking) and raised leaves the device's
//! own Pending bit set, and MSI-X disabled does not clear it (PCI: the
//! message stays pending until the entry is unmasked). The next run's
//! first unmask of that entry would then deliver a message nobody raised in
//! that run. A VMM never sees this: VFIO resets a device when it is
//! opened. So before each fresh source is handed out, the vectors the
//! checks use are flushed: enabled (the kernel unmasks each entry as it
//! wires it) into throwaway eventfds until the device's Pending bits are
//! clear, then disabled.

use std::time::{Duration, Instant};

use vfio_vectors::kernel::VfioMsixSource;
use vfio_vectors::MsixSource;

use crate::nic::Nic;
use crate::Error;

/// How long a device may take to send a message it holds pending once its
/// entry is unmasked.
const FLUSH_WATCHDOG: Duration = Duration::from_secs(20);

/// Vectors below `count` whose Pending bit is set on `nic`'s device.
fn pending(nic: &Nic, count: u16) -> Result<Vec<u16>, Error> {
    let mut set = Vec::new();
    for vector in 0..count {
        if nic.regs().physical_pending(vector)? {
            set.push(vector);
        }
    }
    Ok(set)
}

/// Makes the device send every message it holds pending on vectors below
/// `count`, into `scratch` (a source nothing listens to), and disables
/// `scratch` again. Returns the vectors that were pending. Fails when one
/// stays pending for 20 s after its entry was unmasked.
pub fn flush(nic: &Nic, count: u16, mut scratch: VfioMsixSource) -> Result<Vec<u16>, Error> {
    let stale = pending(nic, count)?;
    if stale.is_empty() {
        return Ok(stale);
    }
    let top = stale.iter().max().map_or(0, |v| v + 1);
    scratch.enable(top)?;
    let deadline = Instant::now() + FLUSH_WATCHDOG;
    let result = loop {
        let left = pending(nic, top)?;
        if left.is_empty() {
            break Ok(stale);
        }
        if Instant::now() >= deadline {
            break Err(Error::Check(format!(
                "the device kept vectors {left:?} pending {} s after their entries were unmasked",
                FLUSH_WATCHDOG.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    scratch.disable()?;
    result
}
