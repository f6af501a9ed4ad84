//! [`Handler`]: what the end-to-end checks need from whoever handles the
//! device's MSI-X table for the guest, our accelerator ([`super::rig::HwRig`])
//! or a peer handler ([`super::peers::PeerRig`]), so that both run the very
//! same checks and guest programs.

use crate::cycle::CycleTarget;
use crate::nic::Nic;
use crate::Error;

/// A guest with the assigned device's MSI-X handled one way or another.
pub trait Handler: CycleTarget {
    /// The VMM forwards a Message Control write enabling MSI-X.
    fn enable_msix(&self) -> Result<(), Error>;
    /// Guest physical address of the PBA.
    fn pba_gpa(&self) -> u64;
    /// After the guest unmasked `vector`: it is wired for delivery.
    fn check_wired(&self, vector: u16) -> Result<(), String>;
    /// After the guest masked `vector`: it is masked the handler's way.
    fn check_masked(&self, vector: u16) -> Result<(), String>;
    /// Whether a raise of masked `vector` is held (not sent on) now.
    fn held(&self, nic: &Nic, vector: u16) -> Result<bool, Error>;
    /// Where a held raise shows (for messages).
    fn held_where(&self) -> &'static str;
    /// Why `vector` still counts as pending after its unmask delivered,
    /// None when nothing is left.
    fn still_pending(&self, nic: &Nic, vector: u16) -> Result<Option<String>, Error>;
    /// Exits a Linux mask cycle must cost.
    fn exits_per_cycle(&self) -> u64;
    /// Vectors the handler's interrupt source has enabled at the device
    /// now, when it goes through our source (None for the peers, which
    /// wire vectors their own way).
    fn source_enabled(&self) -> Option<u16>;
    /// An error the handler met while serving the guest, if any.
    fn errors(&self) -> Result<(), String>;
}
