//! The wired test guest every runner of the workspace stands on: a real KVM
//! guest ([`testvm`]) with accelerated MSI-X devices on software sources
//! ([`rig`]), the interrupt-storm generator on those sources ([`storm`]),
//! the guest-TSC-to-host-clock bracket ([`clock`]) and the few host facts a
//! runner checks first ([`sys`]).
//!
//! The benchmark, the stress mode, the `--vfio` hardware checks, the
//! conformance kit and the integration tests use it; it uses none of them.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

pub mod clock;
mod error;
pub mod rig;
pub mod storm;
pub mod sys;

pub use error::Error;
