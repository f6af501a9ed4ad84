//! A tiny real KVM guest for tests and benchmarks.
//!
//! [`TestVm`] runs on the real `/dev/kvm`: an in-kernel irqchip, x2APIC, 1..=4
//! vCPUs in 64-bit mode (set up through KVM_SET_SREGS, identity-mapped with
//! 2 MiB pages over 0..4 GiB so a device BAR can sit at a realistic MMIO
//! address), and an interrupt handler that counts per IDT vector and per
//! vCPU, then EOIs. A [`Program`] built on the host (MMIO reads and writes of
//! any width, timestamps, loops) is assembled with iced-x86 and run by a
//! vCPU; the values its reads returned come back in a [`ProgramOutput`].
//! MMIO exits go to an [`MmioHandler`], and are counted by reason per vCPU.
//! Every wait on the guest is bounded by the watchdog of [`VmConfig`], which
//! fails a wait only when the guest made no progress for a whole period
//! ([`Watchdog`]), and then says where the vCPU was.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod error;
mod kernel;
mod layout;
mod memory;
mod program;
mod setup;
mod vm;
mod watchdog;

pub use error::{Error, Result};
pub use layout::{
    DOORBELL_VECTOR, MAX_RESULTS, MAX_VCPUS, PROGRAM_MAX, RAM_SIZE, RAM_SLOT, SENTINEL_VECTOR,
    SPURIOUS_VECTOR,
};
pub use program::{Program, ResultSlot, Width};
pub use vm::{ExitCounts, MmioHandler, ProgramOutput, TestVm, VmConfig};
pub use watchdog::{Stalled, Watchdog};

/// The README's examples, compiled (and run unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
