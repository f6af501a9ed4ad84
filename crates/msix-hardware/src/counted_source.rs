//! [`CountedSource`]: an interrupt source that counts what the accelerator
//! asks of it, so a report can show the VFIO work per Linux cycle next to
//! the KVM ioctls. It forwards every call to the real source unchanged.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use vfio_vectors::{MsixSource, Result, SourceFeatures};
use vmm_sys_util::eventfd::EventFd;

/// Live counts of source calls.
#[derive(Debug, Default)]
pub struct SourceCalls {
    set_irqs: AtomicU64,
    masks: AtomicU64,
    unmasks: AtomicU64,
    /// Vectors the source has enabled, after the last call.
    enabled: AtomicU16,
}

/// A copy of [`SourceCalls`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceCounts {
    /// Calls that wire or unwire vectors with VFIO_DEVICE_SET_IRQS
    /// (enable, grow, disable): at least one ioctl each.
    pub set_irqs: u64,
    /// Source masks (kernel VFIO: one 32-bit write to the mapped table).
    pub masks: u64,
    /// Source unmasks (likewise).
    pub unmasks: u64,
}

impl SourceCounts {
    /// The calls made between `earlier` and `self`.
    pub fn since(&self, earlier: &SourceCounts) -> SourceCounts {
        SourceCounts {
            set_irqs: self.set_irqs - earlier.set_irqs,
            masks: self.masks - earlier.masks,
            unmasks: self.unmasks - earlier.unmasks,
        }
    }
}

impl SourceCalls {
    /// Vectors the source had enabled after the last enable, grow or
    /// disable.
    pub fn enabled(&self) -> u16 {
        self.enabled.load(Ordering::Relaxed)
    }

    /// The counts now.
    pub fn snapshot(&self) -> SourceCounts {
        SourceCounts {
            set_irqs: self.set_irqs.load(Ordering::Relaxed),
            masks: self.masks.load(Ordering::Relaxed),
            unmasks: self.unmasks.load(Ordering::Relaxed),
        }
    }
}

/// A source that counts the calls made to `inner`.
#[derive(Debug)]
pub struct CountedSource<S> {
    inner: S,
    calls: Arc<SourceCalls>,
}

impl<S: MsixSource> CountedSource<S> {
    fn record_enabled<T>(&self, result: Result<T>) -> Result<T> {
        self.calls
            .enabled
            .store(self.inner.enabled_count(), Ordering::Relaxed);
        result
    }
}

impl<S> CountedSource<S> {
    /// Wraps `inner`; the counts are read through `calls`.
    pub fn new(inner: S, calls: Arc<SourceCalls>) -> Self {
        CountedSource { inner, calls }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl<S: MsixSource> MsixSource for CountedSource<S> {
    fn vector_count(&self) -> u16 {
        self.inner.vector_count()
    }
    fn features(&self) -> SourceFeatures {
        self.inner.features()
    }
    fn trigger(&self, vector: u16) -> Result<&EventFd> {
        self.inner.trigger(vector)
    }
    fn enable(&mut self, count: u16) -> Result<()> {
        bump(&self.calls.set_irqs);
        let result = self.inner.enable(count);
        self.record_enabled(result)
    }
    fn enabled_count(&self) -> u16 {
        self.inner.enabled_count()
    }
    fn grow(&mut self, count: u16) -> Result<()> {
        if count > self.inner.enabled_count() {
            bump(&self.calls.set_irqs);
        }
        let result = self.inner.grow(count);
        self.record_enabled(result)
    }
    fn disable(&mut self) -> Result<()> {
        if self.inner.enabled_count() > 0 {
            bump(&self.calls.set_irqs);
        }
        let result = self.inner.disable();
        self.record_enabled(result)
    }
    fn mask(&mut self, vector: u16) -> Result<()> {
        bump(&self.calls.masks);
        self.inner.mask(vector)
    }
    fn unmask(&mut self, vector: u16) -> Result<()> {
        bump(&self.calls.unmasks);
        self.inner.unmask(vector)
    }
    fn pending(&self, vector: u16) -> Result<bool> {
        self.inner.pending(vector)
    }
    fn suspend_masking(&mut self) {
        self.inner.suspend_masking();
    }
    fn resume_masking(&mut self) -> bool {
        self.inner.resume_masking()
    }
}
