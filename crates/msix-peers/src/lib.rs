//! Models of what peer VMMs do with a VFIO device's MSI-X table, run as
//! alternative MMIO handlers over the same test guest, KVM routing, irqfds
//! and software source as our accelerator, so that they execute exactly the
//! same guest programs.
//!
//! Each model follows the public source of its VMM (read, not copied; the
//! files and functions are named in each model's module and in
//! `docs/performance.md`): its own table state and the conditions under
//! which it acts, and the calls it then makes: KVM ioctls through the
//! counted hypervisor, and `VFIO_DEVICE_SET_IRQS` through the software
//! source ([`vfio_vectors::software::SoftwareSource::repoint`] for a trigger re-point, enable and
//! disable for the device's MSI-X), counted as `set_irqs`.
//!
//! - [`PeerModel::QemuLike`] ([`qemu`]): trigger re-pointed to a userspace
//!   eventfd on mask and back on unmask, route committed on every unmask,
//!   a masked vector's fire handled by the main loop, PBA served from the
//!   device mapping without an exit until a masked vector fires.
//! - [`PeerModel::CloudHypervisorLike`] ([`cloud_hypervisor`]): per-vector
//!   mask not acted on, route committed on every unmask, Function Mask
//!   enforced by deassigning every irqfd, PBA read from the device.
//! - [`PeerModel::DragonballLike`] ([`dragonball`]): irqfd deassigned on
//!   mask and assigned on unmask, the whole routing table rewritten on every
//!   address/data write, every irqfd assigned and deassigned at enable.
//! - [`PeerModel::CrosvmLike`] ([`crosvm`]): trigger re-pointed on mask and
//!   unmask, route updated only when the message changes.
//!
//! Where the real VMM handles an eventfd in another thread (QEMU's main
//! loop, crosvm's VFIO worker), so does the model ([`worker`]); all of a
//! device's work runs under one lock, as QEMU's under its big lock.

pub mod cloud_hypervisor;
mod conformance;
pub mod crosvm;
mod device;
pub mod dragonball;
mod model;
mod pba_page;
pub mod qemu;
mod rig;
mod state;
pub mod table;
pub mod worker;

pub use device::PeerDevice;
pub use model::PeerModel;
pub use pba_page::PbaPage;
pub use rig::PeerRig;
pub use state::{PeerState, PeerVector};
