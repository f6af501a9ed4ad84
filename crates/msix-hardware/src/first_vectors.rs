//! [`FirstVectors`]: a real source offered to the guest as a smaller MSI-X
//! table, its first `count` vectors. A VMM may show a guest fewer vectors
//! than the device has; the others are never wired, so the host keeps them
//! masked at the device. `msix-bench scenario --vfio` runs a file of N
//! vectors on a device with more this way.

use vfio_vectors::{Error, MsixSource, Result, SourceFeatures};
use vmm_sys_util::eventfd::EventFd;

/// The first `count` vectors of `inner`.
#[derive(Debug)]
pub struct FirstVectors<S> {
    inner: S,
    count: u16,
}

impl<S: MsixSource> FirstVectors<S> {
    /// Offers vectors `0..count` of `inner` (1..=its vector count).
    pub fn new(inner: S, count: u16) -> Result<Self> {
        if count == 0 || count > inner.vector_count() {
            return Err(Error::InvalidCount {
                count,
                max: inner.vector_count(),
            });
        }
        Ok(FirstVectors { inner, count })
    }

    fn check_vector(&self, vector: u16) -> Result<()> {
        if vector >= self.count {
            return Err(Error::VectorOutOfRange {
                vector,
                count: self.count,
            });
        }
        Ok(())
    }

    fn check_count(&self, count: u16) -> Result<()> {
        if count > self.count {
            return Err(Error::InvalidCount {
                count,
                max: self.count,
            });
        }
        Ok(())
    }
}

impl<S: MsixSource> MsixSource for FirstVectors<S> {
    fn vector_count(&self) -> u16 {
        self.count
    }
    fn features(&self) -> SourceFeatures {
        self.inner.features()
    }
    fn trigger(&self, vector: u16) -> Result<&EventFd> {
        self.check_vector(vector)?;
        self.inner.trigger(vector)
    }
    fn enable(&mut self, count: u16) -> Result<()> {
        self.check_count(count)?;
        self.inner.enable(count)
    }
    fn enabled_count(&self) -> u16 {
        self.inner.enabled_count()
    }
    fn grow(&mut self, count: u16) -> Result<()> {
        self.check_count(count)?;
        self.inner.grow(count)
    }
    fn disable(&mut self) -> Result<()> {
        self.inner.disable()
    }
    fn mask(&mut self, vector: u16) -> Result<()> {
        self.check_vector(vector)?;
        self.inner.mask(vector)
    }
    fn unmask(&mut self, vector: u16) -> Result<()> {
        self.check_vector(vector)?;
        self.inner.unmask(vector)
    }
    fn pending(&self, vector: u16) -> Result<bool> {
        self.check_vector(vector)?;
        self.inner.pending(vector)
    }
    fn suspend_masking(&mut self) {
        self.inner.suspend_masking();
    }
    fn resume_masking(&mut self) -> bool {
        self.inner.resume_masking()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_vectors::software::{FireOutcome, SoftwareSource};

    #[test]
    fn only_the_first_vectors_are_offered_and_the_rest_stay_unwired() {
        let device = SoftwareSource::maskable(10).unwrap();
        let mut first = FirstVectors::new(device.clone(), 4).unwrap();
        assert_eq!(first.vector_count(), 4);
        assert!(matches!(
            first.enable(5),
            Err(Error::InvalidCount { count: 5, max: 4 })
        ));
        assert!(matches!(
            first.mask(4),
            Err(Error::VectorOutOfRange {
                vector: 4,
                count: 4
            })
        ));
        assert!(first.trigger(4).is_err() && first.pending(9).is_err());
        first.enable(2).unwrap();
        first.grow(4).unwrap();
        assert_eq!(first.enabled_count(), 4);
        assert_eq!(device.fire(3).unwrap(), FireOutcome::Signalled);
        assert_eq!(first.trigger(3).unwrap().read().unwrap(), 1);
        // Vector 4 of the device is never wired: the host holds it.
        assert_eq!(device.fire(4).unwrap(), FireOutcome::Latched);
        first.mask(1).unwrap();
        assert_eq!(device.fire(1).unwrap(), FireOutcome::Latched);
        assert!(first.pending(1).unwrap());
    }

    #[test]
    fn an_empty_or_oversized_view_is_refused() {
        let device = SoftwareSource::new(5).unwrap();
        assert!(FirstVectors::new(device.clone(), 0).is_err());
        assert!(matches!(
            FirstVectors::new(device, 6),
            Err(Error::InvalidCount { count: 6, max: 5 })
        ));
    }
}
