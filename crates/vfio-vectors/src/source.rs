//! The [`MsixSource`] trait: what the accelerator needs from an interrupt source.

use vmm_sys_util::eventfd::EventFd;

use crate::Result;

/// What a source can do beyond signalling its eventfds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceFeatures {
    /// The source can mask one vector itself and latch its pending bit
    /// (software source; kernel VFIO through an MSIX_MAPPABLE table mmap).
    pub maskable: bool,
    /// Vectors can be added while MSI-X stays enabled (kernel VFIO without
    /// VFIO_IRQ_INFO_NORESIZE, i.e. dynamic MSI-X allocation).
    pub dynamic: bool,
}

/// The interrupt source of one device's MSI-X vectors.
///
/// Vector numbers are table entry indices, `0..vector_count()`. Every vector
/// has one eventfd, created with the source and stable for its whole life,
/// returned by [`MsixSource::trigger`]; it is non-blocking.
pub trait MsixSource: Send + std::fmt::Debug {
    /// Number of vectors the device implements (its MSI-X Table Size).
    fn vector_count(&self) -> u16;

    /// What this source supports.
    fn features(&self) -> SourceFeatures;

    /// The eventfd the device signals for `vector`.
    fn trigger(&self, vector: u16) -> Result<&EventFd>;

    /// Enables MSI-X at the source with vectors `0..count`, each wired to its
    /// trigger eventfd. Enabling an enabled source re-enables it with `count`.
    fn enable(&mut self, count: u16) -> Result<()>;

    /// Number of vectors currently enabled (0 when MSI-X is disabled).
    fn enabled_count(&self) -> u16;

    /// Makes sure vectors `0..count` are enabled, adding the missing ones
    /// (per vector when the source is dynamic, else by disabling and
    /// re-enabling with the whole set). No-op when they already are.
    fn grow(&mut self, count: u16) -> Result<()>;

    /// Disables MSI-X at the source; no vector signals afterwards.
    fn disable(&mut self) -> Result<()>;

    /// Masks `vector` at the source: it stops signalling and latches its
    /// pending bit instead. Fails with [`crate::Error::MaskUnsupported`] when the
    /// source cannot mask (the caller then detaches the irqfd instead).
    fn mask(&mut self, vector: u16) -> Result<()>;

    /// Unmasks `vector` at the source; a latched pending message is signalled
    /// on the trigger eventfd exactly once.
    fn unmask(&mut self, vector: u16) -> Result<()>;

    /// The source's own pending bit for `vector` (false for a source that
    /// cannot mask).
    fn pending(&self, vector: u16) -> Result<bool>;

    /// Stops touching whatever the source masks through (for kernel VFIO:
    /// drops the mapping of the device's MSI-X table), because the device is
    /// about to stop decoding memory or to be reset; a later access would
    /// fault. Afterwards [`MsixSource::mask`] returns
    /// [`crate::Error::MaskUnsupported`]. Default: nothing to stop.
    fn suspend_masking(&mut self) {}

    /// Resumes source-side masking after [`MsixSource::suspend_masking`];
    /// returns whether the source can mask again.
    fn resume_masking(&mut self) -> bool {
        self.features().maskable
    }
}
