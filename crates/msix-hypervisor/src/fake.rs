//! [`FakeVm`]: an in-memory [`MsixVm`] that keeps the state KVM would keep
//! and refuses what KVM refuses, for fuzzing and for tests that run where no
//! `/dev/kvm` exists. It is not a substitute for tests on the real thing.
//!
//! It models the KVM behaviour the layers above rely on: one irqfd per
//! eventfd (`EBUSY`), an irqfd assigned to an eventfd that counts signals
//! injects at once and leaves the count, signals of an attached irqfd are
//! consumed by the injection, routes to GSIs past the limit or (with the
//! x2APIC API's 32-bit IDs) MSI addresses with bits 7:0 of the upper dword
//! set are `EINVAL`, ioeventfds are unique per address and datamatch.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use crate::{Error, Gsi, MsiMessage, MsixVm, Op, Result, RouteKind, RoutingEntry};

/// One interrupt the fake delivered: the GSI whose irqfd fired and the
/// message its route carried then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The GSI (`None` for a [`MsixVm::signal_msi`]).
    pub gsi: Option<Gsi>,
    /// The eventfd whose irqfd fired (the fd it was registered with).
    pub eventfd: Option<RawFd>,
    /// The message delivered.
    pub message: MsiMessage,
}

#[derive(Debug)]
struct Irqfd {
    gsi: Gsi,
    fd: EventFd,
}

#[derive(Debug, Default)]
struct State {
    slots: BTreeMap<u32, (u64, u64)>,
    /// By address and datamatch: the registering fd and a duplicate of it.
    ioeventfds: BTreeMap<(u64, u32), (RawFd, EventFd)>,
    irqfds: BTreeMap<RawFd, Irqfd>,
    routes: Vec<RoutingEntry>,
    deliveries: Vec<Delivery>,
}

/// An in-memory VM (see the module documentation).
#[derive(Debug)]
pub struct FakeVm {
    max_routes: u32,
    x2apic_format: bool,
    state: Mutex<State>,
}

impl FakeVm {
    /// A VM taking `max_routes` routing entries, without the x2APIC API.
    pub fn new(max_routes: u32) -> Self {
        FakeVm {
            max_routes,
            x2apic_format: false,
            state: Mutex::new(State::default()),
        }
    }

    /// The same VM with KVM_CAP_X2APIC_API's 32-bit IDs enabled: an MSI
    /// route whose address bits 39:32 are not zero is refused.
    pub fn with_x2apic_format(mut self) -> Self {
        self.x2apic_format = true;
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain maps updated in single steps: consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn route_of(state: &State, gsi: Gsi) -> Option<MsiMessage> {
        state.routes.iter().find_map(|e| match e.kind {
            RouteKind::Msi(m) if e.gsi == gsi => Some(m),
            _ => None,
        })
    }

    /// What KVM's irqfds do between two looks: every attached eventfd with
    /// a nonzero count is consumed and its GSI's route delivered (a GSI
    /// without an MSI route delivers nothing). Returns the deliveries made
    /// since the last call, those made at irqfd assignment included.
    pub fn inject(&self) -> Vec<Delivery> {
        let mut state = self.state();
        let mut fired = Vec::new();
        for (raw, irqfd) in &state.irqfds {
            if matches!(irqfd.fd.read(), Ok(n) if n > 0) {
                fired.push((irqfd.gsi, *raw));
            }
        }
        for (gsi, raw) in fired {
            if let Some(message) = Self::route_of(&state, gsi) {
                state.deliveries.push(Delivery {
                    gsi: Some(gsi),
                    eventfd: Some(raw),
                    message,
                });
            }
        }
        std::mem::take(&mut state.deliveries)
    }

    /// A guest write of `data` at `gpa`, as KVM sees it before exiting: a
    /// 4-byte write matching an ioeventfd signals it and is absorbed (true);
    /// anything else would exit to userspace (false).
    pub fn guest_write(&self, gpa: u64, data: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return false;
        };
        let state = self.state();
        match state.ioeventfds.get(&(gpa, u32::from_le_bytes(bytes))) {
            Some((_, fd)) => {
                // A full counter still reads as signalled.
                let _ = fd.write(1);
                true
            }
            None => false,
        }
    }

