//! irqfd routing glue: GSI allocation, the VM-wide MSI routing table, and one irqfd per vector.
//!
//! The fast path of an MSI-X vector is one eventfd `E[i]` that the device
//! signals and that KVM consumes as an irqfd bound to a GSI whose route is an
//! MSI message. This crate owns the hypervisor side of that, through
//! [`msix_hypervisor::MsixVm`]:
//!
//! - [`GsiRouting`]: allocates GSIs above the irqchip's and keeps the whole
//!   VM-wide routing table in userspace, because `KVM_SET_GSI_ROUTING`
//!   replaces all of it. Routes are staged and committed in batches: one
//!   call per [`MsiRouteTable::commit`], none when nothing changed. A route
//!   the hypervisor refuses is isolated and reported ([`RouteState::Rejected`]);
//!   the others are committed. A VMM that already owns its table implements
//!   [`MsiRouteTable`] instead.
//! - [`Irqfd`]: binds one vector's eventfd to its GSI (`KVM_IRQFD`).
//! - [`eventfd_pending`] / [`eventfd_drain`]: the pending state of a detached
//!   vector, read with `poll()` so it is never consumed.
//!
//! # Ordering rules
//!
//! - On **unmask**, commit the route before attaching the irqfd: the irqfd
//!   injects as soon as it is attached, through whatever route the GSI has
//!   then (an AMD posted-interrupt host panic came from the other order).
//! - On **mask**, detach the irqfd before any route change.
//! - Right after attaching an irqfd to an eventfd that already counted
//!   signals, drain the eventfd with [`eventfd_drain`]: KVM has injected that
//!   count at once but does not reset it, so it would otherwise read as
//!   pending forever.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use irqfd_routes::{
//!     eventfd_drain, GsiRouting, Irqfd, IrqchipRoutes, MsiMessage, MsiRouteTable,
//! };
//! use msix_hypervisor::{CountingVm, KvmVm};
//! use vmm_sys_util::eventfd::EventFd;
//!
//! let vm = Arc::new(kvm_ioctls::Kvm::new()?.create_vm()?);
//! vm.create_irq_chip()?;
//! let vm = Arc::new(CountingVm::new(KvmVm::new(vm)));
//! let routing = GsiRouting::new(vm.clone(), IrqchipRoutes::X86KernelIrqchip)?;
//!
//! // Unmask: route first, then the irqfd, then drop the count KVM already injected.
//! let trigger = EventFd::new(libc::EFD_NONBLOCK)?;
//! let gsi = routing.allocate()?;
//! routing.stage(gsi, MsiMessage::new(0xfee0_0000, 0x40))?;
//! routing.commit()?;
//! let mut irqfd = Irqfd::new(vm.clone());
//! irqfd.attach(&trigger, gsi)?;
//! eventfd_drain(&trigger)?;
//!
//! // Mask: detach before anything else.
//! irqfd.detach(&trigger)?;
//! assert_eq!(vm.counts().set_gsi_routing, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod error;
mod eventfd;
mod irqfd;
mod isolation;
mod routing;

pub use error::{Error, IrqfdOp, Result};
pub use eventfd::{eventfd_drain, eventfd_pending};
pub use irqfd::Irqfd;
pub use msix_hypervisor::{Gsi, MsiMessage};
pub use routing::{
    Commit, GsiRouting, IrqchipRoutes, MsiRouteTable, RejectedRoute, RouteState, SharedRouting,
};

/// Compiles and runs the README's example as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
