//! The interrupt *source* side of one device's MSI-X.
//!
//! A source owns one eventfd per vector (`E[i]`): the device signals it, and
//! the same eventfd is what `irqfd-routes` attaches to KVM as an irqfd, so a
//! device interrupt reaches the guest without entering userspace.
//!
//! Two backends implement [`MsixSource`]:
//! - [`kernel::VfioMsixSource`]: a device assigned through kernel VFIO;
//! - [`software::SoftwareSource`]: a software MSI-X device for tests, demos
//!   and benchmarks, optionally able to mask a vector itself.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

pub mod error;
pub mod kernel;
pub mod software;
pub mod source;

pub use error::{Error, Result};
pub use source::{MsixSource, SourceFeatures};

/// The README's examples, compiled (and run unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
