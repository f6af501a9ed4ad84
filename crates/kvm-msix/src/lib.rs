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

/// Size of a page as the table layout and the memslots use it: 4 KiB, the
/// granule of PCI's MSI-X layout rules and of memslots on hosts with 4 KiB
/// pages (x86). On a host with larger pages (some aarch64 kernels use 64
/// KiB) a memslot covering one 4 KiB table page cannot exist: see
/// [`host_pages_are_4k`].
pub const PAGE_SIZE: u64 = 4096;

/// Whether the host's page size is [`PAGE_SIZE`]. When it is not, the
/// table is never mapped (a memslot would have to span a whole host page,
/// which may hold the PBA or other registers): placements fall back to
/// `trap`.
pub fn host_pages_are_4k() -> bool {
    static HOST_PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = *HOST_PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => PAGE_SIZE,
    });
    page == PAGE_SIZE
}

/// Rounds `value` up to a multiple of [`PAGE_SIZE`].
pub fn page_align_up(value: u64) -> u64 {
    value.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// The README's examples, compiled (and run unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
