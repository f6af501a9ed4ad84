//! MSI-X acceleration for VFIO-assigned PCI devices under KVM: the facade a
//! VMM links.
//!
//! One [`MsixAccelerator`] per device wires the MSI-X model (`msix-model`),
//! the KVM table binding (`kvm-msix`), the VM's GSI routes and irqfds
//! (`irqfd-routes`) and the device's interrupt source (`vfio-vectors`).
//! Interrupts travel device -> eventfd -> KVM irqfd -> guest without entering
//! userspace; under the default `fast` policy a Linux mask + flush-read +
//! unmask cycle costs one exit to userspace. A [`FastPathSubscriber`] (or a
//! [`ServiceThread`]) services the unmasks KVM absorbed.
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use irqfd_routes::{GsiRouting, IoctlCounters, IrqchipRoutes};
//! use msix_accel::{AccelConfig, MsixAccelerator, ServiceThread};
//! use vfio_vectors::software::SoftwareSource;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = Arc::new(kvm.create_vm()?);
//! vm.create_irq_chip()?;
//! let ioctls = Arc::new(IoctlCounters::default());
//! let routes = GsiRouting::new(vm.clone(), IrqchipRoutes::X86KernelIrqchip, ioctls.clone())?
//!     .into_shared();
//! let source = SoftwareSource::new(8)?;
//! let config = AccelConfig::new(8, 3, 1); // 8 vectors in BAR 3, memslot 1
//! let accel = Arc::new(MsixAccelerator::new(vm, routes, Box::new(source), config, ioctls)?);
//! accel.place(0xFE00_0000, 0xFE00_1000)?;
//! let _service = ServiceThread::spawn(&[accel.clone()])?;
//! // In the vCPU loop: accel.mmio_read(addr, data) / accel.mmio_write(addr, data);
//! // in config space: accel.write_message_control(value).
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![deny(missing_debug_implementations)]

mod accelerator;
mod config;
mod error;
mod service;
mod stats;

pub use accelerator::{AccelState, MaskPath, MsixAccelerator};
pub use config::{AccelConfig, DEFAULT_FAST_ENTRIES};
pub use error::{Error, Result};
pub use irqfd_routes::{
    GsiRouting, IoctlCounters, IoctlCounts, IrqchipRoutes, MsiRouteTable, SharedRouting,
};
pub use kvm_msix::Policy;
pub use msix_model::BarOffset;
pub use service::{FastPathSubscriber, ServiceThread};
pub use stats::AccelStats;
pub use vfio_vectors::{MsixSource, SourceFeatures};
