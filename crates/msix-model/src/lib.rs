//! A pure, sans-IO model of PCI MSI-X (PCI Local Bus 3.0 section 6.8.2;
//! PCIe Base "MSI-X Capability and Table Structure").
//!
//! A guest access to the MSI-X capability, table or Pending Bit Array goes
//! into an [`MsixModel`]; the list of [`Change`]s it caused comes out (MSI-X
//! enabled or disabled, vectors effectively masked or unmasked, messages
//! changed). The model performs no I/O: the KVM/VFIO binding carries the
//! changes out. Every guest-facing method accepts any offset and any length
//! and never panics.
//!
//! The exact semantics of every access (widths, alignment, reserved bits,
//! reset, change order, snapshots) are documented on the methods and in
//! `docs/semantics.md` of the msix-accel workspace.
//!
//! ```
//! use msix_model::{BarOffset, Change, MsixModel};
//!
//! let mut msix = MsixModel::new(8, BarOffset::new(2, 0), BarOffset::new(2, 0x1000))?;
//! // Linux: enable with Function Mask set, program entries, then clear Function Mask.
//! msix.write_message_control(0xc000);
//! msix.write_table(0, &0x0000_0000_fee0_0000u64.to_le_bytes()); // address
//! msix.write_table(8, &(0x30u64).to_le_bytes()); // data 0x30, Vector Control 0 (unmask)
//! assert_eq!(msix.write_message_control(0x8000), vec![Change::Unmasked { vector: 0 }]);
//! # Ok::<(), msix_model::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod change;
mod entry;
mod error;
mod location;
mod model;
mod registers;
mod snapshot;

pub use change::Change;
pub use entry::{MsiMessage, TableEntry};
pub use error::{Error, LocationFault, Structure};
pub use location::BarOffset;
pub use model::MsixModel;
pub use registers::*;
pub use snapshot::{MsixState, SNAPSHOT_VERSION};

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
