//! How a VMM runs the checked-in scenario files against its own MSI-X
//! emulation in its `cargo test` (the crate's README walks through it): a
//! toy trap-everything VMM, its table and PBA trapped in userspace, each
//! vector's irqfd assigned while the vector may deliver and deassigned
//! while it is masked (its eventfd then holds the message: the pending
//! bit), implements [`Target`] and runs every file it can hold.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use irqfd_routes::{
    eventfd_pending, Gsi, GsiRouting, IrqchipRoutes, Irqfd, MsiMessage, MsiRouteTable,
};
use msix_conformance::{load, run_matrix, Candidate, Scenario, Target, Verdict, SCENARIO_WATCHDOG};
use msix_hypervisor::{KvmVm, MsixVm};
use msix_rig::rig::RigLayout;
use testvm::{MmioHandler, TestVm, VmConfig};
use vfio_vectors::software::SoftwareSource;
use vfio_vectors::MsixSource;

/// Message Control: MSI-X Enable and Function Mask.
const ENABLE: u16 = 0x8000;
const FUNCTION_MASK: u16 = 0x4000;

/// The toy's whole state, under one lock.
#[derive(Debug)]
struct Toy {
    /// Address low, address high, data, Vector Control of each entry.
    entries: Vec<[u32; 4]>,
    /// Message Control as the guest wrote it.
    control: u16,
    routing: GsiRouting,
    irqfds: Vec<Irqfd>,
    gsis: Vec<Option<Gsi>>,
    /// The device's interrupt source (VFIO in a real VMM).
    source: SoftwareSource,
}

impl Toy {
    /// Whether vector `v` may deliver: enabled, no Function Mask, unmasked.
    fn live(&self, v: usize) -> bool {
        self.control & ENABLE != 0
            && self.control & FUNCTION_MASK == 0
            && self.entries[v][3] & 1 == 0
    }

    /// Brings vector `v`'s route and irqfd in line with its entry: a live
    /// vector's route holds its message and its irqfd is assigned (KVM
    /// sends a message its eventfd held meanwhile at once); a masked one's
    /// irqfd is deassigned, so its messages wait in the eventfd.
    fn sync(&mut self, v: usize) -> Result<(), String> {
        let trigger = self.source.trigger(v as u16).map_err(|e| e.to_string())?;
        if !self.live(v) {
            return self.irqfds[v].detach(trigger).map_err(|e| e.to_string());
        }
        let gsi = match self.gsis[v] {
            Some(gsi) => gsi,
            None => {
                let gsi = self.routing.allocate().map_err(|e| e.to_string())?;
                self.gsis[v] = Some(gsi);
                gsi
            }
        };
        let [lo, hi, data, _] = self.entries[v];
        let message = MsiMessage::new(u64::from(lo) | u64::from(hi) << 32, data);
        self.routing
            .stage(gsi, message)
            .map_err(|e| e.to_string())?;
        self.routing.commit().map_err(|e| e.to_string())?;
        self.irqfds[v]
            .attach(trigger, gsi)
            .map_err(|e| e.to_string())
    }

    fn sync_all(&mut self) -> Result<(), String> {
        (0..self.entries.len()).try_for_each(|v| self.sync(v))
    }
}

/// The toy's MSI-X device: table and PBA trapped, at the places the file's
/// layout would put them (standard layout only).
#[derive(Debug)]
struct TrapEverything {
    table_gpa: u64,
    pba_gpa: u64,
    vectors: u16,
    state: Mutex<Toy>,
    /// The first error met while handling an access.
    error: Mutex<Option<String>>,
}

impl TrapEverything {
    /// The table's window: its pages, bytes past the last entry reading as
    /// zero.
    fn table_window(&self) -> u64 {
        (u64::from(self.vectors) * 16).div_ceil(4096) * 4096
    }

    fn lock(&self) -> MutexGuard<'_, Toy> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, result: Result<(), String>) {
        if let Err(e) = result {
            let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
            error.get_or_insert(e);
        }
    }

    /// The PBA's bytes at `offset`: a vector is pending when it is not live
    /// and its eventfd holds a message.
    fn read_pba(&self, offset: u64, data: &mut [u8]) {
        let toy = self.lock();
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = 0;
            for bit in 0..8 {
                let v = (offset as usize + i) * 8 + bit;
                if v >= toy.entries.len() || toy.live(v) {
                    continue;
                }
                let held = toy
                    .source
                    .trigger(v as u16)
                    .map(|fd| eventfd_pending(fd).unwrap_or(false))
                    .unwrap_or(false);
                *byte |= u8::from(held) << bit;
            }
        }
    }

    fn write_message_control(&self, value: u16) -> Result<(), String> {
        let mut toy = self.lock();
        let was_enabled = toy.control & ENABLE != 0;
        toy.control = value;
        if value & ENABLE != 0 && !was_enabled {
            let n = toy.source.vector_count();
            toy.source.enable(n).map_err(|e| e.to_string())?;
        } else if value & ENABLE == 0 && was_enabled {
            toy.source.disable().map_err(|e| e.to_string())?;
        }
        toy.sync_all()
    }
}

impl MmioHandler for TrapEverything {
    fn mmio_read(&self, _vcpu: u8, addr: u64, data: &mut [u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_window()).contains(&addr) {
            // Any width inside one entry: the bytes of the entry; past the
            // last entry, zeros.
            let offset = addr - self.table_gpa;
            let toy = self.lock();
            let entry = toy
                .entries
                .get((offset / 16) as usize)
                .copied()
                .unwrap_or_default();
            let bytes: Vec<u8> = entry.iter().flat_map(|d| d.to_le_bytes()).collect();
            let at = (offset % 16) as usize;
            for (i, b) in data.iter_mut().enumerate() {
                *b = bytes.get(at + i).copied().unwrap_or(0);
            }
            return true;
        }
        let pba_len = u64::from(self.vectors).div_ceil(64) * 8;
        if (self.pba_gpa..self.pba_gpa + pba_len).contains(&addr) {
            self.read_pba(addr - self.pba_gpa, data);
            return true;
        }
        false
    }

