//! Hardware test of the kernel VFIO backend.
//!
//! Runs when `MSIX_ACCEL_VFIO_DEVICE` names a PCI device bound to vfio-pci,
//! as a sysfs path (`/sys/bus/pci/devices/0000:01:00.0`) or a BDF
//! (`0000:01:00.0`); otherwise it reports itself skipped and passes. The
//! device's own interrupts are not needed: the kernel's SET_IRQS
//! `ACTION_TRIGGER | DATA_BOOL` loopback (vfio_pci_set_msi_trigger signals
//! the trigger eventfd of each vector whose bool is set) proves that each
//! vector's eventfd is the one wired to it. `tests/vfio-vm/run.sh` runs it
//! inside a QEMU guest against an emulated igb and e1000e.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use vfio_vectors::kernel::VfioMsixSource;
use vfio_vectors::{Error, MsixSource};
use vmm_sys_util::eventfd::EventFd;

/// Takes the eventfd's count after waiting up to `timeout_ms` for it.
fn wait_count(fd: &EventFd, timeout_ms: i32) -> u64 {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let ret = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    assert!(ret >= 0, "poll: {}", std::io::Error::last_os_error());
    fd.read().unwrap_or(0)
}

#[test]
fn each_vector_eventfd_is_wired_by_enable_and_unwired_by_disable() {
    let Some(device) = std::env::var_os("MSIX_ACCEL_VFIO_DEVICE") else {
        // Written to the stderr handle, not eprintln!, so libtest's output
        // capture does not swallow it.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: no device named (set MSIX_ACCEL_VFIO_DEVICE)"
        );
        return;
    };
    let mut source = VfioMsixSource::open(Path::new(&device)).expect("open the vfio-pci device");
    let count = source.vector_count();
    let _ = writeln!(
        std::io::stderr(),
        "{}: {count} MSI-X vectors, {:?}",
        Path::new(&device).display(),
        source.features()
    );

    source.enable(count).expect("enable all vectors");
    assert_eq!(source.enabled_count(), count);
    for vector in 0..count {
        for v in 0..count {
            let _ = source.trigger(v).unwrap().read();
        }
        source
            .signal_loopback(vector)
            .expect("SET_IRQS DATA_BOOL loopback");
        let own = wait_count(source.trigger(vector).unwrap(), 2000);
        assert!(own >= 1, "vector {vector}: its eventfd was not signalled");
        for other in (0..count).filter(|&v| v != vector) {
            assert_eq!(
                wait_count(source.trigger(other).unwrap(), 0),
                0,
                "loopback of vector {vector} signalled vector {other}"
            );
        }
    }

    source.disable().expect("disable MSI-X");
    assert_eq!(source.enabled_count(), 0);
    assert!(matches!(
        source.signal_loopback(0),
        Err(Error::VectorOutOfRange { .. })
    ));
}
