//! A minimal VMM-side PCI device that owns an [`MsixAccelerator`], driven by
//! a real KVM guest (`testvm`) on the software interrupt source.
//!
//! The first half, [`MsixDevice`], is what a VMM's device model looks like:
//! a tiny type-0 config space (vendor/device ID, Command's memory-decode bit,
//! one 32-bit memory BAR holding the MSI-X table and PBA, the capability
//! list with the MSI-X capability at 0x40), where
//! - the MSI-X capability is delegated to `read_capability`/`write_capability`;
//! - the BAR answers size probing (write all ones, read the size mask);
//! - turning memory decode on places the table (`place`), off removes it
//!   (`remove`), and a new BAR address while decoding moves it (`move_bar`);
//! - MMIO exits in the BAR go to `mmio_read`/`mmio_write`;
//! - `snapshot`/`restore` carry the config registers and the accelerator's
//!   state (with pending interrupts) to another VM.
//!
//! The second half, [`run`], is the guest's side as a host-side script. The
//! test guest has no PCI config mechanism, so its config-space accesses are
//! calls on the device model; its table and PBA accesses are real guest MMIO
//! (testvm programs), which either exit to `MsixDevice::mmio_*` or, under the
//! `fast` policy, stay in KVM (reads through the read-only memslot, unmasks
//! through ioeventfds).
//!
//! `cargo run -p msix-accel --example vmm_device [fast|strict|trap|auto]`
//! (default `auto`) prints every step and what it observed, and exits
//! non-zero if anything is off. `tests/example.rs` runs the same script and
//! asserts its [`Report`].

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use irqfd_routes::{GsiRouting, IrqchipRoutes};
use msix_accel::{
    AccelConfig, AccelEvent, AccelState, EventLog, KvmVm, MaskPath, MsixAccelerator, Policy,
    ServiceThread,
};
use serde::{Deserialize, Serialize};
use testvm::{MmioHandler, Program, TestVm, VmConfig, Width};
use vfio_vectors::software::SoftwareSource;

// ---------------------------------------------------------------------------
// The device model: what a VMM writes around an MsixAccelerator.
// ---------------------------------------------------------------------------

/// Vendor ID the example device reports (Red Hat's, used by QEMU's examples).
pub const VENDOR_ID: u16 = 0x1b36;
/// Device ID the example device reports.
pub const DEVICE_ID: u16 = 0x00ee;
/// Config-space offset of the MSI-X capability.
pub const MSIX_CAP: u64 = 0x40;
/// The BAR (BIR) holding the MSI-X table and PBA.
pub const MSIX_BIR: u8 = 2;

const REG_VENDOR_DEVICE: u64 = 0x00;
const REG_COMMAND_STATUS: u64 = 0x04;
const REG_BAR0: u64 = 0x10;
const REG_CAP_POINTER: u64 = 0x34;
const COMMAND_MEMORY: u16 = 1 << 1;
const STATUS_CAP_LIST: u16 = 1 << 4;

/// The config registers this device keeps itself (everything else is
/// read-only or belongs to the accelerator).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRegs {
    /// PCI Command register.
    pub command: u16,
    /// The MSI-X BAR's address bits as the guest programmed them.
    pub bar: u32,
}

/// Everything that moves with the device on live migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Config registers (BAR, Command).
    pub config: ConfigRegs,
    /// MSI-X: table, Message Control, pending interrupts.
    pub msix: AccelState,
}

/// A PCI function whose only BAR holds its MSI-X table and PBA.
#[derive(Debug)]
pub struct MsixDevice {
    accel: Arc<MsixAccelerator>,
    /// The BAR's size: a power of two, as PCI requires.
    bar_size: u64,
    regs: Mutex<ConfigRegs>,
}

impl MsixDevice {
    /// Wraps `accel`; memory decode is off and the BAR unassigned, so the
    /// table is not placed until the guest programs both.
    pub fn new(accel: Arc<MsixAccelerator>) -> Self {
        // `bar_size` is page aligned; a BAR must also be a power of two.
        let bar_size = accel.config().bar_size().next_power_of_two();
        MsixDevice {
            accel,
            bar_size,
            regs: Mutex::new(ConfigRegs::default()),
        }
    }

