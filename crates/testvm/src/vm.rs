//! [`TestVm`]: the guest, its vCPU threads, the program mailbox and the watchdog.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{kvm_mp_state, kvm_msi, kvm_userspace_memory_region, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};

use crate::kernel;
use crate::layout::*;
use crate::memory::GuestRam;
use crate::program::Program;
use crate::setup;
use crate::watchdog::{Stalled, Watchdog};
use crate::{Error, Result};

/// Handles the guest's MMIO exits (the VMM's device model).
pub trait MmioHandler: Send + Sync {
    /// A guest read of `data.len()` bytes at `addr` on `vcpu`; returns false
    /// when the address is not the handler's (the guest then reads all ones).
    fn mmio_read(&self, vcpu: u8, addr: u64, data: &mut [u8]) -> bool;
    /// A guest write at `addr` on `vcpu`; returns false when the address is
    /// not the handler's (the write is then dropped).
    fn mmio_write(&self, vcpu: u8, addr: u64, data: &[u8]) -> bool;
}

/// How to build a test guest.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Number of vCPUs, 1..=4, each on its own thread.
    pub vcpus: u8,
    /// How long any wait on the guest may go without progress (an exit of
    /// the vCPU waited for, an interrupt counted towards the wait) before
    /// the watchdog fails it: a slow guest on a loaded machine is waited
    /// for as long as it progresses ([`crate::Watchdog`]).
    pub watchdog: Duration,
    /// Enable KVM_CAP_X2APIC_API with 32-bit APIC IDs and the broadcast
    /// quirk off, as cloud-hypervisor runs KVM (the default). KVM then
    /// refuses MSI routes whose address has bits 39:32 set (they would be
    /// destination ID bits), which a hostile guest can write.
    pub x2apic_api: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vcpus: 1,
            watchdog: Duration::from_secs(10),
            x2apic_api: true,
        }
    }
}

/// Exits to userspace seen on one vCPU (or summed), by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// KVM_EXIT_MMIO reads.
    pub mmio_reads: u64,
    /// KVM_EXIT_MMIO writes.
    pub mmio_writes: u64,
    /// MMIO exits whose address no handler claimed.
    pub mmio_unclaimed: u64,
    /// KVM_EXIT_IO (the guest's program-done reports).
    pub io: u64,
    /// KVM_RUN interrupted by a signal.
    pub interrupted: u64,
}

impl ExitCounts {
    /// MMIO exits, reads and writes.
    pub fn mmio(&self) -> u64 {
        self.mmio_reads + self.mmio_writes
    }

    /// The counts accumulated since `earlier`.
    pub fn since(&self, earlier: &ExitCounts) -> ExitCounts {
        ExitCounts {
            mmio_reads: self.mmio_reads - earlier.mmio_reads,
            mmio_writes: self.mmio_writes - earlier.mmio_writes,
            mmio_unclaimed: self.mmio_unclaimed - earlier.mmio_unclaimed,
            io: self.io - earlier.io,
            interrupted: self.interrupted - earlier.interrupted,
        }
    }

    fn add(&mut self, other: &ExitCounts) {
        self.mmio_reads += other.mmio_reads;
        self.mmio_writes += other.mmio_writes;
        self.mmio_unclaimed += other.mmio_unclaimed;
        self.io += other.io;
        self.interrupted += other.interrupted;
    }
}

#[derive(Debug, Default)]
struct ExitCounters {
    mmio_reads: AtomicU64,
    mmio_writes: AtomicU64,
    mmio_unclaimed: AtomicU64,
    io: AtomicU64,
    interrupted: AtomicU64,
    /// What the vCPU thread last did, for a watchdog's report: the last
    /// exit's kind ([`LastExit`]) and address, and whether the thread is
    /// handling it now (in the host) or back in KVM_RUN (in the guest).
    last_kind: AtomicU8,
    last_addr: AtomicU64,
    in_handler: AtomicBool,
    /// Set by a watchdog that wants the vCPU's state: the vCPU thread,
    /// kicked out of KVM_RUN, stores it in `dump` and goes back in.
    dump_requested: AtomicBool,
    dump: Mutex<Option<String>>,
}

/// The kind of a vCPU's last exit, as stored in [`ExitCounters`] (0 until
/// the first exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum LastExit {
    MmioRead = 1,
    MmioWrite = 2,
    Io = 3,
}

