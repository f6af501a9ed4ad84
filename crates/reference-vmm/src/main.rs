//! reference-vmm: a small KVM VMM that boots an unmodified Linux bzImage
//! with VFIO-assigned PCI functions whose MSI-X runs on msix-accel. It is
//! the integration reference of docs/integration.md: [`run`] is the whole
//! machine in order, and every accelerator call is marked `// msix-accel:`
//! (most are in `pci/vfio_function.rs`).
//!
//! The machine: 1-4 vCPUs, RAM from 0 to `--memory`, KVM's in-kernel
//! irqchip (PIC, IOAPIC, local APICs) and PIT, an MP table (`acpi=off`),
//! the 8250 console at 0x3f8 on IRQ 4, an i8042 whose reset command ends
//! the VMM (`reboot=k`), and PCI bus 0 with a host bridge and the assigned
//! functions. See `--help` and README.md.

mod boot;
mod bus;
mod cli;
mod exit;
mod layout;
mod mptable;
mod pci;
mod report;
mod serial;
mod vcpu;

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use kvm_bindings::{
    kvm_enable_cap, kvm_pit_config, kvm_userspace_memory_region, KVM_CAP_X2APIC_API,
    KVM_PIT_SPEAKER_DUMMY, KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK, KVM_X2APIC_API_USE_32BIT_IDS,
};
use kvm_ioctls::Kvm;
use msix_accel::{GsiRouting, IrqchipRoutes, KvmVm, MsixVm, ServiceThread};
use vfio_ioctls::VfioContainer;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::bus::Bus;
use crate::cli::Options;
use crate::exit::{ExitRequest, ResetTrigger};
use crate::pci::{PciBus, VfioFunction};

/// Accelerator events queued for printing; more are dropped (and still
/// counted in the accelerator's statistics), so a guest cannot grow it.
const EVENT_QUEUE: usize = 1024;
/// Parameters the machine needs: no ACPI tables (the MP table describes
/// it) and reboot through the i8042, which ends the VMM.
const MACHINE_CMDLINE: &str = "acpi=off reboot=k";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{}", cli::HELP);
            return;
        }
        Err(e) => {
            eprintln!("reference-vmm: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&options) {
        eprintln!("reference-vmm: {e}");
        std::process::exit(1);
    }
}