    /// The accelerator (for the service thread and statistics).
    pub fn accelerator(&self) -> &Arc<MsixAccelerator> {
        &self.accel
    }

    /// The BAR size the guest sees when probing.
    pub fn bar_size(&self) -> u64 {
        self.bar_size
    }

    fn regs(&self) -> MutexGuard<'_, ConfigRegs> {
        // Two plain integers: consistent even if a holder panicked.
        self.regs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bar_register(&self) -> u64 {
        REG_BAR0 + 4 * u64::from(MSIX_BIR)
    }

    fn in_msix_cap(offset: u64) -> bool {
        (MSIX_CAP..MSIX_CAP + msix_model::CAPABILITY_LEN).contains(&offset)
    }

    /// The table and PBA addresses for a BAR at `bar`.
    fn placement(&self, bar: u32) -> (u64, u64) {
        let config = self.accel.config();
        (
            u64::from(bar) + u64::from(config.table.offset),
            u64::from(bar) + u64::from(config.pba.offset),
        )
    }

    /// Whether `bar` is a real address rather than the sizing pattern.
    fn assigned(&self, bar: u32) -> bool {
        bar != 0 && u64::from(bar) != (0xFFFF_FFFF & !(self.bar_size - 1))
    }

    fn config_dword(&self, reg: u64) -> u32 {
        let regs = self.regs();
        match reg {
            REG_VENDOR_DEVICE => u32::from(VENDOR_ID) | u32::from(DEVICE_ID) << 16,
            REG_COMMAND_STATUS => u32::from(regs.command) | u32::from(STATUS_CAP_LIST) << 16,
            // 32-bit non-prefetchable memory BAR: flag bits 3:0 are 0.
            r if r == self.bar_register() => regs.bar,
            REG_CAP_POINTER => MSIX_CAP as u32,
            _ => 0,
        }
    }

    /// A guest config-space read of `data.len()` (1, 2 or 4) bytes.
    pub fn config_read(&self, offset: u64, data: &mut [u8]) {
        if Self::in_msix_cap(offset) {
            self.accel.read_capability(offset - MSIX_CAP, data);
            return;
        }
        let dword = self.config_dword(offset & !3).to_le_bytes();
        let start = (offset & 3) as usize;
        match dword.get(start..start + data.len()) {
            Some(bytes) => data.copy_from_slice(bytes),
            None => data.fill(0),
        }
    }

    /// A guest config-space write. Errors are the accelerator's (a VMM
    /// logs them: a guest config write cannot fail).
    pub fn config_write(&self, offset: u64, data: &[u8]) -> msix_accel::Result<()> {
        if Self::in_msix_cap(offset) {
            return self.accel.write_capability(offset - MSIX_CAP, data);
        }
        let reg = offset & !3;
        let start = (offset & 3) as usize;
        let mut dword = self.config_dword(reg).to_le_bytes();
        let Some(bytes) = dword.get_mut(start..start + data.len()) else {
            return Ok(());
        };
        bytes.copy_from_slice(data);
        let value = u32::from_le_bytes(dword);
        if reg == REG_COMMAND_STATUS {
            self.write_command(value as u16)
        } else if reg == self.bar_register() {
            self.write_bar(value)
        } else {
            Ok(())
        }
    }

    /// Command: memory decode on places the table at the BAR, off removes it.
    /// A source that masks through the device's own table (a VFIO device's
    /// MSIX_MAPPABLE mmap) loses that mapping when decode goes off: masking
    /// at the source is suspended first, or the next mask would fault.
    fn write_command(&self, command: u16) -> msix_accel::Result<()> {
        let mut regs = self.regs();
        let was = regs.command & COMMAND_MEMORY != 0;
        let now = command & COMMAND_MEMORY != 0;
        regs.command = command;
        if was == now || !self.assigned(regs.bar) {
            return Ok(());
        }
        if now {
            self.decode_on(regs.bar)
        } else {
            self.decode_off()
        }
    }

    fn decode_on(&self, bar: u32) -> msix_accel::Result<()> {
        let (table, pba) = self.placement(bar);
        self.accel.place(table, pba)?;
        self.accel.resume_source_masking();
        Ok(())
    }