impl ExitCounters {
    /// Exits that show the vCPU progressing: MMIO and port I/O (not kicks).
    fn progress(&self) -> u64 {
        self.mmio_reads.load(Ordering::SeqCst)
            + self.mmio_writes.load(Ordering::SeqCst)
            + self.io.load(Ordering::SeqCst)
    }

    /// The thread starts handling an exit of `kind` at `addr`.
    fn enter(&self, kind: LastExit, addr: u64) {
        self.last_kind.store(kind as u8, Ordering::SeqCst);
        self.last_addr.store(addr, Ordering::SeqCst);
        self.in_handler.store(true, Ordering::SeqCst);
    }

    /// The exit is handled; the thread goes back into the guest.
    fn leave(&self) {
        self.in_handler.store(false, Ordering::SeqCst);
    }

    /// Where the vCPU is, in words.
    fn doing(&self) -> String {
        let addr = self.last_addr.load(Ordering::SeqCst);
        let last = match self.last_kind.load(Ordering::SeqCst) {
            k if k == LastExit::MmioRead as u8 => format!("an MMIO read at {addr:#x}"),
            k if k == LastExit::MmioWrite as u8 => format!("an MMIO write at {addr:#x}"),
            k if k == LastExit::Io as u8 => format!("an OUT to port {addr:#x}"),
            _ => return "in the guest; it has made no exit yet".into(),
        };
        if self.in_handler.load(Ordering::SeqCst) {
            format!("in the host, handling {last}")
        } else {
            format!("in the guest since its last exit, {last}")
        }
    }

    fn snapshot(&self) -> ExitCounts {
        ExitCounts {
            mmio_reads: self.mmio_reads.load(Ordering::SeqCst),
            mmio_writes: self.mmio_writes.load(Ordering::SeqCst),
            mmio_unclaimed: self.mmio_unclaimed.load(Ordering::SeqCst),
            io: self.io.load(Ordering::SeqCst),
            interrupted: self.interrupted.load(Ordering::SeqCst),
        }
    }
}

/// The values a finished program recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramOutput {
    values: Vec<u64>,
}

impl ProgramOutput {
    /// The value recorded in `slot` (a read's value or a timestamp).
    pub fn get(&self, slot: crate::ResultSlot) -> u64 {
        self.values.get(slot.0).copied().unwrap_or(0)
    }

    /// All recorded values in slot order.
    pub fn values(&self) -> &[u64] {
        &self.values
    }
}

#[derive(Debug, Default)]
struct VcpuState {
    /// Sequence number of the program last started / last finished.
    started: u64,
    finished: u64,
    result_count: usize,
    /// Set when the vCPU thread ended, with why if it was an error.
    stopped: Option<String>,
}

struct Shared {
    ram: GuestRam,
    stop: AtomicBool,
    /// IDT vectors whose late deliveries are told apart from violations
    /// (see [`TestVm::watch_masked_window`]), one flag per vector.
    watched: Vec<AtomicBool>,
    /// Whether any vector is watched (skips the LAPIC read otherwise).
    watching: AtomicBool,
    handler: RwLock<Option<Arc<dyn MmioHandler>>>,
    exits: Vec<ExitCounters>,
    state: Mutex<Vec<VcpuState>>,
    changed: Condvar,
}

/// A tiny real KVM guest: in-kernel irqchip, x2APIC, 64-bit mode, 1..=4
/// vCPUs each on its own thread, per-vCPU per-vector interrupt counters, and
/// host-built programs of MMIO accesses. Every wait is bounded by the
/// watchdog; dropping the guest stops its vCPUs.
///
/// ```no_run
/// use testvm::{Program, TestVm, VmConfig, Width};
/// let vm = TestVm::new(VmConfig::default())?;
/// let mut p = Program::new();
/// let t = p.timestamp();
/// let out = vm.run(0, &p)?;
/// assert!(out.get(t) > 0);
/// vm.signal_msi(0, 0x40)?; // deliver IDT vector 0x40 to vCPU 0
/// vm.wait_irq_count(0x40, 1)?;
/// # Ok::<(), testvm::Error>(())
/// ```
pub struct TestVm {
    kvm: Kvm,
    vm: Arc<VmFd>,
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    config: VmConfig,
    tsc_khz: u32,
}

impl std::fmt::Debug for TestVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestVm")
            .field("vcpus", &self.config.vcpus)
            .field("tsc_khz", &self.tsc_khz)
            .finish()
    }
}

static KICK_HANDLER: Once = Once::new();

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