/// The signal that kicks a vCPU thread out of KVM_RUN at exit.
extern "C" fn kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Builds the machine, runs it until the guest resets, prints the
/// accelerators' statistics, and tears it down in the order of
/// integration.md section 11.
pub fn run(o: &Options) -> Result<(), String> {
    // --- The VM: in-kernel irqchip and PIT --------------------------------
    let kvm = Kvm::new().map_err(err("/dev/kvm"))?;
    let vm = Arc::new(kvm.create_vm().map_err(err("KVM_CREATE_VM"))?);
    vm.set_tss_address(layout::KVM_TSS)
        .map_err(err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip().map_err(err("KVM_CREATE_IRQCHIP"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(err("KVM_CREATE_PIT2"))?;
    // 32-bit APIC IDs in MSI routes (address_hi bits 31:8 carry the high
    // ID bits), as QEMU and cloud-hypervisor set it: KVM then refuses a
    // route whose address has bits 39:32 set, which the accelerator keeps
    // to the vector concerned (a RouteRejected event).
    let mut x2apic = kvm_enable_cap {
        cap: KVM_CAP_X2APIC_API,
        ..Default::default()
    };
    x2apic.args[0] =
        u64::from(KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK);
    vm.enable_cap(&x2apic)
        .map_err(err("KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)"))?;

    // --- Guest RAM ---------------------------------------------------------
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), o.memory as usize)])
        .map_err(err("guest RAM"))?;
    let ram_host = mem
        .get_host_address(GuestAddress(0))
        .map_err(err("guest RAM"))?;
    // SAFETY: `mem` maps `o.memory` bytes at `ram_host` and outlives the VM
    // (it is dropped after the vCPUs are joined and the VM's fd closed last).
    unsafe {
        vm.set_user_memory_region(kvm_userspace_memory_region {
            slot: layout::RAM_SLOT,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: o.memory,
            userspace_addr: ram_host as u64,
        })
    }
    .map_err(err("RAM memslot"))?;

    // --- Linux: bzImage, initramfs, command line, MP table ---------------
    let mut kernel = File::open(&o.kernel).map_err(|e| format!("{}: {e}", o.kernel.display()))?;
    let mut initrd = match &o.initrd {
        Some(p) => Some(File::open(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };
    let cmdline = format!("{} {MACHINE_CMDLINE}", o.cmdline);
    let entry = boot::load(&mem, &mut kernel, initrd.as_mut(), cmdline.trim())?;
    mptable::write(&mem, o.cpus)?;

    // msix-accel (integration.md section 1): the accelerators' hypervisor
    // calls, over this VM's fd. (Section 4): one GSI routing table for the
    // VM, shared by every accelerator, keeping the in-kernel irqchip's
    // routes (the console's GSI 4 among them).
    let hv: Arc<dyn MsixVm> = Arc::new(KvmVm::new(vm.clone()));
    let routes = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)
        .map_err(err("GSI routing"))?
        .into_shared();
    // msix-accel (section 5): events through a bounded channel, printed by
    // their own thread.
    let (sender, receiver) = mpsc::sync_channel(EVENT_QUEUE);
    let events = Arc::new(sender);
    let printer = thread::spawn(move || report::print_events(receiver));

    // --- The assigned functions, and all RAM mapped for their DMA ---------
    let mut functions = Vec::new();
    if !o.devices.is_empty() {
        let container = Arc::new(VfioContainer::new(None).map_err(err("VFIO container"))?);
        let (mut next_mmio, mut next_io) = (layout::PCI_HOLE_START, layout::PCI_IO_START);
        for (i, path) in o.devices.iter().enumerate() {
            functions.push(Arc::new(VfioFunction::open(
                i as u32,
                path,
                &container,
                &vm,
                &hv,
                &routes,
                &events,
                o,
                &mut next_mmio,
                &mut next_io,
            )?));
        }
        // SAFETY: guest RAM stays mapped at `ram_host` while the container
        // lives (the container is dropped with the functions, before `mem`).
        unsafe { container.vfio_dma_map(0, o.memory as usize, ram_host) }
            .map_err(err("VFIO_IOMMU_MAP_DMA of guest RAM"))?;
    }

    // msix-accel (section 8): the fast path's servicer, attached before
    // any table is placed.
    let accels: Vec<_> = functions.iter().map(|f| f.accelerator().clone()).collect();
    let service = match accels.is_empty() {
        true => None,
        false => Some(ServiceThread::spawn(&accels).map_err(err("service thread"))?),
    };
    drop(accels);
    // The BARs as firmware left them (decoding if the device decodes).
    for f in &functions {
        f.start();
    }

    // --- Legacy devices and the bus ---------------------------------------
    let exit = Arc::new(ExitRequest::new().map_err(err("exit eventfd"))?);
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(err("console eventfd"))?;
    vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ)
        .map_err(err("console irqfd"))?;
    let bus = Arc::new(Bus::new(
        serial::console(serial_irq),
        I8042Device::new(ResetTrigger(exit.clone())),
        Arc::new(PciBus::new(functions)),
    ));

    // --- vCPUs -------------------------------------------------------------
    register_signal_handler(SIGRTMIN(), kick).map_err(err("signal handler"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut vcpus = Vec::new();
    for id in 0..o.cpus {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(err("KVM_CREATE_VCPU"))?;
        vcpu::configure(&kvm, &fd, id, (id == 0).then_some(entry))?;
        let (bus, exit, stop) = (bus.clone(), exit.clone(), stop.clone());
        vcpus.push(
            thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || vcpu::run(id, fd, bus, exit, stop))
                .map_err(err("vCPU thread"))?,
        );
    }

    let reason = exit.wait();

    // --- At exit: the accelerators' statistics ------------------------------
    eprintln!("VMM-EXIT {reason}");
    for dev in 0..bus.pci.functions().len() {
        eprintln!("{}", report::stats_line("final", dev, &bus.pci));
    }

    // --- Teardown (section 11): vCPUs, then the servicer, then the
    // accelerators (with the functions), then the VM. ----------------------
    stop.store(true, Ordering::Release);
    while vcpus.iter().any(|t| !t.is_finished()) {
        for t in vcpus.iter().filter(|t| !t.is_finished()) {
            // Fails only when the thread already ended.
            let _ = t.kill(SIGRTMIN());
        }
        thread::sleep(Duration::from_millis(10));
    }
    for t in vcpus {
        let _ = t.join();
    }
    if let Some(service) = service {
        service.stop();
    }
    drop(bus);
    drop(events);
    let _ = printer.join();
    eprintln!("VMM-DONE");
    Ok(())
}