    fn decode_off(&self) -> msix_accel::Result<()> {
        self.accel.suspend_source_masking()?;
        self.accel.remove()
    }

    /// BAR: keeps the address bits (so all ones reads back the size mask);
    /// a new address while decoding moves the table.
    fn write_bar(&self, value: u32) -> msix_accel::Result<()> {
        let mut regs = self.regs();
        let old = regs.bar;
        regs.bar = value & !((self.bar_size - 1) as u32);
        if regs.command & COMMAND_MEMORY == 0 || regs.bar == old {
            return Ok(());
        }
        match (self.assigned(old), self.assigned(regs.bar)) {
            (true, true) => {
                let (table, pba) = self.placement(regs.bar);
                self.accel.move_bar(table, pba).map(drop)
            }
            // Sizing while decoding (Linux turns decode off first): the BAR
            // is at the top of 4 GiB until a real address comes back.
            (true, false) => self.decode_off(),
            (false, true) => self.decode_on(regs.bar),
            (false, false) => Ok(()),
        }
    }

    fn decodes(&self, gpa: u64) -> bool {
        let regs = self.regs();
        let base = u64::from(regs.bar);
        regs.command & COMMAND_MEMORY != 0
            && self.assigned(regs.bar)
            && (base..base + self.bar_size).contains(&gpa)
    }

    /// A guest MMIO read that exited; false when `gpa` is not in this BAR.
    pub fn mmio_read(&self, gpa: u64, data: &mut [u8]) -> bool {
        if self.accel.mmio_read(gpa, data) {
            return true;
        }
        // The rest of the BAR: no registers in this device, reads as zero.
        let ours = self.decodes(gpa);
        if ours {
            data.fill(0);
        }
        ours
    }

    /// A guest MMIO write that exited; false when `gpa` is not in this BAR.
    pub fn mmio_write(&self, gpa: u64, data: &[u8]) -> bool {
        self.accel.mmio_write(gpa, data) || self.decodes(gpa)
    }

    /// The device's migration state. Unmasks the fast path absorbed are
    /// serviced first, so the table is the guest's latest.
    pub fn snapshot(&self) -> msix_accel::Result<DeviceState> {
        let config = *self.regs();
        Ok(DeviceState {
            config,
            msix: self.accel.snapshot()?,
        })
    }

    /// Restores `state` onto this freshly created device: MSI-X first (so
    /// the shadow holds the table before the guest can see it), then the
    /// config registers, then the placement they imply.
    pub fn restore(&self, state: &DeviceState) -> msix_accel::Result<()> {
        self.accel.restore(&state.msix)?;
        let mut regs = self.regs();
        *regs = state.config;
        if regs.command & COMMAND_MEMORY != 0 && self.assigned(regs.bar) {
            let (table, pba) = self.placement(regs.bar);
            self.accel.place(table, pba)?;
        }
        Ok(())
    }
}

/// testvm glue: the guest's MMIO exits go to the device.
impl MmioHandler for MsixDevice {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        MsixDevice::mmio_read(self, addr, data)
    }
    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        MsixDevice::mmio_write(self, addr, data)
    }
}

// ---------------------------------------------------------------------------
// The VMM's wiring and the guest's script.
// ---------------------------------------------------------------------------

/// MSI-X vectors of the example device.
pub const VECTORS: u16 = 8;
/// Memslot set aside for the table shadow (testvm's RAM is slot 0).
pub const TABLE_MEMSLOT: u32 = 1;
/// Where the guest first puts the BAR, and where it moves it.
pub const BAR_FIRST: u32 = 0xFE00_0000;
/// The BAR's second address.
pub const BAR_MOVED: u32 = 0xFE10_0000;
/// IDT vector entry 0 sends to vCPU 0.
pub const IDT_VECTOR: u8 = 0x40;

/// One VM with the device wired as a VMM wires it.
struct Machine {
    // Drop order: service thread, then the guest (which holds the device).
    service: Option<ServiceThread>,
    vm: TestVm,
    device: Arc<MsixDevice>,
    source: SoftwareSource,
    events: Arc<EventLog>,
}

