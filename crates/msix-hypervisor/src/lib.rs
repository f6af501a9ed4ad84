//! The few VM operations MSI-X acceleration needs, as one trait.
//!
//! [`MsixVm`] is what the rest of msix-accel calls instead of a KVM VM file
//! descriptor: a read-only memory region for the table shadow, ioeventfds
//! with a datamatch for the fast-path unmask, irqfds, the GSI routing table
//! and direct MSI injection. Three implementations come with it:
//!
//! - [`KvmVm`]: KVM through `kvm-ioctls`;
//! - [`CountingVm`]: counts every call by kind ([`IoctlCounts`]), how tests
//!   and the bench learn an operation's exact hypervisor cost;
//! - [`FaultyVm`]: fails chosen calls with a chosen errno, for fault
//!   injection tests.
//!
//! A VMM that has its own hypervisor layer (cloud-hypervisor's
//! `hypervisor::Vm`, for one) implements [`MsixVm`] over it in a few lines;
//! `docs/integration.md` shows how. [`fake::FakeVm`] keeps
//! KVM's state in memory, for fuzzing where there is no `/dev/kvm`.
//!
//! ```
//! use msix_hypervisor::{CountingVm, FaultyVm, MsixVm, Op, Trigger};
//! # use msix_hypervisor::fake::FakeVm;
//! # let kvm_vm = FakeVm::new(4096);
//! // let kvm_vm = KvmVm::new(vm_fd);
//! let vm = CountingVm::new(FaultyVm::new(kvm_vm));
//! vm.inner().fail(Op::IrqfdAssign, Trigger::Nth(1), libc::ENOSPC);
//! let fd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)?;
//! assert!(vm.register_irqfd(&fd, 40).is_err());
//! assert_eq!(vm.counts().irqfd_assign, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod counting;
mod error;
pub mod fake;
mod fault;
mod kvm;
mod route;
mod vm;

pub use counting::{CountingVm, IoctlCounters, IoctlCounts};
pub use error::{Error, Op, Result};
pub use fault::{FaultyVm, InjectedFault, Trigger};
pub use kvm::{kvm_routing_entry, KvmVm};
pub use route::{x86, Gsi, MsiMessage, RouteKind, RoutingEntry};
pub use vm::MsixVm;

/// The README's examples, compiled (and run unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