    fn mmio_write(&self, _vcpu: u8, addr: u64, data: &[u8]) -> bool {
        if (self.table_gpa..self.table_gpa + self.table_window()).contains(&addr) {
            // Aligned dwords and qwords to an entry only; anything else is
            // ignored. Of Vector Control only the Mask bit is kept.
            let offset = addr - self.table_gpa;
            let v = (offset / 16) as usize;
            let misaligned = offset % data.len() as u64 != 0;
            if misaligned || !matches!(data.len(), 4 | 8) || v >= usize::from(self.vectors) {
                return true;
            }
            let mut toy = self.lock();
            let at = (offset % 16 / 4) as usize;
            for (k, chunk) in data.chunks(4).enumerate() {
                toy.entries[v][at + k] =
                    u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
            toy.entries[v][3] &= 1;
            let result = toy.sync(v);
            drop(toy);
            self.record(result);
            return true;
        }
        let pba_len = u64::from(self.vectors).div_ceil(64) * 8;
        // PBA writes are ignored (read-only).
        (self.pba_gpa..self.pba_gpa + pba_len).contains(&addr)
    }
}

/// A guest with the toy device. Fields drop in order: the device, the
/// guest.
#[derive(Debug)]
struct ToyVmm {
    device: Arc<TrapEverything>,
    source: SoftwareSource,
    layout: RigLayout,
    vm: TestVm,
}

impl ToyVmm {
    fn new(scenario: &Scenario) -> Result<ToyVmm, String> {
        let vm = TestVm::new(VmConfig {
            vcpus: scenario.vcpus,
            watchdog: SCENARIO_WATCHDOG,
            x2apic_api: scenario.x2apic_api,
        })
        .map_err(|e| e.to_string())?;
        let hv: Arc<dyn MsixVm> = Arc::new(KvmVm::new(vm.vm().clone()));
        let vectors = scenario.vectors;
        let source = SoftwareSource::new(vectors).map_err(|e| e.to_string())?;
        let layout = RigLayout::standard(vectors);
        let routing = GsiRouting::new(hv.clone(), IrqchipRoutes::X86KernelIrqchip)
            .map_err(|e| e.to_string())?;
        let n = usize::from(vectors);
        let device = Arc::new(TrapEverything {
            table_gpa: layout.table_gpa(0),
            pba_gpa: layout.pba_gpa(0),
            vectors,
            state: Mutex::new(Toy {
                // Every entry masked at reset, as the PCI spec says.
                entries: vec![[0, 0, 0, 1]; n],
                control: 0,
                routing,
                irqfds: (0..n).map(|_| Irqfd::new(hv.clone())).collect(),
                gsis: vec![None; n],
                source: source.clone(),
            }),
            error: Mutex::new(None),
        });
        vm.set_mmio_handler(device.clone());
        Ok(ToyVmm {
            device,
            source,
            layout,
            vm,
        })
    }
}

impl Drop for ToyVmm {
    fn drop(&mut self) {
        self.vm.stop_vcpus();
    }
}

impl Target for ToyVmm {
    fn vm(&self) -> &TestVm {
        &self.vm
    }
    fn layout(&self) -> RigLayout {
        self.layout
    }
    fn message_control(&self, _device: u8) -> u16 {
        self.device.lock().control
    }
    fn write_message_control(&self, _device: u8, value: u16) -> Result<(), String> {
        self.device.write_message_control(value)
    }
    // The toy reports no events and is not our accelerator: the defaults
    // of `take_events` and `accel_setup` (None) skip the `expect event`
    // and `expect exits` steps.
    fn software_source(&self, _device: u8) -> Option<&SoftwareSource> {
        Some(&self.source)
    }
    fn settle(&self) -> Result<(), String> {
        let error = self
            .device
            .error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        error.clone().map_or(Ok(()), Err)
    }
}

/// The toy as a column of the matrix: one device in the standard layout.
struct Toys;

impl Candidate for Toys {
    fn name(&self) -> String {
        "trap-everything".into()
    }
    fn source(&self) -> String {
        "plain".into()
    }
    fn skip_reason(&self, s: &Scenario) -> Option<String> {
        if s.devices > 1 {
            return Some("the toy holds one device".into());
        }
        match s.layout {
            Some(l) if l != RigLayout::standard(s.vectors) => {
                Some("the toy knows the standard layout only".into())
            }
            _ => None,
        }
    }
    fn build(&self, s: &Scenario) -> Result<Box<dyn Target>, String> {
        Ok(Box::new(ToyVmm::new(s)?))
    }
}

#[test]
fn the_checked_in_scenarios_hold_on_a_trap_everything_vmm() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/scenarios");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".scn"))
        .collect();
    files.sort();
    let scenarios = load(&files).unwrap();
    let matrix = run_matrix(&scenarios, &[Box::new(Toys) as Box<dyn Candidate>], |_| {});
    let (pass, fail, skipped) = matrix.totals();
    let failures: Vec<String> = matrix
        .files
        .iter()
        .filter(|f| f.results["trap-everything"] == Verdict::Fail)
        .map(|f| format!("{:?}", f.detail["trap-everything"].failure))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(pass + fail + skipped, files.len());
    // Every single-device file in the standard layout ran, and held.
    assert!(pass >= 17, "{pass} passed, {skipped} skipped");
}
