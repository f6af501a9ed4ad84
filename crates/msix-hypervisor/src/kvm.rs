//! [`KvmVm`]: [`MsixVm`] on KVM, through `kvm-ioctls`.

use std::sync::Arc;

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_msi, kvm_userspace_memory_region, KvmIrqRouting,
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MEM_READONLY, KVM_MSI_VALID_DEVID,
};
use kvm_ioctls::{Cap, IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::{Error, MsiMessage, MsixVm, Op, Result, RouteKind, RoutingEntry};

/// [`MsixVm`] on a KVM VM: each method is the one ioctl it names.
///
/// ```no_run
/// use std::sync::Arc;
/// use msix_hypervisor::{KvmVm, MsixVm};
///
/// let kvm = kvm_ioctls::Kvm::new()?;
/// let vm = Arc::new(kvm.create_vm()?);
/// vm.create_irq_chip()?;
/// let msix_vm = KvmVm::new(vm);
/// assert!(msix_vm.max_routes() >= 1024);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct KvmVm {
    vm: Arc<VmFd>,
    max_routes: u32,
}

impl KvmVm {
    /// Wraps `vm`, reading KVM_CAP_IRQ_ROUTING once (0 when the kernel does
    /// not route GSIs, in which case every routing call fails).
    pub fn new(vm: Arc<VmFd>) -> Self {
        let max_routes = u32::try_from(vm.check_extension_int(Cap::IrqRouting)).unwrap_or(0);
        KvmVm { vm, max_routes }
    }

    /// The VM.
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm
    }
}

/// The KVM routing entry for `entry`.
pub fn kvm_routing_entry(entry: &RoutingEntry) -> kvm_irq_routing_entry {
    let mut out = kvm_irq_routing_entry {
        gsi: entry.gsi,
        ..Default::default()
    };
    match entry.kind {
        RouteKind::Msi(message) => {
            out.type_ = KVM_IRQ_ROUTING_MSI;
            // Truncations intended: the address is split into its dwords.
            out.u.msi.address_lo = message.address as u32;
            out.u.msi.address_hi = (message.address >> 32) as u32;
            out.u.msi.data = message.data;
            if let Some(devid) = message.devid {
                out.flags = KVM_MSI_VALID_DEVID;
                out.u.msi.__bindgen_anon_1.devid = devid;
            }
        }
        RouteKind::Irqchip { chip, pin } => {
            out.type_ = KVM_IRQ_ROUTING_IRQCHIP;
            out.u.irqchip.irqchip = chip;
            out.u.irqchip.pin = pin;
        }
    }
    out
}

impl MsixVm for KvmVm {
    fn max_routes(&self) -> u32 {
        self.max_routes
    }

    unsafe fn set_readonly_memory(
        &self,
        slot: u32,
        gpa: u64,
        size: u64,
        host_addr: u64,
    ) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: if size > 0 { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: the caller guarantees the host range stays mapped until the
        // slot is deleted; a deletion (size 0) maps nothing.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| Error::new(Op::SetMemoryRegion, e.errno()))
    }

    fn register_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        self.vm
            .register_ioevent(fd, &IoEventAddress::Mmio(gpa), datamatch)
            .map_err(|e| Error::new(Op::IoeventfdAssign, e.errno()))
    }

    fn unregister_ioeventfd(&self, fd: &EventFd, gpa: u64, datamatch: u32) -> Result<()> {
        self.vm
            .unregister_ioevent(fd, &IoEventAddress::Mmio(gpa), datamatch)
            .map_err(|e| Error::new(Op::IoeventfdDeassign, e.errno()))
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .register_irqfd(fd, gsi)
            .map_err(|e| Error::new(Op::IrqfdAssign, e.errno()))
    }

    fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.vm
            .unregister_irqfd(fd, gsi)
            .map_err(|e| Error::new(Op::IrqfdDeassign, e.errno()))
    }

    fn set_gsi_routing(&self, entries: &[RoutingEntry]) -> Result<()> {
        // new(n) would make n zeroed entries (GSI 0 routes): start empty.
        let mut table =
            KvmIrqRouting::new(0).map_err(|_| Error::new(Op::SetGsiRouting, libc::ENOMEM))?;
        for entry in entries {
            table
                .push(kvm_routing_entry(entry))
                .map_err(|_| Error::new(Op::SetGsiRouting, libc::E2BIG))?;
        }
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| Error::new(Op::SetGsiRouting, e.errno()))
    }

    fn signal_msi(&self, message: &MsiMessage) -> Result<()> {
        let msi = kvm_msi {
            address_lo: message.address as u32,
            address_hi: (message.address >> 32) as u32,
            data: message.data,
            flags: if message.devid.is_some() {
                KVM_MSI_VALID_DEVID
            } else {
                0
            },
            devid: message.devid.unwrap_or(0),
            ..Default::default()
        };
        self.vm
            .signal_msi(msi)
            .map(|_| ())
            .map_err(|e| Error::new(Op::SignalMsi, e.errno()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_entries_split_the_address_and_carry_a_device_id_only_when_given() {
        let plain = kvm_routing_entry(&RoutingEntry {
            gsi: 30,
            kind: RouteKind::Msi(MsiMessage::new(0x1_fee0_1000, 0x4041)),
        });
        assert_eq!(
            (plain.gsi, plain.type_, plain.flags),
            (30, KVM_IRQ_ROUTING_MSI, 0)
        );
        // SAFETY: built with type MSI, so the msi member is the initialised one.
        let msi = unsafe { plain.u.msi };
        assert_eq!(
            (msi.address_lo, msi.address_hi, msi.data),
            (0xfee0_1000, 1, 0x4041)
        );

        let tagged = kvm_routing_entry(&RoutingEntry {
            gsi: 31,
            kind: RouteKind::Msi(MsiMessage {
                devid: Some(0x0810),
                ..MsiMessage::new(0x0800_0040, 7)
            }),
        });
        assert_eq!(tagged.flags, KVM_MSI_VALID_DEVID);
        // SAFETY: as above; devid is the union member written for this flag.
        assert_eq!(unsafe { tagged.u.msi.__bindgen_anon_1.devid }, 0x0810);
    }

    #[test]
    fn x86_default_routes_match_the_kernel_table() {
        let routes = crate::x86::default_routes();
        assert_eq!(routes.len(), 40);
        let decoded: Vec<(u32, u32, u32)> = routes
            .iter()
            .map(|entry| {
                let e = kvm_routing_entry(entry);
                assert_eq!(e.type_, KVM_IRQ_ROUTING_IRQCHIP);
                // SAFETY: type IRQCHIP, so irqchip is the initialised member.
                let chip = unsafe { e.u.irqchip };
                (e.gsi, chip.irqchip, chip.pin)
            })
            .collect();
        assert_eq!(&decoded[..4], &[(0, 2, 0), (0, 0, 0), (1, 2, 1), (1, 0, 1)]);
        assert_eq!(decoded[18..20], [(9, 2, 9), (9, 1, 1)]);
        assert_eq!(decoded[30..33], [(15, 2, 15), (15, 1, 7), (16, 2, 16)]);
        assert_eq!(decoded[39], (23, 2, 23));
    }
}