impl Machine {
    fn boot(policy: Policy) -> Result<Machine, String> {
        let vm = TestVm::new(VmConfig::default()).map_err(|e| format!("guest: {e}"))?;
        // The VMM's hypervisor layer; a VMM with its own implements MsixVm.
        let hv = Arc::new(KvmVm::new(vm.vm().clone()));
        // One routing table per VM, shared by every device of that VM.
        let routes = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)
            .map_err(|e| format!("routing: {e}"))?
            .into_shared();
        // The software source stands in for `vfio_vectors::kernel::VfioMsixSource`;
        // a maskable one masks at the source, as a VFIO device with an
        // MSIX_MAPPABLE table does. The clone stays here to raise interrupts.
        let source = SoftwareSource::maskable(VECTORS).map_err(|e| format!("source: {e}"))?;
        let config = AccelConfig::new(VECTORS, MSIX_BIR, TABLE_MEMSLOT).with_policy(policy);
        // Trouble the accelerator contains is reported here; a VMM would
        // log it or use a channel.
        let events = Arc::new(EventLog::new());
        let accel =
            MsixAccelerator::new(hv, routes, Box::new(source.clone()), config, events.clone())
                .map_err(|e| format!("accelerator: {e}"))?;
        let accel = Arc::new(accel);
        // The servicer before any placement: `fast` needs one.
        let service =
            ServiceThread::spawn(std::slice::from_ref(&accel)).map_err(|e| e.to_string())?;
        let device = Arc::new(MsixDevice::new(accel));
        vm.set_mmio_handler(device.clone());
        Ok(Machine {
            service: Some(service),
            vm,
            device,
            source,
            events,
        })
    }

    fn bar(&self) -> u64 {
        u64::from(self.device.regs().bar)
    }

    /// Guest physical address of entry `vector`'s dword at `offset`.
    fn entry(&self, vector: u16, offset: u64) -> u64 {
        self.bar()
            + u64::from(self.device.accel.config().table.offset)
            + u64::from(vector) * 16
            + offset
    }

    fn pba(&self) -> u64 {
        self.bar() + u64::from(self.device.accel.config().pba.offset)
    }

    /// Runs `program` on vCPU 0; returns its output and the exits it caused.
    fn run(
        &self,
        program: &Program,
    ) -> Result<(testvm::ProgramOutput, testvm::ExitCounts), String> {
        let before = self.vm.exits();
        let out = self
            .vm
            .run(0, program)
            .map_err(|e| format!("guest program: {e}"))?;
        Ok((out, self.vm.exits().since(&before)))
    }

    fn config_read32(&self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.device.config_read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn config_read16(&self, offset: u64) -> u16 {
        let mut data = [0u8; 2];
        self.device.config_read(offset, &mut data);
        u16::from_le_bytes(data)
    }

    fn config_write(&self, offset: u64, data: &[u8]) -> Result<(), String> {
        self.device
            .config_write(offset, data)
            .map_err(|e| format!("config write at {offset:#x}: {e}"))
    }

    /// Deliveries of the device's vector seen by the guest.
    fn deliveries(&self) -> u64 {
        self.vm.irq_count(IDT_VECTOR)
    }

    /// Proves every interrupt already in the guest's local APIC was taken
    /// (a lower-priority sentinel comes after them) before counting what did
    /// not arrive.
    fn settle(&self) -> Result<(), String> {
        self.vm.sentinel(0).map_err(|e| format!("sentinel: {e}"))
    }

    fn shutdown(mut self) {
        if let Some(service) = self.service.take() {
            service.stop();
        }
        self.vm.stop_vcpus();
    }
}

/// One step of the script and what it observed.
#[derive(Clone, Debug)]
pub struct Step {
    /// What the step does.
    pub name: String,
    /// What it observed.
    pub observed: String,
    /// Whether that is what the protocol promises.
    pub ok: bool,
}

