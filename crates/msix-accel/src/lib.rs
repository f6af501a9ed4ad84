//! MSI-X acceleration for VFIO-assigned PCI devices under KVM: the facade a
//! VMM links.
//!
//! One [`MsixAccelerator`] per device wires the MSI-X model (`msix-model`),
//! the table binding (`kvm-msix`), the VM's GSI routes and irqfds
//! (`irqfd-routes`) and the device's interrupt source (`vfio-vectors`), all
//! hypervisor calls going through [`MsixVm`]. Interrupts travel device ->
//! eventfd -> KVM irqfd -> guest without entering userspace; under the
//! `fast` policy a Linux mask + flush-read + unmask cycle costs one exit to
//! userspace, under `strict` two; the default, `auto`, measures the host at
//! placement and runs whichever is cheaper there. A servicer ([`ServiceThread`] or
//! [`FastPathSubscriber`]) services the unmasks KVM absorbed.
//!
//! A hostile guest or a failing host harms at most the vector concerned:
//! what fails is contained (the vector holds its interrupts as pending) and
//! reported to the VMM as an [`AccelEvent`] through the [`EventSink`] it
//! chooses.
//!
//! ```
//! use std::sync::Arc;
//! use irqfd_routes::{GsiRouting, IrqchipRoutes};
//! use msix_accel::{AccelConfig, EventLog, MsixAccelerator, ServiceThread};
//! use msix_hypervisor::KvmVm;
//! use vfio_vectors::software::SoftwareSource;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm_fd = Arc::new(kvm.create_vm()?);
//! vm_fd.create_irq_chip()?;
//! let vm = Arc::new(KvmVm::new(vm_fd));
//! let routes = GsiRouting::new(vm.clone(), IrqchipRoutes::X86KernelIrqchip)?.into_shared();
//! let source = SoftwareSource::new(8)?;
//! let config = AccelConfig::new(8, 3, 1); // 8 vectors in BAR 3, memslot 1, policy auto
//! let events = Arc::new(EventLog::new());
//! let accel = Arc::new(MsixAccelerator::new(vm, routes, Box::new(source), config, events)?);
//! // Before place: `fast` needs a servicer, and `auto` measures only with one.
//! let _service = ServiceThread::spawn(&[accel.clone()])?;
//! // `auto` measures here (up to 200 ms, on this thread): `fast` or `strict`.
//! let placed = accel.place(0xFE00_0000, 0xFE00_1000)?;
//! assert!(matches!(placed, msix_accel::Policy::Fast | msix_accel::Policy::Strict));
//! // In the vCPU loop: accel.mmio_read(addr, data) / accel.mmio_write(addr, data);
//! // in config space: accel.write_message_control(value).
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod absorbed;
mod accelerator;
mod auto_choice;
mod auto_policy;
mod claims;
mod config;
mod debug;
mod deferral;
mod device;
mod error;
mod event;
mod executor;
mod exits;
mod fast_path;
mod migration;
mod plan;
mod poll_window;
mod rate;
mod relocation;
mod report;
mod retry;
mod service;
mod service_scheduling;
mod source_masking;
mod stats;
mod vector;

pub use accelerator::MsixAccelerator;
pub use auto_policy::{AUTO_BUDGET, AUTO_EXIT_WEIGHT, AUTO_ROUNDS, DEFAULT_AUTO_RECHECK};
pub use config::{
    AccelConfig, DEFAULT_FAST_ENTRIES, DEFAULT_POLICY, DEFAULT_UNMASK_BATCH,
    DEFAULT_UNMASK_COALESCING, DEFAULT_UNMASK_DEFERRAL, DEFAULT_UNMASK_POLLING,
};
pub use debug::AccelDebug;
pub use deferral::UNMASK_DEFERRAL_MAX_WINDOWS;
pub use error::{Error, Result};
pub use event::{AccelEvent, EventKind, EventLog, EventSink, IgnoreEvents};
pub use irqfd_routes::{GsiRouting, IrqchipRoutes, MsiRouteTable, RouteState, SharedRouting};
pub use kvm_msix::Policy;
pub use migration::{AccelState, ACCEL_STATE_VERSION};
pub use msix_hypervisor::{IoctlCounts, KvmVm, MsixVm};
pub use msix_model::BarOffset;
pub use poll_window::POLL_GROW_START;
pub use rate::{COMMIT_BURST, COMMIT_INTERVAL, EVENT_BURST, EVENT_INTERVAL};
pub use relocation::RETIRED_SLACK;
pub use retry::{RETRY_FIRST, RETRY_MAX};
pub use service::{FastPathSubscriber, ServiceThread};
pub use service_scheduling::ServiceScheduling;
pub use stats::AccelStats;
pub use vector::MaskPath;
pub use vfio_vectors::{MsixSource, SourceFeatures};

/// The README's examples, compiled (and run unless marked `no_run`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