    /// The GSI `fd` is bound to as an irqfd, if any.
    pub fn irqfd_gsi(&self, fd: &EventFd) -> Option<Gsi> {
        self.state().irqfds.get(&fd.as_raw_fd()).map(|i| i.gsi)
    }

    /// Irqfds registered now.
    pub fn irqfd_count(&self) -> usize {
        self.state().irqfds.len()
    }

    /// The fd registered as an ioeventfd for a write of `datamatch` at
    /// `gpa`, if any.
    pub fn ioeventfd_at(&self, gpa: u64, datamatch: u32) -> Option<RawFd> {
        self.state()
            .ioeventfds
            .get(&(gpa, datamatch))
            .map(|(raw, _)| *raw)
    }

    /// Ioeventfds registered now.
    pub fn ioeventfd_count(&self) -> usize {
        self.state().ioeventfds.len()
    }

    /// Memory slots present now, with their guest address and size.
    pub fn memory_slots(&self) -> Vec<(u32, u64, u64)> {
        self.state()
            .slots
            .iter()
            .map(|(slot, (gpa, size))| (*slot, *gpa, *size))
            .collect()
    }

    /// The MSI route `gsi` has in the committed table, if any.
    pub fn route(&self, gsi: Gsi) -> Option<MsiMessage> {
        Self::route_of(&self.state(), gsi)
    }

    /// The whole committed routing table.
    pub fn routes(&self) -> Vec<RoutingEntry> {
        self.state().routes.clone()
    }
}

impl MsixVm for FakeVm {
    fn max_routes(&self) -> u32 {
        self.max_routes
    }

    unsafe fn set_readonly_memory(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        _host_addr: u64,
    ) -> Result<()> {
        let mut state = self.state();
        let fail = |errno| Err(Error::new(Op::SetMemoryRegion, errno));
        if size == 0 {
            return match state.slots.remove(&slot) {
                Some(_) => Ok(()),
                None => fail(libc::EINVAL),
            };
        }
        if gpa % 4096 != 0 || size % 4096 != 0 {
            return fail(libc::EINVAL);
        }
        let overlaps = state
            .slots
            .iter()
            .any(|(s, (g, n))| *s != slot && gpa < g + n && *g < gpa + size);
        if overlaps {
            return fail(libc::EEXIST);
        }
        // An existing slot of the same size moves (KVM_MR_MOVE); a resize
        // is refused.
        if state.slots.get(&slot).is_some_and(|(_, n)| *n != size) {
            return fail(libc::EINVAL);
        }
        state.slots.insert(slot, (gpa, size));
        Ok(())
    }