/// What the script observed, for the test to assert.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The policy asked for.
    pub policy: Policy,
    /// BAR size read back by probing.
    pub bar_size: u64,
    /// Policy in force after placement.
    pub placed_policy: Option<Policy>,
    /// Exits the driver's programming of entry 0 cost (3 message dwords +
    /// the unmask, which `fast` absorbs).
    pub programming_exits: u64,
    /// Exits per Linux mask + flush-read + unmask cycle, before the move.
    pub cycle_exits: u64,
    /// Exits per Linux cycle at the moved BAR.
    pub cycle_exits_after_move: u64,
    /// Deliveries on the first VM.
    pub deliveries_before_migration: u64,
    /// A read at the BAR's old address was unclaimed (reads all ones).
    pub old_address_unclaimed: bool,
    /// Masked vectors holding an interrupt at snapshot time.
    pub pending_at_snapshot: Vec<u16>,
    /// The serialized device state.
    pub snapshot_json: String,
    /// The PBA's first qword as the restored guest reads it.
    pub pba_after_restore: u64,
    /// Deliveries on the new VM before the guest unmasks.
    pub deliveries_after_restore: u64,
    /// Deliveries on the new VM after the guest unmasks (the pending one).
    pub deliveries_after_unmask: u64,
    /// The PBA's first qword after that unmask.
    pub pba_after_unmask: u64,
    /// Deliveries on the new VM after one more device interrupt.
    pub deliveries_after_next_fire: u64,
    /// With memory decode off, a Function Mask written from config space
    /// left every vector off the source's (unmapped) table.
    pub decode_off_source_untouched: bool,
}

impl Report {
    fn check(&mut self, name: impl Into<String>, observed: impl Into<String>, ok: bool) {
        self.steps.push(Step {
            name: name.into(),
            observed: observed.into(),
            ok,
        });
    }

    /// Whether every step observed what it should.
    pub fn all_ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }
}

/// Exits a Linux mask cycle costs under `policy` (tests/fast_path.rs).
pub fn cycle_exits(policy: Policy) -> u64 {
    policy.linux_cycle_exits()
}

/// Exits one table read costs under `policy`.
fn read_exits(policy: Policy) -> u64 {
    if policy.maps_table() {
        0
    } else {
        1
    }
}

/// `cycles` Linux mask cycles on entry 0: mask, flush read, unmask.
fn linux_cycles(m: &Machine, cycles: u64) -> Program {
    let mut p = Program::new();
    p.repeat(cycles, |p| {
        p.write(Width::W32, m.entry(0, 12), 1);
        p.read(Width::W32, m.entry(0, 0));
        p.write(Width::W32, m.entry(0, 12), 0);
    });
    p
}

/// The whole script under the default policy, `auto`.
pub fn run() -> Result<Report, String> {
    run_with(Policy::Auto)
}

