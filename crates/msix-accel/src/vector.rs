//! One vector's delivery state: its GSI, its irqfd, and how it is held.

use irqfd_routes::{Gsi, Irqfd};
use serde::Serialize;

/// How a vector is kept from delivering, or that it delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum MaskPath {
    /// Delivering: irqfd attached with a committed route, source unmasked.
    Unmasked,
    /// Held by its irqfd being detached; signals accumulate in the eventfd.
    IrqfdDetached,
    /// Held at the source, which latches the pending bit.
    Source,
}

/// A vector as the hypervisor and the source hold it. Held (not
/// [`MaskPath::Unmasked`]) whenever the model masks it, and also while an
/// unmasked vector cannot deliver (its route refused, no GSI, a failed
/// call): its interrupts then wait as pending.
#[derive(Debug)]
pub(crate) struct Vector {
    /// Allocated when the vector first needs a route, released when MSI-X
    /// is disabled and on drop.
    pub(crate) gsi: Option<Gsi>,
    pub(crate) irqfd: Irqfd,
    pub(crate) mask: MaskPath,
    /// A failed step left the vector away from what the model wants: the
    /// next exit (or service) tries again.
    pub(crate) retry: bool,
    /// Held because the device used its commit rate: it stays held, even
    /// when the guest writes back a message whose route is committed, until
    /// a plan with a commit token lets it deliver (so a guest toggling
    /// messages in a loop costs the host no irqfd call per toggle either).
    pub(crate) throttled: bool,
}