impl TestVm {
    /// Creates the guest and starts its vCPUs; returns once every vCPU has
    /// enabled its x2APIC and interrupts (so MSIs sent afterwards are taken).
    pub fn new(config: VmConfig) -> Result<TestVm> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(Error::VcpuCount {
                requested: config.vcpus,
                max: MAX_VCPUS,
            });
        }
        KICK_HANDLER.call_once(|| {
            // An error here only means kicks do not interrupt KVM_RUN; the
            // watchdog then reports the hang instead of ending it quickly.
            let _ = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler);
        });
        let kvm = Kvm::new().map_err(|e| Error::NoKvm { errno: e.errno() })?;
        let vm = kvm
            .create_vm()
            .map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
        vm.create_irq_chip()
            .map_err(|e| Error::kvm("KVM_CREATE_IRQCHIP", e))?;
        if config.x2apic_api {
            enable_x2apic_api(&vm)?;
        }
        let ram = GuestRam::new(RAM_SIZE)?;
        let region = kvm_userspace_memory_region {
            slot: RAM_SLOT,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.size(),
            userspace_addr: ram.host_address(),
        };
        // SAFETY: the region describes `ram`, a live mapping that `Shared`
        // keeps until after the VM fd (and so the memslot) is gone: TestVm
        // drops `vm` before `shared` releases the last reference only after
        // the vCPU threads (which hold clones) are joined.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))?;

        let kernel = kernel::assemble()?;
        ram.write_bytes(KERNEL_ADDR, &kernel.code)?;
        setup::write_tables(&ram, &kernel.handlers)?;

        let shared = Arc::new(Shared {
            ram,
            stop: AtomicBool::new(false),
            watched: (0..256).map(|_| AtomicBool::new(false)).collect(),
            watching: AtomicBool::new(false),
            handler: RwLock::new(None),
            exits: (0..config.vcpus).map(|_| ExitCounters::default()).collect(),
            state: Mutex::new((0..config.vcpus).map(|_| VcpuState::default()).collect()),
            changed: Condvar::new(),
        });

        let mut vcpus = Vec::new();
        for index in 0..config.vcpus {
            let vcpu = vm
                .create_vcpu(u64::from(index))
                .map_err(|e| Error::kvm("KVM_CREATE_VCPU", e))?;
            vcpu.set_cpuid2(&setup::cpuid(&kvm, index)?)
                .map_err(|e| Error::kvm("KVM_SET_CPUID2", e))?;
            setup::long_mode_sregs(&vcpu, index)?;
            let mut regs = vcpu.get_regs().map_err(|e| Error::kvm("KVM_GET_REGS", e))?;
            regs.rip = kernel.entry;
            regs.rsp = stack_top(index);
            regs.rdi = u64::from(index);
            regs.rflags = 0x2;
            vcpu.set_regs(&regs)
                .map_err(|e| Error::kvm("KVM_SET_REGS", e))?;
            vcpu.set_mp_state(kvm_mp_state {
                mp_state: KVM_MP_STATE_RUNNABLE,
            })
            .map_err(|e| Error::kvm("KVM_SET_MP_STATE", e))?;
            vcpus.push(vcpu);
        }
        let tsc_khz = vcpus[0].get_tsc_khz().unwrap_or(0);

        let vm = Arc::new(vm);
        let mut threads = Vec::new();
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let shared = shared.clone();
            let index = index as u8;
            let handle = std::thread::Builder::new()
                .name(format!("testvm-vcpu{index}"))
                .spawn(move || vcpu_loop(index, vcpu, &shared))
                .map_err(|e| Error::VcpuStopped {
                    vcpu: index,
                    reason: format!("cannot spawn thread: {e}"),
                })?;
            threads.push(handle);
        }
        let testvm = TestVm {
            kvm,
            vm,
            shared,
            threads: Mutex::new(threads),
            config,
            tsc_khz,
        };
        for index in 0..testvm.config.vcpus {
            testvm.wait_until(
                index,
                "become ready",
                |vm| vm.progress(index),
                |vm| matches!(vm.shared.ram.read_u64(mailbox(index) + MB_READY), Ok(1)),
            )?;
        }
        Ok(testvm)
    }

    /// The VM, for wiring devices (irqfds, ioeventfds, memslots, routes).
    pub fn vm(&self) -> &Arc<VmFd> {
        &self.vm
    }

    /// The KVM system handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// Number of vCPUs.
    pub fn vcpus(&self) -> u8 {
        self.config.vcpus
    }

    /// The watchdog period.
    pub fn watchdog(&self) -> Duration {
        self.config.watchdog
    }

    /// The guest TSC frequency in kHz (0 if KVM did not say).
    pub fn tsc_khz(&self) -> u32 {
        self.tsc_khz
    }

    /// Installs the handler for MMIO exits (replacing any earlier one).
    pub fn set_mmio_handler(&self, handler: Arc<dyn MmioHandler>) {
        if let Ok(mut h) = self.shared.handler.write() {
            *h = Some(handler);
        }
    }

    /// The MSI address that targets `vcpu` (x2APIC ID = vCPU index).
    pub fn msi_address(vcpu: u8) -> u64 {
        0xFEE0_0000 | (u64::from(vcpu) << 12)
    }

    /// Sends an MSI for IDT `vector` to `vcpu` with KVM_SIGNAL_MSI.
    pub fn signal_msi(&self, vcpu: u8, vector: u8) -> Result<()> {
        let address = Self::msi_address(vcpu);
        let msi = kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data: u32::from(vector),
            ..Default::default()
        };
        self.vm
            .signal_msi(msi)
            .map(|_| ())
            .map_err(|e| Error::kvm("KVM_SIGNAL_MSI", e))
    }

    /// Interrupts taken on IDT `vector`, all vCPUs together.
    pub fn irq_count(&self, vector: u8) -> u64 {
        (0..self.config.vcpus)
            .map(|c| self.irq_count_on(c, vector))
            .sum()
    }

    /// Interrupts taken on IDT `vector` by `vcpu`.
    pub fn irq_count_on(&self, vcpu: u8, vector: u8) -> u64 {
        if vcpu >= self.config.vcpus {
            return 0;
        }
        self.shared
            .ram
            .read_u64(counters_row(vcpu) + u64::from(vector) * 8)
            .unwrap_or(0)
    }

    /// Interrupts on IDT `vector` that `vcpu` took while its program had the
    /// vector's masked window open (see [`Program::masked_window`]) and that
    /// were not already pending in its local APIC when the guest's last MMIO
    /// write returned: deliveries while masked, the violations. For a vector
    /// not watched with [`TestVm::watch_masked_window`], every delivery
    /// inside the window counts here.
    pub fn window_count(&self, vcpu: u8, vector: u8) -> u64 {
        self.row_counter(vcpu, ROW_WINDOW_COUNTS, vector)
    }

    /// Interrupts on IDT `vector` that `vcpu` took inside the masked window
    /// but that its local APIC already held when the guest's last MMIO write
    /// (the mask) returned: raised before the mask took effect and injected
    /// late by the host. Real PCIe delivers such a message before the flush
    /// read completes; a host may inject it a little later (see
    /// docs/fast-path.md). Only counted for watched vectors.
    pub fn late_count(&self, vcpu: u8, vector: u8) -> u64 {
        self.row_counter(vcpu, ROW_LATE_COUNTS, vector)
    }

    /// The guest time stamp counter at the entry of `vcpu`'s last delivery
    /// of IDT `vector` (0 before the first). With the guest TSC frequency
    /// ([`TestVm::tsc_khz`]) and a timestamp the guest took before (for
    /// example [`Program::timestamp`]), how long a delivery took to reach
    /// the handler.
    pub fn last_irq_tsc(&self, vcpu: u8, vector: u8) -> u64 {
        self.row_counter(vcpu, ROW_IRQ_TSC, vector)
    }

    fn row_counter(&self, vcpu: u8, table: u64, vector: u8) -> u64 {
        if vcpu >= self.config.vcpus {
            return 0;
        }
        self.shared
            .ram
            .read_u64(counters_row(vcpu) + table + u64::from(vector) * 8)
            .unwrap_or(0)
    }

    /// Tells late deliveries of IDT `vector` from violations: after every
    /// MMIO write exit, the vCPU thread reads its local APIC (KVM_GET_LAPIC,
    /// KVM_GET_VCPU_EVENTS) and lets the guest count the vector's next
    /// delivery as late ([`TestVm::late_count`]) when the vector was already
    /// pending there, that is, raised before the write took effect. Costs two
    /// ioctls per MMIO write exit while any vector is watched.
    pub fn watch_masked_window(&self, vector: u8) {
        self.shared.watched[usize::from(vector)].store(true, Ordering::SeqCst);
        self.shared.watching.store(true, Ordering::SeqCst);
    }

    /// Proves that every interrupt pending in `vcpu`'s local APIC has been
    /// taken: sends [`SENTINEL_VECTOR`], the lowest-priority vector, with
    /// KVM_SIGNAL_MSI and waits (bounded by the watchdog) until the guest
    /// took it. A device interrupt that reached the local APIC before the
    /// sentinel is taken before it; one that has not is still held by the
    /// device model (pending) and shows in its PBA.
    pub fn sentinel(&self, vcpu: u8) -> Result<()> {
        if vcpu >= self.config.vcpus {
            return Err(Error::NoSuchVcpu { vcpu });
        }
        let before = self.irq_count_on(vcpu, SENTINEL_VECTOR);
        self.signal_msi(vcpu, SENTINEL_VECTOR)?;
        self.wait_until(
            vcpu,
            "take the sentinel interrupt",
            |vm| vm.progress(vcpu),
            |vm| vm.irq_count_on(vcpu, SENTINEL_VECTOR) > before,
        )
    }

    /// [`TestVm::sentinel`] on every vCPU.
    pub fn sentinel_all(&self) -> Result<()> {
        for vcpu in 0..self.config.vcpus {
            self.sentinel(vcpu)?;
        }
        Ok(())
    }

    /// Waits (bounded by the watchdog) until IDT `vector` has been taken at
    /// least `count` times; returns the count seen. Each delivery of
    /// `vector` restarts the watchdog's period.
    pub fn wait_irq_count(&self, vector: u8, count: u64) -> Result<u64> {
        self.wait_until(
            0,
            "take the expected interrupts",
            |vm| vm.irq_count(vector),
            |vm| vm.irq_count(vector) >= count,
        )?;
        Ok(self.irq_count(vector))
    }

    /// Exits to userspace on `vcpu`.
    pub fn exits_on(&self, vcpu: u8) -> ExitCounts {
        self.shared
            .exits
            .get(usize::from(vcpu))
            .map(ExitCounters::snapshot)
            .unwrap_or_default()
    }

    /// Exits to userspace on all vCPUs together.
    pub fn exits(&self) -> ExitCounts {
        let mut total = ExitCounts::default();
        for c in &self.shared.exits {
            total.add(&c.snapshot());
        }
        total
    }

    /// Runs `program` on `vcpu` and waits for it (bounded by the watchdog).
    pub fn run(&self, vcpu: u8, program: &Program) -> Result<ProgramOutput> {
        self.start(vcpu, program)?;
        self.wait(vcpu)
    }

    /// Starts `program` on `vcpu` without waiting; collect it with [`TestVm::wait`].
    pub fn start(&self, vcpu: u8, program: &Program) -> Result<()> {
        if vcpu >= self.config.vcpus {
            return Err(Error::NoSuchVcpu { vcpu });
        }
        let code = program.assemble(program_area(vcpu), results_area(vcpu))?;
        if code.len() as u64 > PROGRAM_MAX {
            return Err(Error::ProgramTooLarge { bytes: code.len() });
        }
        let seq = {
            let mut state = self.lock_state();
            let s = &mut state[usize::from(vcpu)];
            if let Some(reason) = &s.stopped {
                return Err(Error::VcpuStopped {
                    vcpu,
                    reason: reason.clone(),
                });
            }
            if s.started != s.finished {
                return Err(Error::VcpuBusy { vcpu });
            }
            s.started += 1;
            s.result_count = program.result_count();
            s.started
        };
        let mb = mailbox(vcpu);
        self.shared.ram.write_bytes(program_area(vcpu), &code)?;
        self.shared
            .ram
            .write_u64(mb + MB_PROGRAM, program_area(vcpu))?;
        self.shared.ram.write_u64(mb + MB_CMD_SEQ, seq)?;
        self.signal_msi(vcpu, DOORBELL_VECTOR)
    }

    /// Waits for the program started on `vcpu` and returns what it
    /// recorded. Each exit of the vCPU restarts the watchdog's period: a
    /// long program on a loaded machine is waited for as long as it makes
    /// exits, and one that stops making them fails, saying where it is.
    pub fn wait(&self, vcpu: u8) -> Result<ProgramOutput> {
        if vcpu >= self.config.vcpus {
            return Err(Error::NoSuchVcpu { vcpu });
        }
        let mut watchdog = Watchdog::new(self.config.watchdog, self.progress(vcpu));
        let mut state = self.lock_state();
        loop {
            let s = &state[usize::from(vcpu)];
            if s.finished == s.started {
                let count = s.result_count;
                drop(state);
                let base = results_area(vcpu);
                let values = (0..count as u64)
                    .map(|i| self.shared.ram.read_u64(base + 8 * i))
                    .collect::<Result<Vec<u64>>>()?;
                return Ok(ProgramOutput { values });
            }
            if let Some(reason) = &s.stopped {
                return Err(stopped_error(vcpu, reason));
            }
            if let Err(stalled) = watchdog.check(self.progress(vcpu)) {
                drop(state);
                // Described before the vCPUs stop: where the guest was.
                let err = self.watchdog_error(vcpu, "finish its program", stalled);
                self.stop_vcpus();
                return Err(err);
            }
            // Woken by the vCPU thread at the program's end, and often
            // enough to see the watchdog's period end in time.
            let sleep = watchdog.remaining().max(Duration::from_millis(1));
            state = match self.shared.changed.wait_timeout(state, sleep) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Vec<VcpuState>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Exits of `vcpu` that show it progressing.
    fn progress(&self, vcpu: u8) -> u64 {
        self.shared
            .exits
            .get(usize::from(vcpu))
            .map_or(0, ExitCounters::progress)
    }

    /// The watchdog's error for `vcpu`: what it did not do, how long
    /// nothing moved, and where the vCPU was.
    fn watchdog_error(&self, vcpu: u8, what: &'static str, stalled: Stalled) -> Error {
        let mut doing = self
            .shared
            .exits
            .get(usize::from(vcpu))
            .map_or_else(String::new, ExitCounters::doing);
        if let Some(state) = self.kick_for_state(vcpu) {
            doing = format!("{doing}; kicked out of the guest at {state}");
        }
        let (started, finished) = {
            let state = self.lock_state();
            let s = &state[usize::from(vcpu)];
            (s.started, s.finished)
        };
        Error::Watchdog {
            vcpu,
            what,
            waited_ms: stalled.waited.as_millis() as u64,
            quiet_ms: stalled.quiet.as_millis() as u64,
            doing: format!(
                "{doing}; {} exits in all, {} programs started, {} finished{}",
                self.progress(vcpu),
                started,
                finished,
                stalled
                    .kernel_waits
                    .map_or(String::new(), |threads| format!(
                        "; extended {} periods for threads in kernel waits, last {threads}",
                        stalled.kernel_periods
                    ))
            ),
        }
    }

    /// Kicks `vcpu` out of KVM_RUN to read where it is, when it is in the
    /// guest; waits for its thread at most [`STATE_WAIT`]. None when it is
    /// in the host's handler, has stopped, or does not answer.
    fn kick_for_state(&self, vcpu: u8) -> Option<String> {
        let counters = self.shared.exits.get(usize::from(vcpu))?;
        if counters.in_handler.load(Ordering::SeqCst) {
            return None;
        }
        counters.dump_requested.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + STATE_WAIT;
        while std::time::Instant::now() < deadline {
            {
                let threads = self
                    .threads
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let thread = threads
                    .get(usize::from(vcpu))
                    .filter(|t| !t.is_finished())?;
                kick(thread);
            }
            std::thread::sleep(Duration::from_millis(1));
            let dump = counters
                .dump
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if dump.is_some() {
                return dump;
            }
        }
        counters.dump_requested.store(false, Ordering::SeqCst);
        None
    }

    /// Polls `cond` until it holds; `progress` is a counter whose every
    /// change restarts the watchdog's period.
    fn wait_until(
        &self,
        vcpu: u8,
        what: &'static str,
        progress: impl Fn(&TestVm) -> u64,
        cond: impl Fn(&TestVm) -> bool,
    ) -> Result<()> {
        let mut watchdog = Watchdog::new(self.config.watchdog, progress(self));
        loop {
            if cond(self) {
                return Ok(());
            }
            if let Some(reason) = &self.lock_state()[usize::from(vcpu)].stopped {
                return Err(stopped_error(vcpu, reason));
            }
            if let Err(stalled) = watchdog.check(progress(self)) {
                return Err(self.watchdog_error(vcpu, what, stalled));
            }
            // Polling: how long this sleeps changes only how soon the
            // condition is seen, not whether the wait succeeds.
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops every vCPU thread (kicking it out of KVM_RUN) and joins them.
    /// Called by the watchdog and on drop; the guest cannot run afterwards.
    pub fn stop_vcpus(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut threads = match self.threads.lock() {
            Ok(t) => t,
            Err(p) => p.into_inner(),
        };
        // Kicked until every thread has left KVM_RUN, for as long as one
        // more leaves within a watchdog period; a thread that never does
        // is left behind (it holds its own references), not waited for.
        let running = |threads: &Vec<JoinHandle<()>>| {
            threads.iter().filter(|t| !t.is_finished()).count() as u64
        };
        let mut watchdog = Watchdog::new(self.config.watchdog, running(&threads));
        while running(&threads) > 0 && watchdog.check(running(&threads)).is_ok() {
            for t in threads.iter().filter(|t| !t.is_finished()) {
                kick(t);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for t in threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// KVM_CAP_X2APIC_API: 32-bit x2APIC IDs in MSI routes and no broadcast
/// quirk. Before any vCPU exists.
fn enable_x2apic_api(vm: &VmFd) -> Result<()> {
    let mut cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_X2APIC_API,
        ..Default::default()
    };
    cap.args[0] = u64::from(
        kvm_bindings::KVM_X2APIC_API_USE_32BIT_IDS
            | kvm_bindings::KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK,
    );
    vm.enable_cap(&cap)
        .map_err(|e| Error::kvm("KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)", e))
}

fn stopped_error(vcpu: u8, reason: &str) -> Error {
    if let Some(v) = reason.strip_prefix("exception ") {
        if let Ok(vector) = v.parse() {
            return Error::GuestFault { vcpu, vector };
        }
    }
    Error::VcpuStopped {
        vcpu,
        reason: reason.to_string(),
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        self.stop_vcpus();
    }
}

fn vcpu_loop(index: u8, mut vcpu: VcpuFd, shared: &Shared) {
    let counters = &shared.exits[usize::from(index)];
    let reason = loop {
        if shared.stop.load(Ordering::SeqCst) {
            break None;
        }
        match vcpu.run() {
            Ok(VcpuExit::MmioRead(addr, data)) => {
                counters.enter(LastExit::MmioRead, addr);
                counters.mmio_reads.fetch_add(1, Ordering::SeqCst);
                let handler = shared.handler.read().ok().and_then(|h| h.clone());
                let claimed = handler.is_some_and(|h| h.mmio_read(index, addr, data));
                if !claimed {
                    counters.mmio_unclaimed.fetch_add(1, Ordering::SeqCst);
                    data.fill(0xFF);
                }
                counters.leave();
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                counters.enter(LastExit::MmioWrite, addr);
                counters.mmio_writes.fetch_add(1, Ordering::SeqCst);
                let handler = shared.handler.read().ok().and_then(|h| h.clone());
                if !handler.is_some_and(|h| h.mmio_write(index, addr, data)) {
                    counters.mmio_unclaimed.fetch_add(1, Ordering::SeqCst);
                }
                if shared.watching.load(Ordering::SeqCst) {
                    if let Err(reason) = record_late_allowance(index, &vcpu, shared) {
                        break Some(reason);
                    }
                }
                counters.leave();
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                counters.enter(LastExit::Io, u64::from(port));
                counters.io.fetch_add(1, Ordering::SeqCst);
                if port == PORT_PROGRAM_DONE {
                    let done = shared
                        .ram
                        .read_u64(mailbox(index) + MB_DONE_SEQ)
                        .unwrap_or(0);
                    let mut state = shared
                        .state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    state[usize::from(index)].finished = done;
                    drop(state);
                    shared.changed.notify_all();
                } else if port == PORT_FAULT {
                    let mut v = [0u8; 4];
                    let n = data.len().min(4);
                    v[..n].copy_from_slice(&data[..n]);
                    break Some(format!("exception {}", u32::from_le_bytes(v)));
                } else {
                    break Some(format!("unexpected OUT to port {port:#x}"));
                }
                counters.leave();
            }
            Ok(other) => {
                // What the vCPU looked like when it stopped: after a triple
                // fault (Shutdown) the state KVM kept says whether the
                // guest's tables were still intact.
                let what = format!("{other:?}");
                break Some(format!("unexpected exit {what}{}", vcpu_state(&vcpu)));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                counters.interrupted.fetch_add(1, Ordering::SeqCst);
                if counters.dump_requested.swap(false, Ordering::SeqCst) {
                    let state = vcpu.get_regs().map_or(String::new(), |r| {
                        format!(
                            "rip {:#x} ({}){}",
                            r.rip,
                            where_is(r.rip),
                            vcpu_state(&vcpu)
                        )
                    });
                    *counters
                        .dump
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
                }
            }
            Err(e) => break Some(format!("KVM_RUN failed: errno {}", e.errno())),
        }
    };
    let mut state = shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    state[usize::from(index)].stopped =
        Some(reason.unwrap_or_else(|| "stopped by the host".into()));
    drop(state);
    shared.changed.notify_all();
}

/// Sends the kick signal to a vCPU thread still in `threads` (spawned by
/// us, not joined), so that its KVM_RUN returns EINTR.
fn kick(thread: &JoinHandle<()>) {
    // SAFETY: every caller holds the thread list's lock and passes a
    // handle from it: a thread we spawned and have not joined, so its
    // pthread_t is valid; the signal's handler is installed and does
    // nothing.
    unsafe { libc::pthread_kill(thread.as_pthread_t(), kick_signal()) };
}

/// How long a watchdog waits for a kicked vCPU to report its state.
const STATE_WAIT: Duration = Duration::from_secs(1);

/// What guest code `rip` belongs to.
fn where_is(rip: u64) -> &'static str {
    if (KERNEL_ADDR..KERNEL_ADDR + KERNEL_MAX).contains(&rip) {
        "the test guest's kernel: its idle loop or an interrupt handler"
    } else if (PROGRAMS_ADDR..PROGRAMS_ADDR + u64::from(MAX_VCPUS) * PROGRAM_MAX).contains(&rip) {
        "a program"
    } else {
        "outside the test guest's code"
    }
}

/// The vCPU's registers and pending events, in a line, for the reason of
/// an unexpected stop (empty when KVM cannot read them).
fn vcpu_state(vcpu: &VcpuFd) -> String {
    let (Ok(r), Ok(s), Ok(e)) = (vcpu.get_regs(), vcpu.get_sregs(), vcpu.get_vcpu_events()) else {
        return String::new();
    };
    format!(
        " (state: rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} cs {:#x} cr0 {:#x} cr3 {:#x} \
         cr4 {:#x} efer {:#x} idt {:#x}/{:#x} gdt {:#x}/{:#x} tr {:#x}; exception \
         injected {} pending {} nr {} has_error {} error {:#x}; interrupt injected {} nr {}; \
         nmi injected {} pending {}; smm {} smi pending {} latched init {})",
        r.rip,
        r.rsp,
        r.rflags,
        r.rax,
        s.cs.selector,
        s.cr0,
        s.cr3,
        s.cr4,
        s.efer,
        s.idt.base,
        s.idt.limit,
        s.gdt.base,
        s.gdt.limit,
        s.tr.selector,
        e.exception.injected,
        e.exception.pending,
        e.exception.nr,
        e.exception.has_error_code,
        e.exception.error_code,
        e.interrupt.injected,
        e.interrupt.nr,
        e.nmi.injected,
        e.nmi.pending,
        e.smi.smm,
        e.smi.pending,
        e.smi.latched_init,
    )
}

/// After an MMIO write exit, before the vCPU re-enters: for each watched
/// vector, writes 1 into the guest's late allowance when the vector is
/// pending in this vCPU's local APIC (IRR, or ISR and not yet taken, or
/// queued for injection), else 0. The guest clears it at the vector's next
/// delivery.
fn record_late_allowance(
    index: u8,
    vcpu: &VcpuFd,
    shared: &Shared,
) -> std::result::Result<(), String> {
    let lapic = vcpu
        .get_lapic()
        .map_err(|e| format!("KVM_GET_LAPIC failed: errno {}", e.errno()))?;
    let events = vcpu
        .get_vcpu_events()
        .map_err(|e| format!("KVM_GET_VCPU_EVENTS failed: errno {}", e.errno()))?;
    let register = |base: usize, vector: usize| -> bool {
        let at = base + (vector / 32) * 0x10;
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[at + i] as u8);
        u32::from_le_bytes(bytes) & (1 << (vector % 32)) != 0
    };
    for (vector, watched) in shared.watched.iter().enumerate() {
        if !watched.load(Ordering::Relaxed) {
            continue;
        }
        let queued = events.interrupt.injected != 0 && usize::from(events.interrupt.nr) == vector;
        let pending = register(APIC_IRR, vector) || register(APIC_ISR, vector) || queued;
        shared
            .ram
            .write_bytes(
                counters_row(index) + ROW_LATE_ALLOWANCE + vector as u64,
                &[u8::from(pending)],
            )
            .map_err(|e| format!("late allowance: {e}"))?;
    }
    Ok(())
}

/// Offsets of the In-Service and Interrupt Request registers in the local
/// APIC page (eight 32-bit registers each, 16 bytes apart).
const APIC_ISR: usize = 0x100;
const APIC_IRR: usize = 0x200;