/// The whole script: enumerate, size and assign the BAR, bring up MSI-X,
/// deliver, mask cycles, move the BAR, migrate with an interrupt pending.
pub fn run_with(policy: Policy) -> Result<Report, String> {
    let mut r = Report {
        policy,
        ..Report::default()
    };
    const CYCLES: u64 = 10;

    // --- VM A -------------------------------------------------------------
    let a = Machine::boot(policy)?;
    let bar_reg = REG_BAR0 + 4 * u64::from(MSIX_BIR);

    // 1. Enumeration, as a guest's PCI core does it.
    let ids = a.config_read32(REG_VENDOR_DEVICE);
    let cap = a.config_read32(REG_CAP_POINTER) as u64;
    let cap_id = a.config_read32(cap) & 0xff;
    let control = a.config_read16(cap + 2);
    let table_reg = a.config_read32(cap + 4);
    r.check(
        "enumerate: IDs, capability list, MSI-X capability",
        format!(
            "ids {ids:#010x}, cap at {cap:#x} id {cap_id:#x}, table size {}, table BIR {} offset {:#x}",
            (control & 0x7ff) + 1,
            table_reg & 7,
            table_reg & !7
        ),
        ids == u32::from(VENDOR_ID) | u32::from(DEVICE_ID) << 16
            && cap == MSIX_CAP
            && cap_id == 0x11
            && (control & 0x7ff) + 1 == VECTORS
            && table_reg & 7 == u32::from(MSIX_BIR),
    );

    // 2. BAR sizing: write all ones, read the size mask.
    a.config_write(bar_reg, &u32::MAX.to_le_bytes())?;
    let mask = a.config_read32(bar_reg);
    r.bar_size = u64::from(!(mask & !0xf)) + 1;
    r.check(
        "size the BAR (write all ones, read back)",
        format!("mask {mask:#010x} -> {:#x} bytes", r.bar_size),
        r.bar_size == a.device.bar_size() && r.bar_size >= a.device.accel.config().bar_size(),
    );

    // 3. Assign the BAR, turn memory decode on: the table is placed.
    a.config_write(bar_reg, &BAR_FIRST.to_le_bytes())?;
    let command = a.config_read16(REG_COMMAND_STATUS) | COMMAND_MEMORY;
    a.config_write(REG_COMMAND_STATUS, &command.to_le_bytes())?;
    let placed = a.device.accel.policy();
    r.placed_policy = Some(placed);
    r.check(
        format!("assign BAR at {BAR_FIRST:#x}, enable memory decode"),
        format!("table placed, policy {placed}"),
        (placed == policy || (policy == Policy::Auto && placed.maps_table()))
            && a.device.accel.claims(a.entry(0, 0)),
    );
    // Under `auto`, what follows is exact for the mechanism it chose (VM B
    // asks for `auto` again).
    let in_force = placed;

    // 4. Driver bring-up (Linux order): enable with Function Mask, program
    //    entry 0 through the table, unmask it, clear Function Mask.
    a.config_write(cap + 2, &0xC000u16.to_le_bytes())?;
    let mut p = Program::new();
    p.write(Width::W32, a.entry(0, 0), TestVm::msi_address(0));
    p.write(Width::W32, a.entry(0, 4), 0);
    p.write(Width::W32, a.entry(0, 8), u64::from(IDT_VECTOR));
    p.write(Width::W32, a.entry(0, 12), 0);
    let (_, exits) = a.run(&p)?;
    a.config_write(cap + 2, &0x8000u16.to_le_bytes())?;
    r.programming_exits = exits.mmio();
    let expected = 3 + u64::from(!in_force.absorbs_unmask());
    r.check(
        "guest programs entry 0 (address, data, unmask); MSI-X enabled",
        format!(
            "{} exits, Message Control {:#06x}",
            r.programming_exits,
            a.config_read16(cap + 2)
        ),
        r.programming_exits == expected && a.config_read16(cap + 2) & 0xC000 == 0x8000,
    );

    // 5. The device raises vector 0: eventfd -> irqfd -> LAPIC, no exit.
    let before = a.vm.exits();
    a.source.fire(0).map_err(|e| e.to_string())?;
    let seen =
        a.vm.wait_irq_count(IDT_VECTOR, 1)
            .map_err(|e| e.to_string())?;
    let exits = a.vm.exits().since(&before).mmio();
    r.check(
        "device interrupt on vector 0",
        format!("{seen} delivery, {exits} exits"),
        seen == 1 && exits == 0,
    );

    // 6. Linux mask cycles.
    let (_, exits) = a.run(&linux_cycles(&a, CYCLES))?;
    r.cycle_exits = exits.mmio() / CYCLES;
    r.check(
        format!("{CYCLES} Linux mask cycles (mask, flush read, unmask)"),
        format!("{} exits per cycle", r.cycle_exits),
        exits.mmio() == CYCLES * cycle_exits(in_force),
    );

    // 7. The guest moves the BAR while decoding: the device calls move_bar.
    let old_entry0 = a.entry(0, 0);
    a.config_write(bar_reg, &BAR_MOVED.to_le_bytes())?;
    let mut p = Program::new();
    let data = p.read(Width::W32, a.entry(0, 8));
    let stale = p.read(Width::W32, old_entry0);
    let (out, exits) = a.run(&p)?;
    r.old_address_unclaimed = out.get(stale) == 0xFFFF_FFFF && exits.mmio_unclaimed == 1;
    r.check(
        format!("guest moves the BAR to {BAR_MOVED:#x}"),
        format!(
            "entry 0 data at the new address {:#x}; old address reads {:#x} (unclaimed: {})",
            out.get(data),
            out.get(stale),
            r.old_address_unclaimed
        ),
        out.get(data) == u64::from(IDT_VECTOR)
            && r.old_address_unclaimed
            && exits.mmio() == read_exits(in_force) + 1,
    );
    a.device.accel.service_fast_path();
    a.source.fire(0).map_err(|e| e.to_string())?;
    let seen =
        a.vm.wait_irq_count(IDT_VECTOR, 2)
            .map_err(|e| e.to_string())?;
    let (_, exits) = a.run(&linux_cycles(&a, CYCLES))?;
    r.cycle_exits_after_move = exits.mmio() / CYCLES;
    r.check(
        "after the move: interrupt and mask cycles",
        format!(
            "{seen} deliveries total, {} exits per cycle",
            r.cycle_exits_after_move
        ),
        seen == 2 && exits.mmio() == CYCLES * cycle_exits(in_force),
    );

    // 7b. Memory decode off with entry 0 masked (a driver unbinding): the
    //     device stops masking at the source before the table mapping would
    //     go away; a Function Mask written meanwhile from config space masks
    //     on the irqfd path. Decode on again: source masking resumes.
    let mut p = Program::new();
    p.write(Width::W32, a.entry(0, 12), 1);
    a.run(&p)?;
    let off = a.config_read16(REG_COMMAND_STATUS) & !COMMAND_MEMORY;
    a.config_write(REG_COMMAND_STATUS, &off.to_le_bytes())?;
    a.config_write(cap + 2, &0xC000u16.to_le_bytes())?;
    let at_source = (0..VECTORS)
        .filter(|&v| a.source.is_masked(v).unwrap_or(true))
        .count();
    let debug = a.device.accel.debug();
    let paths_at_source = (0..VECTORS)
        .filter(|&v| debug.mask_path(v).ok() == Some(MaskPath::Source))
        .count();
    r.decode_off_source_untouched =
        at_source == 0 && paths_at_source == 0 && !a.device.accel.claims(a.entry(0, 0));
    r.check(
        "memory decode off, then Function Mask from config space",
        format!(
            "{at_source} vectors masked at the source, {paths_at_source} held there; table unclaimed: {}",
            !a.device.accel.claims(a.entry(0, 0))
        ),
        r.decode_off_source_untouched,
    );
    let on = off | COMMAND_MEMORY;
    a.config_write(REG_COMMAND_STATUS, &on.to_le_bytes())?;
    a.config_write(cap + 2, &0x8000u16.to_le_bytes())?;
    let mut p = Program::new();
    p.write(Width::W32, a.entry(0, 12), 0);
    a.run(&p)?;
    a.device.accel.service_fast_path();
    r.check(
        "memory decode on again, Function Mask off, entry 0 unmasked",
        format!("table claimed: {}", a.device.accel.claims(a.entry(0, 0))),
        a.device.accel.claims(a.entry(0, 0))
            && !a.device.accel.debug().is_masked(0).unwrap_or(true),
    );

    // 8. The guest masks entry 0, the device raises it: pending, not delivered.
    let mut p = Program::new();
    p.write(Width::W32, a.entry(0, 12), 1);
    p.read(Width::W32, a.entry(0, 0));
    a.run(&p)?;
    a.source.fire(0).map_err(|e| e.to_string())?;
    a.settle()?;
    let mut p = Program::new();
    let pba = p.read(Width::W64, a.pba());
    let (out, _) = a.run(&p)?;
    r.deliveries_before_migration = a.deliveries();
    let path = a
        .device
        .accel
        .debug()
        .mask_path(0)
        .map_err(|e| e.to_string())?;
    r.check(
        "guest masks entry 0; device raises it",
        format!(
            "{} deliveries, guest PBA {:#x}, masked by {path:?}",
            r.deliveries_before_migration,
            out.get(pba)
        ),
        r.deliveries_before_migration == 2 && out.get(pba) == 1 && path == MaskPath::Source,
    );

    // 9. Snapshot -> JSON. The source VM goes away; only the JSON crosses.
    let state = a.device.snapshot().map_err(|e| e.to_string())?;
    r.pending_at_snapshot = (0..VECTORS).filter(|&v| state.msix.is_pending(v)).collect();
    r.snapshot_json = serde_json::to_string(&state).map_err(|e| e.to_string())?;
    r.check(
        "snapshot the device (serde_json)",
        format!(
            "{} bytes, pending vectors {:?}",
            r.snapshot_json.len(),
            r.pending_at_snapshot
        ),
        r.pending_at_snapshot == [0],
    );
    let trouble = |e: &AccelEvent| e.kind.is_trouble();
    let a_events: Vec<AccelEvent> = a.events.take().into_iter().filter(trouble).collect();
    a.shutdown();

    // --- VM B -------------------------------------------------------------
    let b = Machine::boot(policy)?;
    let state: DeviceState = serde_json::from_str(&r.snapshot_json).map_err(|e| e.to_string())?;
    b.device
        .restore(&state)
        .map_err(|e| format!("restore: {e}"))?;

    // 10. The restored guest sees its table, its pending bit, no interrupt.
    let mut p = Program::new();
    let data = p.read(Width::W32, b.entry(0, 8));
    let control = p.read(Width::W32, b.entry(0, 12));
    let pba = p.read(Width::W64, b.pba());
    let (out, _) = b.run(&p)?;
    b.settle()?;
    r.pba_after_restore = out.get(pba);
    r.deliveries_after_restore = b.deliveries();
    r.check(
        format!(
            "restore on a new VM (BAR at {:#x}, policy {})",
            b.bar(),
            b.device.accel.policy()
        ),
        format!(
            "entry 0 data {:#x}, Vector Control {}, PBA {:#x}, {} deliveries",
            out.get(data),
            out.get(control),
            r.pba_after_restore,
            r.deliveries_after_restore
        ),
        out.get(data) == u64::from(IDT_VECTOR)
            && out.get(control) == 1
            && r.pba_after_restore == 1
            && r.deliveries_after_restore == 0,
    );

    // 11. The guest unmasks: the interrupt carried across arrives once.
    let mut p = Program::new();
    p.write(Width::W32, b.entry(0, 12), 0);
    b.run(&p)?;
    b.vm.wait_irq_count(IDT_VECTOR, 1)
        .map_err(|e| e.to_string())?;
    b.settle()?;
    r.deliveries_after_unmask = b.deliveries();
    let mut p = Program::new();
    let pba = p.read(Width::W64, b.pba());
    let (out, _) = b.run(&p)?;
    r.pba_after_unmask = out.get(pba);
    r.check(
        "guest unmasks entry 0",
        format!(
            "{} delivery, PBA {:#x}",
            r.deliveries_after_unmask, r.pba_after_unmask
        ),
        r.deliveries_after_unmask == 1 && r.pba_after_unmask == 0,
    );

    // 12. And the device keeps delivering on the new VM.
    b.source.fire(0).map_err(|e| e.to_string())?;
    b.vm.wait_irq_count(IDT_VECTOR, 2)
        .map_err(|e| e.to_string())?;
    b.settle()?;
    r.deliveries_after_next_fire = b.deliveries();
    let b_events: Vec<AccelEvent> = b.events.take().into_iter().filter(trouble).collect();
    let events = a_events.len() + b_events.len();
    r.check(
        "next device interrupt on the new VM",
        format!(
            "{} deliveries, {events} accelerator events {:?}",
            r.deliveries_after_next_fire,
            a_events
                .iter()
                .chain(&b_events)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        ),
        r.deliveries_after_next_fire == 2 && events == 0,
    );
    b.shutdown();
    Ok(r)
}

fn main() {
    let policy = match std::env::args().nth(1).map(|a| a.parse::<Policy>()) {
        // The library's default: the host's cheaper exact mechanism.
        None => Policy::Auto,
        Some(Ok(policy)) => policy,
        Some(Err(e)) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run_with(policy) {
        Ok(report) => {
            println!("vmm_device example, policy {policy}");
            for (i, step) in report.steps.iter().enumerate() {
                let mark = if step.ok { "ok " } else { "BAD" };
                println!(
                    "{:>2}. [{mark}] {}\n           {}",
                    i + 1,
                    step.name,
                    step.observed
                );
            }
            if !report.all_ok() {
                eprintln!("some steps did not observe what the protocol promises");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("vmm_device example failed: {e}");
            std::process::exit(1);
        }
    }
}