    fn register_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        let mut state = self.state();
        if state.ioeventfds.contains_key(&(gpa, datamatch)) {
            return Err(Error::new(Op::IoeventfdAssign, libc::EEXIST));
        }
        let dup = fd
            .try_clone()
            .map_err(|e| Error::new(Op::IoeventfdAssign, e.raw_os_error().unwrap_or(libc::EIO)))?;
        state
            .ioeventfds
            .insert((gpa, datamatch), (fd.as_raw_fd(), dup));
        Ok(())
    }

    fn unregister_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        let mut state = self.state();
        match state.ioeventfds.get(&(gpa, datamatch)) {
            Some((raw, _)) if *raw == fd.as_raw_fd() => {
                state.ioeventfds.remove(&(gpa, datamatch));
                Ok(())
            }
            _ => Err(Error::new(Op::IoeventfdDeassign, libc::ENOENT)),
        }
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        let mut state = self.state();
        if state.irqfds.contains_key(&fd.as_raw_fd()) {
            return Err(Error::new(Op::IrqfdAssign, libc::EBUSY));
        }
        if gsi >= self.max_routes {
            return Err(Error::new(Op::IrqfdAssign, libc::EINVAL));
        }
        let dup = fd
            .try_clone()
            .map_err(|e| Error::new(Op::IrqfdAssign, e.raw_os_error().unwrap_or(libc::EIO)))?;
        // KVM injects a count already there at once and leaves the count.
        let mut pending = libc::pollfd {
            fd: dup.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that outlives the call; zero timeout.
        let ready = unsafe { libc::poll(&mut pending, 1, 0) } > 0;
        if ready {
            if let Some(message) = Self::route_of(&state, gsi) {
                state.deliveries.push(Delivery {
                    gsi: Some(gsi),
                    eventfd: Some(fd.as_raw_fd()),
                    message,
                });
            }
        }
        state.irqfds.insert(fd.as_raw_fd(), Irqfd { gsi, fd: dup });
        Ok(())
    }

    fn unregister_irqfd(&self, fd: &EventFd, _gsi: u32) -> Result<()> {
        // KVM returns success for an eventfd that has no irqfd.
        self.state().irqfds.remove(&fd.as_raw_fd());
        Ok(())
    }

    fn set_gsi_routing(&self, entries: &[RoutingEntry]) -> Result<()> {
        let invalid = Err(Error::new(Op::SetGsiRouting, libc::EINVAL));
        if entries.len() > self.max_routes as usize {
            return invalid;
        }
        for entry in entries {
            if entry.gsi >= self.max_routes {
                return invalid;
            }
            if let RouteKind::Msi(m) = entry.kind {
                if self.x2apic_format && (m.address >> 32) & 0xff != 0 {
                    return invalid;
                }
            }
        }
        self.state().routes = entries.to_vec();
        Ok(())
    }

    fn signal_msi(&self, message: &MsiMessage) -> Result<()> {
        self.state().deliveries.push(Delivery {
            gsi: None,
            eventfd: None,
            message: *message,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msi(gsi: Gsi, address: u64, data: u32) -> RoutingEntry {
        RoutingEntry {
            gsi,
            kind: RouteKind::Msi(MsiMessage::new(address, data)),
        }
    }

    #[test]
    fn an_irqfd_assigned_to_a_signalled_eventfd_injects_at_once_and_keeps_the_count() {
        let vm = FakeVm::new(64);
        vm.set_gsi_routing(&[msi(30, 0xfee0_0000, 0x40)]).unwrap();
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        fd.write(2).unwrap();
        vm.register_irqfd(&fd, 30).unwrap();
        assert_eq!(vm.inject().len(), 2, "at assignment, then the count");
        assert_eq!(
            vm.register_irqfd(&fd, 31).unwrap_err(),
            Error::new(Op::IrqfdAssign, libc::EBUSY)
        );
        vm.unregister_irqfd(&fd, 30).unwrap();
        fd.write(1).unwrap();
        assert!(vm.inject().is_empty(), "detached: the count waits");
        assert_eq!(fd.read().unwrap(), 1);
    }

    #[test]
    fn x2apic_format_refuses_nonzero_low_byte_of_the_upper_address() {
        let vm = FakeVm::new(64).with_x2apic_format();
        let err = vm.set_gsi_routing(&[msi(30, 0x1_fee0_0000, 0x40)]);
        assert_eq!(err.unwrap_err().errno, libc::EINVAL);
        vm.set_gsi_routing(&[msi(30, 0x100_fee0_0000, 0x40)])
            .unwrap();
        assert_eq!(vm.route(30).map(|m| m.data), Some(0x40));
    }

    #[test]
    fn memory_slots_move_and_refuse_overlap_resizes_and_unknown_deletes() {
        let vm = FakeVm::new(64);
        // SAFETY: the fake maps nothing; the host address is never used.
        unsafe {
            vm.set_readonly_memory(1, 0x1000, 0x1000, 0).unwrap();
            assert!(vm.set_readonly_memory(2, 0x1000, 0x2000, 0).is_err());
            vm.set_readonly_memory(1, 0x3000, 0x1000, 0).unwrap();
            assert_eq!(vm.memory_slots(), vec![(1, 0x3000, 0x1000)]);
            assert!(vm.set_readonly_memory(1, 0x3000, 0x2000, 0).is_err());
            vm.set_readonly_memory(1, 0, 0, 0).unwrap();
            assert!(vm.set_readonly_memory(1, 0, 0, 0).is_err());
        }
    }
}
