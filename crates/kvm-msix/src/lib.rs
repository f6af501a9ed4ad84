//! KVM binding of one device's MSI-X table: where the guest's table accesses
//! go, and which of them never reach userspace.
//!
//! - [`TableShadow`]: the userspace copy of the table that the guest reads
//!   directly through a `KVM_MEM_READONLY` memslot (guest reads never exit).
//! - [`TablePlacement`]: puts the shadow at the table's guest physical
//!   address, registers one `KVM_IOEVENTFD` per entry on Vector Control with
//!   datamatch 0 (guest unmasks never exit), and decodes the MMIO exits that
//!   remain into table or PBA offsets.
//! - [`Policy`]: `fast`, `strict` or `trap` (see `docs/fast-path.md`).
//! - [`UnmaskEvents`]: one epoll set over the per-entry unmask eventfds, so a
//!   service thread waits on one fd and services every ready entry in a batch.
//! - [`RetiredIoevents`]: the unmask ioeventfds of a placement that went away,
//!   undone later by a servicer (each unregistration waits for an SRCU grace
//!   period) and reclaimed by a placement at the same address.
//!
//! Every hypervisor call goes through [`msix_hypervisor::MsixVm`].
//!
//! The MSI-X semantics live in `msix-model`; the sync protocol that ties the
//! two together (drain unmasks first, detach before route changes, ...) is
//! in `msix-accel`.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod error;
mod events;
mod placement;
mod policy;
mod retired;
mod shadow;

pub use error::{Error, Result};
pub use events::{UnmaskEvents, UnmaskSet};
pub use placement::{
    BarRegion, Location, PlacementConfig, PreparedUnmasks, SlotOutcome, SlotWork, TablePlacement,
};
pub use policy::{Policy, UnknownPolicy};
pub use retired::{Retired, RetiredIoevents};
pub use shadow::TableShadow;

/// Size of a guest page, the granule of memslots.
pub const PAGE_SIZE: u64 = 4096;

/// Rounds `value` up to a multiple of [`PAGE_SIZE`].
pub fn page_align_up(value: u64) -> u64 {
    value.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// The README's examples, compiled (and run unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
