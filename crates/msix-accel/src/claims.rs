//! Which guest physical addresses the device may claim, readable without
//! the device's lock.
//!
//! A VMM that offers every MMIO exit to each device in turn (or asks
//! [`crate::MsixAccelerator::claims`]) must not wait for a device whose
//! lock another vCPU holds when the address is not that device's: one
//! guest flooding its own device's table would otherwise slow every other
//! device's exits. So each placement also records the ranges it decodes
//! (a superset: the table's whole pages and the PBA) here, in the same
//! locked step that switches the decode; an address outside them is not
//! the device's without taking its lock. Reading this before or after a
//! concurrent move is the same as the exit landing before or after it.

use std::ops::Range;
use std::sync::{PoisonError, RwLock};

#[derive(Debug, Default)]
pub(crate) struct Claims {
    ranges: RwLock<[Option<Range<u64>>; 2]>,
}

impl Claims {
    /// Records where the table (its pages) and the PBA now decode.
    pub(crate) fn set(&self, table: Option<Range<u64>>, pba: Option<Range<u64>>) {
        // Two plain ranges: no invariant a panic could break.
        *self.ranges.write().unwrap_or_else(PoisonError::into_inner) = [table, pba];
    }

    /// Whether `gpa` may be the device's (then its decode, under its lock,
    /// says for sure).
    pub(crate) fn may_claim(&self, gpa: u64) -> bool {
        self.ranges
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flatten()
            .any(|r| r.contains(&gpa))
    }
}
