//! [`TriggerCounts`]: the counts of a source's trigger eventfds, read
//! without consuming them (`eventfd-count` in `/proc/self/fdinfo`), so the
//! scenario runner can prove that each message a device sent to a vector
//! whose irqfd is detached has reached its eventfd before the next step.

use std::os::fd::AsRawFd;

use vfio_vectors::MsixSource;
use vmm_sys_util::eventfd::EventFd;

use crate::Error;

/// Duplicates of a source's trigger eventfds (the same eventfds: a count
/// read through one is the count of the other).
#[derive(Debug)]
pub struct TriggerCounts {
    fds: Vec<EventFd>,
}

impl TriggerCounts {
    /// Duplicates every trigger of `source` (they are stable for its life).
    pub fn of(source: &dyn MsixSource) -> Result<TriggerCounts, Error> {
        let fds = (0..source.vector_count())
            .map(|v| {
                source.trigger(v)?.try_clone().map_err(|e| Error::Device {
                    what: format!("dup of vector {v}'s trigger eventfd"),
                    source: e,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(TriggerCounts { fds })
    }

    /// The count of `vector`'s eventfd now: signals not yet consumed by a
    /// reader (KVM consumes them while the irqfd is attached).
    pub fn count(&self, vector: u16) -> Result<u64, Error> {
        let fd = self.fds.get(usize::from(vector)).ok_or_else(|| {
            Error::Check(format!(
                "vector {vector} out of range ({} triggers)",
                self.fds.len()
            ))
        })?;
        eventfd_count(fd)
    }
}

/// The count of `fd`, from its fdinfo.
fn eventfd_count(fd: &EventFd) -> Result<u64, Error> {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Device {
        what: format!("read {path}"),
        source: e,
    })?;
    count_in(&text).ok_or_else(|| Error::Check(format!("{path}: no eventfd-count in {text:?}")))
}

/// The `eventfd-count:` field of an eventfd's fdinfo (hexadecimal).
fn count_in(fdinfo: &str) -> Option<u64> {
    fdinfo.lines().find_map(|line| {
        let hex = line.strip_prefix("eventfd-count:")?.trim();
        u64::from_str_radix(hex, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_vectors::software::SoftwareSource;

    #[test]
    fn the_count_is_read_without_consuming_it() {
        let mut device = SoftwareSource::new(2).unwrap();
        device.enable(2).unwrap();
        let counts = TriggerCounts::of(&device).unwrap();
        assert_eq!(counts.count(1).unwrap(), 0);
        device.fire_n(1, 3).unwrap();
        assert_eq!(counts.count(1).unwrap(), 3);
        // Hexadecimal in fdinfo: 3 + 0x1d = 0x20.
        device.fire_n(1, 0x1d).unwrap();
        assert_eq!(counts.count(1).unwrap(), 0x20);
        assert_eq!(counts.count(0).unwrap(), 0);
        // Still there for a reader.
        assert_eq!(device.trigger(1).unwrap().read().unwrap(), 0x20);
        assert_eq!(counts.count(1).unwrap(), 0);
        assert!(counts.count(2).is_err());
    }

    #[test]
    fn the_count_field_is_found_among_the_others() {
        let info = "pos:\t0\nflags:\t02004002\nmnt_id:\t15\nino:\t1057\n\
                    eventfd-count:               1f\neventfd-id: 7\neventfd-semaphore: 0\n";
        assert_eq!(count_in(info), Some(0x1f));
        assert_eq!(count_in("pos:\t0\n"), None);
    }
}
