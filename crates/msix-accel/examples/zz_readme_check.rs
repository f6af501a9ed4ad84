#![allow(dead_code, unused)]
mod vfio_vectors_readme {
use vfio_vectors::software::{FireOutcome, SoftwareSource};
use vfio_vectors::MsixSource;

pub fn main() -> Result<(), vfio_vectors::Error> {
    let device = SoftwareSource::maskable(4)?;           // the "device" side: fire vectors
    let mut source: Box<dyn MsixSource> = Box::new(device.clone());
    source.enable(4)?;
    assert_eq!(device.fire(0)?, FireOutcome::Signalled);  // E[0] counts 1
    assert_eq!(source.trigger(0)?.read().map_err(vfio_vectors::Error::EventFd)?, 1);

    source.mask(1)?;                                      // masked at the source
    assert_eq!(device.fire(1)?, FireOutcome::Latched);
    assert!(source.pending(1)?);                          // the source's pending bit
    source.unmask(1)?;                                    // delivered once on E[1]
    assert!(!source.pending(1)?);
    Ok(())
}
}
mod kvm_msix_readme2 {
use std::sync::Arc;
use irqfd_routes::IoctlCounters;
use kvm_msix::{BarRegion, PlacementConfig, Policy, TablePlacement};

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vm = Arc::new(kvm_ioctls::Kvm::new()?.create_vm()?);
    let counters = Arc::new(IoctlCounters::default());
    let mut table = TablePlacement::new(vm, counters.clone(), PlacementConfig {
        policy: Policy::Fast,
        memslot: 1,
        table_len: 8 * 16,   // 8 entries
        pba_len: 8,
        fast_entries: 256,
    })?;
    // Table on its own page, PBA on the next one.
    let policy = table.place(0xFE00_0000, 0xFE00_1000, false)?;
    assert_eq!(policy, Policy::Fast);
    assert_eq!(table.fast_entries(), 8);               // 8 unmask ioeventfds
    assert_eq!(counters.snapshot().ioeventfd_assign, 8);
    table.shadow().store_entry(0, [0xFEE0_0000, 0, 0x40, 1])?; // what the guest reads
    // What still exits decodes to an offset in the table or PBA:
    assert_eq!(table.decode(0xFE00_000C), Some(BarRegion::Table(12)));
    assert_eq!(table.decode(0xFE00_1000), Some(BarRegion::Pba(0)));
    // A service thread waits on table.unmask_events() (AsRawFd), then:
    let mut ready = Vec::new();
    table.unmask_events().ready(&mut ready)?;
    for vector in ready {
        if table.unmask_events().drain(vector)? { /* the guest unmasked `vector` */ }
    }
    table.remove()?;
    Ok(())
}
}
mod accel_readme {
use std::sync::Arc;
use irqfd_routes::{GsiRouting, IoctlCounters, IrqchipRoutes};
use msix_accel::{AccelConfig, MsixAccelerator, Policy, ServiceThread};
use vfio_vectors::software::SoftwareSource;

pub fn main() -> Result<(), Box<dyn std::error::Error>> {
    let vm = Arc::new(kvm_ioctls::Kvm::new()?.create_vm()?);
    vm.create_irq_chip()?;
    let ioctls = Arc::new(IoctlCounters::default());
    // One routing table per VM, shared by all its devices.
    let routes = GsiRouting::new(vm.clone(), IrqchipRoutes::X86KernelIrqchip, ioctls.clone())?
        .into_shared();
    // A software source here; kernel VFIO: vfio_vectors::kernel::VfioMsixSource.
    let source = SoftwareSource::maskable(8)?;
    let config = AccelConfig::new(8, 2, 1); // 8 vectors in BAR 2, memslot 1, policy fast
    let accel = Arc::new(MsixAccelerator::new(vm, routes, Box::new(source), config, ioctls)?);

    // Memory decode on, BAR at 0xFE00_0000: table at offset 0, PBA at 0x1000.
    assert_eq!(accel.place(0xFE00_0000, 0xFE00_1000)?, Policy::Fast);
    let _service = ServiceThread::spawn(std::slice::from_ref(&accel))?; // or FastPathSubscriber

    // Config space: the guest enables MSI-X (Message Control at capability offset 2).
    accel.write_capability(2, &0x8000u16.to_le_bytes())?;
    // vCPU loop: table/PBA exits.
    let mut data = [0u8; 4];
    assert!(accel.mmio_read(0xFE00_1000, &mut data)); // PBA read
    assert!(accel.mmio_write(0xFE00_0008, &0x40u32.to_le_bytes())); // data dword
    // Migration.
    let state = accel.snapshot()?;
    assert!(state.pending.is_empty());
    Ok(())
}
}
mod testvm_readme {
use std::sync::Arc;
use testvm::{MmioHandler, Program, TestVm, VmConfig, Width};

struct Zeros;
impl MmioHandler for Zeros {
    fn mmio_read(&self, _vcpu: u8, _addr: u64, data: &mut [u8]) -> bool {
        data.fill(0);
        true
    }
    fn mmio_write(&self, _vcpu: u8, _addr: u64, _data: &[u8]) -> bool {
        true
    }
}

pub fn main() -> Result<(), testvm::Error> {
    let vm = TestVm::new(VmConfig::default())?;   // 1 vCPU, 10 s watchdog
    vm.set_mmio_handler(Arc::new(Zeros));

    let mut p = Program::new();
    p.write(Width::W32, 0xFE00_000C, 1);           // exits to Zeros::mmio_write
    let value = p.read(Width::W32, 0xFE00_0000);    // exits to Zeros::mmio_read
    let before = vm.exits();
    let out = vm.run(0, &p)?;
    assert_eq!(out.get(value), 0);
    assert_eq!(vm.exits().since(&before).mmio(), 2);

    vm.signal_msi(0, 0x40)?;                        // or an irqfd routed to TestVm::msi_address(0)
    assert_eq!(vm.wait_irq_count(0x40, 1)?, 1);
    Ok(())
}
}
fn main() {
    vfio_vectors_readme::main().unwrap();
    kvm_msix_readme2::main().unwrap();
    accel_readme::main().unwrap();
    testvm_readme::main().unwrap();
    println!("all readme snippets ran");
}
