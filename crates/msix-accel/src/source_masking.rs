//! Masking at the source (the device's own MSI-X table through the VFIO
//! mapping) switched off and on around memory-decode and reset windows.

use crate::vector::MaskPath;
use crate::{EventKind, MsixAccelerator, Result};

impl MsixAccelerator {
    /// Moves every vector held at the source to the irqfd path and stops
    /// masking at the source: call it before the device stops decoding
    /// memory or is reset (kernel VFIO: the table mapping goes away and an
    /// access would fault). Each such vector's irqfd is detached first, then
    /// the source unmasked, so its pending message lands in the eventfd and
    /// is delivered on the guest's unmask. A vector whose irqfd cannot be
    /// detached stays held at the source (reported).
    pub fn suspend_source_masking(&self) -> Result<()> {
        let mut device = self.lock();
        device.service_unmasks();
        let device = &mut *device;
        let mut first = None;
        for i in 0..device.vectors.len() {
            if device.vectors[i].mask != MaskPath::Source {
                continue;
            }
            let vector = i as u16;
            if let Err(e) = device.hold_on_eventfd(vector, false) {
                if device.vectors[i].mask == MaskPath::Source {
                    device.reporter.report(
                        Some(vector),
                        EventKind::MaskFailed,
                        None,
                        format!("moving off source masking: irqfd detach: {e}"),
                    );
                }
                first.get_or_insert(e);
            }
        }
        device.source.suspend_masking();
        device.source_masking = false;
        first.map_or(Ok(()), Err)
    }

    /// Resumes masking at the source (when configured and the source can);
    /// vectors masked meanwhile stay on the irqfd path until their unmask.
    /// Returns whether source masking is in use again.
    pub fn resume_source_masking(&self) -> bool {
        let mut device = self.lock();
        let able = device.source.resume_masking();
        device.source_masking = able && self.config.source_masking;
        device.source_masking
    }
}
