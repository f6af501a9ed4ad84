//! Runs inside a QEMU guest: checks `vfio_vectors::kernel::VfioMsixSource`
//! against a real vfio-pci device (QEMU's emulated igb or e1000e behind an
//! emulated IOMMU).
//!
//! Usage: `vfio-vm-test /sys/bus/pci/devices/BDF` (the device bound to
//! vfio-pci). The NIC is made to raise each MSI-X vector on demand through
//! its BAR0 registers (VFIO region 0); every check prints `PASS name` or
//! `FAIL name: why`, the last line is `N passed, M failed`, and the exit
//! status is non-zero when anything failed. Every wait is bounded.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vfio_vectors::kernel::VfioMsixSource;
use vfio_vectors::{Error, MsixSource};
use vmm_sys_util::eventfd::EventFd;

/// VFIO region indices (vfio-pci): BAR0 and config space.
const BAR0: u32 = 0;
const CONFIG: u32 = 7;
const PCI_COMMAND: u64 = 0x04;
const PCI_COMMAND_MEMORY: u16 = 1 << 1;
const PCI_COMMAND_MASTER: u16 = 1 << 2;

/// How long a vector may take to arrive under TCG.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long we wait to be confident nothing else (or nothing at all) fires.
const QUIET: Duration = Duration::from_millis(15);

type CheckResult = Result<(), String>;

/// The emulated NIC models, and how each raises one MSI-X vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nic {
    /// 82576 (8086:10c9): extended interrupts, one EICR bit per vector.
    Igb,
    /// 82574L (8086:10d3): five causes routed to vectors 0..4 by IVAR.
    E1000e,
}

mod igb {
    pub const GPIE: u64 = 0x1514;
    pub const EICS: u64 = 0x1520;
    pub const EIMS: u64 = 0x1524;
    pub const EIAC: u64 = 0x152c;
    /// GPIE: PBA support (bit 31) and MSI-X mode (bit 4).
    pub const GPIE_MSIX: u32 = 0x8000_0010;
}

mod e1000e {
    pub const CTRL_EXT: u64 = 0x18;
    pub const ICR: u64 = 0xc0;
    pub const ICS: u64 = 0xc8;
    pub const IMS: u64 = 0xd0;
    pub const EIAC: u64 = 0xdc;
    pub const IVAR: u64 = 0xe4;
    pub const CTRL_EXT_PBA_CLR: u32 = 1 << 31;
    pub const CTRL_EXT_EIAME: u32 = 1 << 24;
    /// RXQ0, RXQ1, TXQ0, TXQ1, OTHER -> vectors 0..4, each with its valid bit.
    pub const IVAR_VECTORS: u32 = 0x000c_ba98;
    /// The five causes of IVAR_VECTORS, vector 0 first (ICR bits 20..24).
    pub const CAUSE_SHIFT: u32 = 20;
    pub const ALL_CAUSES: u32 = 0x01f0_0000;
}

impl Nic {
    fn identify(sysfs: &Path) -> Result<Self, String> {
        let read = |f: &str| {
            std::fs::read_to_string(sysfs.join(f))
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("{}/{f}: {e}", sysfs.display()))
        };
        match (read("vendor")?.as_str(), read("device")?.as_str()) {
            ("0x8086", "0x10c9") => Ok(Nic::Igb),
            ("0x8086", "0x10d3") => Ok(Nic::E1000e),
            (v, d) => Err(format!("unsupported device {v}:{d}")),
        }
    }

    fn write(src: &VfioMsixSource, reg: u64, value: u32) -> CheckResult {
        src.region_write(BAR0, reg, &value.to_le_bytes())
            .map_err(|e| format!("BAR0 write {reg:#x}: {e}"))
    }

    fn read(src: &VfioMsixSource, reg: u64) -> Result<u32, String> {
        let mut b = [0u8; 4];
        src.region_read(BAR0, reg, &mut b)
            .map_err(|e| format!("BAR0 read {reg:#x}: {e}"))?;
        Ok(u32::from_le_bytes(b))
    }

    /// Programs the NIC so that [`Nic::arm`] + [`Nic::fire`] raise one vector.
    fn setup(self, src: &VfioMsixSource) -> CheckResult {
        match self {
            Nic::Igb => {
                Self::write(src, igb::GPIE, igb::GPIE_MSIX)?;
                Self::write(src, igb::EIAC, 0x3ff)?;
                Self::write(src, igb::EIMS, 0x3ff)
            }
            Nic::E1000e => {
                let ctrl_ext = Self::read(src, e1000e::CTRL_EXT)?;
                Self::write(
                    src,
                    e1000e::CTRL_EXT,
                    ctrl_ext | e1000e::CTRL_EXT_PBA_CLR | e1000e::CTRL_EXT_EIAME,
                )?;
                Self::write(src, e1000e::IVAR, e1000e::IVAR_VECTORS)?;
                Self::write(src, e1000e::EIAC, e1000e::ALL_CAUSES)?;
                Self::write(src, e1000e::IMS, e1000e::ALL_CAUSES)
            }
        }
    }

    /// Enables the vector's cause. QEMU's e1000e clears a cause's IMS bit on
    /// each interrupt, so it is re-armed before every raise; with PBA_CLR an
    /// IMS write also clears the pending bit, so never arm between a masked
    /// raise and its unmask. A cause left in ICR (raised while MSI-X was
    /// disabled, where EIAC does not auto-clear it) is cleared first
    /// (write-1-to-clear) so the next ICS is a new edge.
    fn arm(self, src: &VfioMsixSource, vector: u16) -> CheckResult {
        match self {
            Nic::Igb => Self::write(src, igb::EIMS, 1 << vector),
            Nic::E1000e => {
                let cause = 1 << (e1000e::CAUSE_SHIFT + u32::from(vector));
                Self::write(src, e1000e::ICR, cause)?;
                Self::write(src, e1000e::IMS, cause)
            }
        }
    }

    /// Sets the vector's cause: the NIC sends the vector's MSI-X message.
    fn fire(self, src: &VfioMsixSource, vector: u16) -> CheckResult {
        match self {
            Nic::Igb => Self::write(src, igb::EICS, 1 << vector),
            Nic::E1000e => Self::write(
                src,
                e1000e::ICS,
                1 << (e1000e::CAUSE_SHIFT + u32::from(vector)),
            ),
        }
    }

    fn raise(self, src: &VfioMsixSource, vector: u16) -> CheckResult {
        self.arm(src, vector)?;
        self.fire(src, vector)
    }
}

/// Reads (and so clears) an eventfd's count; 0 when it was not signalled.
fn take(fd: &EventFd) -> Result<u64, String> {
    match fd.read() {
        Ok(n) => Ok(n),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(0),
        Err(e) => Err(format!("eventfd read: {e}")),
    }
}

/// Waits up to `timeout` for `fd` to become readable, then takes its count.
fn wait(fd: &EventFd, timeout: Duration) -> Result<u64, String> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
    if ret < 0 {
        return Err(format!("poll: {}", std::io::Error::last_os_error()));
    }
    take(fd)
}

struct Harness {
    nic: Nic,
    src: VfioMsixSource,
    passed: u32,
    failed: u32,
}

impl Harness {
    fn check(&mut self, name: &str, result: CheckResult) -> bool {
        match result {
            Ok(()) => {
                println!("PASS {name}");
                self.passed += 1;
                true
            }
            Err(why) => {
                println!("FAIL {name}: {why}");
                self.failed += 1;
                false
            }
        }
    }

    fn count(&self) -> u16 {
        self.src.vector_count()
    }

    fn drain_all(&self) -> CheckResult {
        for v in 0..self.count() {
            take(self.src.trigger(v).map_err(|e| e.to_string())?)?;
        }
        Ok(())
    }

    fn trigger(&self, v: u16) -> Result<&EventFd, String> {
        self.src.trigger(v).map_err(|e| e.to_string())
    }

    /// `vector` has signalled (>= 1) and, after a quiet period, no other
    /// vector has.
    fn expect_only(&self, vector: u16) -> CheckResult {
        let n = wait(self.trigger(vector)?, DELIVERY_TIMEOUT)?;
        if n == 0 {
            return Err(format!(
                "vector {vector}: no eventfd signal within {DELIVERY_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(QUIET);
        let others: Vec<String> = (0..self.count())
            .filter(|&v| v != vector)
            .filter_map(|v| match self.trigger(v).and_then(take) {
                Ok(0) => None,
                Ok(n) => Some(format!("vector {v} signalled {n}")),
                Err(e) => Some(e),
            })
            .collect();
        if others.is_empty() {
            Ok(())
        } else {
            Err(format!("raising {vector}: {}", others.join(", ")))
        }
    }

    fn raise_expect_only(&self, vector: u16) -> CheckResult {
        self.drain_all()?;
        self.nic.raise(&self.src, vector)?;
        self.expect_only(vector)
    }

    /// Every enabled vector raises its own eventfd and no other.
    fn all_enabled_work(&self) -> CheckResult {
        for v in 0..self.src.enabled_count() {
            self.raise_expect_only(v)?;
        }
        Ok(())
    }

    /// `vector` is masked at the device: Vector Control has the mask bit, a
    /// raise signals nothing and sets the physical PBA bit; unmasking
    /// delivers exactly one signal and clears the PBA bit.
    fn masked_then_delivered_once(&mut self, vector: u16) -> CheckResult {
        let vc = self.src.vector_control(vector).ok_or("table not mapped")?;
        if vc & 1 == 0 {
            return Err(format!(
                "vector {vector}: Vector Control {vc:#x} lost the mask bit"
            ));
        }
        self.drain_all()?;
        self.nic.arm(&self.src, vector)?;
        self.nic.fire(&self.src, vector)?;
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while !self.src.pending(vector).map_err(|e| e.to_string())? {
            if Instant::now() > deadline {
                return Err(format!("vector {vector}: PBA bit not set while masked"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(QUIET);
        let leaked = take(self.trigger(vector)?)?;
        if leaked != 0 {
            return Err(format!("vector {vector}: signalled {leaked} while masked"));
        }
        self.src
            .unmask(vector)
            .map_err(|e| format!("unmask: {e}"))?;
        let n = wait(self.trigger(vector)?, DELIVERY_TIMEOUT)?;
        std::thread::sleep(QUIET);
        let n = n + take(self.trigger(vector)?)?;
        if n != 1 {
            return Err(format!(
                "vector {vector}: {n} signals on unmask, want exactly 1"
            ));
        }
        if self.src.pending(vector).map_err(|e| e.to_string())? {
            return Err(format!("vector {vector}: PBA bit still set after unmask"));
        }
        Ok(())
    }

    fn run(&mut self) {
        let n = self.count();
        let features = self.src.features();
        println!(
            "INFO {:?}: {} vectors, irq flags {:#x}, dynamic {}, maskable {}, {:?}{}",
            self.nic,
            n,
            self.src.irq_flags(),
            features.dynamic,
            features.maskable,
            self.src.msix_capability(),
            self.src
                .unmapped_reason()
                .map(|r| format!(", table not mapped: {r}"))
                .unwrap_or_default()
        );
        let bme = self.enable_bus_master();
        self.check("bus_master_enable", bme);
        let setup = self.nic.setup(&self.src);
        if !self.check("nic_setup", setup) {
            return;
        }

        // Wiring: one SET_IRQS with all eventfds, then the kernel loopback.
        let r = self.src.enable(n).map_err(|e| e.to_string());
        if !self.check("enable_all_vectors", r) {
            return;
        }
        let r = (|| {
            for v in 0..n {
                self.drain_all()?;
                self.src.signal_loopback(v).map_err(|e| e.to_string())?;
                self.expect_only(v)?;
            }
            Ok(())
        })();
        self.check("kernel_loopback_signals_each_vector_eventfd", r);
        for v in 0..n {
            let r = self.raise_expect_only(v);
            self.check(&format!("device_vector_{v}_signals_only_its_eventfd"), r);
        }

        // Growing one vector at a time.
        let r = (|| {
            self.src.disable().map_err(|e| e.to_string())?;
            self.src.enable(1).map_err(|e| e.to_string())?;
            self.all_enabled_work()?;
            for c in 2..=n {
                self.src.grow(c).map_err(|e| format!("grow({c}): {e}"))?;
                if self.src.enabled_count() != c {
                    return Err(format!(
                        "enabled_count {} after grow({c})",
                        self.src.enabled_count()
                    ));
                }
                self.all_enabled_work()
                    .map_err(|e| format!("after grow({c}): {e}"))?;
            }
            Ok(())
        })();
        let name = if features.dynamic {
            "grow_one_at_a_time_dynamic_keeps_all_vectors_working"
        } else {
            "grow_one_at_a_time_noresize_keeps_all_vectors_working"
        };
        self.check(name, r);
        let r = (|| {
            self.src.disable().map_err(|e| e.to_string())?;
            self.src.enable(1).map_err(|e| e.to_string())?;
            for c in 2..=n {
                self.src
                    .grow_by_reenable(c)
                    .map_err(|e| format!("grow_by_reenable({c}): {e}"))?;
                self.all_enabled_work()
                    .map_err(|e| format!("after re-enable with {c}: {e}"))?;
            }
            Ok(())
        })();
        self.check("grow_by_disable_reenable_keeps_all_vectors_working", r);

        // Disabled: nothing fires.
        let r = (|| {
            self.src.disable().map_err(|e| e.to_string())?;
            self.drain_all()?;
            for v in 0..n {
                self.nic.raise(&self.src, v)?;
            }
            std::thread::sleep(QUIET * 4);
            let fired: Vec<String> = (0..n)
                .filter_map(|v| match self.trigger(v).and_then(take) {
                    Ok(0) => None,
                    Ok(c) => Some(format!("vector {v} signalled {c}")),
                    Err(e) => Some(e),
                })
                .collect();
            if fired.is_empty() {
                Ok(())
            } else {
                Err(fired.join(", "))
            }
        })();
        self.check("disabled_msix_signals_nothing", r);

        if features.maskable {
            self.mask_checks();
        } else {
            self.check(
                "msix_mappable_table",
                Err(format!(
                    "physical masking unavailable: {}",
                    self.src.unmapped_reason().unwrap_or("?")
                )),
            );
        }
        let r = self.src.disable().map_err(|e| e.to_string());
        self.check("final_disable", r);
    }

    fn mask_checks(&mut self) {
        let n = self.count();
        if let Err(e) = self.src.enable(n) {
            self.check("enable_for_mask_checks", Err(e.to_string()));
            return;
        }
        for v in 0..n {
            let r = self
                .src
                .mask(v)
                .map_err(|e| e.to_string())
                .and_then(|()| self.masked_then_delivered_once(v));
            self.check(
                &format!("physical_mask_vector_{v}_latches_pba_and_unmask_delivers_once"),
                r,
            );
        }

        let last = n - 1;
        let r = (|| {
            self.src.disable().map_err(|e| e.to_string())?;
            self.src.enable(1).map_err(|e| e.to_string())?;
            self.src.mask(0).map_err(|e| e.to_string())?;
            // Not enabled yet: the mask is recorded and applied on growth.
            self.src.mask(last).map_err(|e| e.to_string())?;
            for c in 2..=n {
                self.src.grow(c).map_err(|e| format!("grow({c}): {e}"))?;
            }
            self.masked_then_delivered_once(0)?;
            self.masked_then_delivered_once(last)
        })();
        self.check("mask_survives_growing_the_vector_set", r);

        let r = (|| {
            self.src.mask(1).map_err(|e| e.to_string())?;
            self.src.reassign(0).map_err(|e| e.to_string())?;
            self.masked_then_delivered_once(1)?;
            self.raise_expect_only(0)
        })();
        self.check("mask_survives_set_irqs_on_another_vector", r);

        let r = (|| {
            self.src.mask(1).map_err(|e| e.to_string())?;
            self.src.reassign(1).map_err(|e| e.to_string())?;
            self.masked_then_delivered_once(1)
        })();
        self.check("mask_survives_set_irqs_on_the_masked_vector", r);

        let r = (|| {
            self.src.mask(last).map_err(|e| e.to_string())?;
            self.src.disable().map_err(|e| e.to_string())?;
            self.src.enable(n).map_err(|e| e.to_string())?;
            self.masked_then_delivered_once(last)?;
            self.all_enabled_work()
        })();
        self.check("mask_survives_disable_and_reenable", r);

        let r = (|| {
            self.src.mask(0).map_err(|e| e.to_string())?;
            self.src.disable().map_err(|e| e.to_string())?;
            self.src.enable(1).map_err(|e| e.to_string())?;
            self.src.grow_by_reenable(n).map_err(|e| e.to_string())?;
            self.masked_then_delivered_once(0)
        })();
        self.check("mask_survives_noresize_style_regrow", r);

        self.timing();

        let r = (|| {
            self.src.unmap_table();
            if self.src.features().maskable {
                return Err("maskable still reported after unmap_table".into());
            }
            match self.src.mask(0) {
                Err(Error::MaskUnsupported { vector: 0 }) => {}
                other => return Err(format!("mask after unmap_table: {other:?}")),
            }
            // The PBA stays readable by pread.
            self.src
                .pending(0)
                .map_err(|e| format!("pread PBA fallback: {e}"))?;
            if !self.src.map_table() || !self.src.features().maskable {
                return Err(format!(
                    "map_table failed: {:?}",
                    self.src.unmapped_reason()
                ));
            }
            self.src.mask(0).map_err(|e| e.to_string())?;
            self.masked_then_delivered_once(0)
        })();
        self.check("unmap_table_falls_back_and_map_table_restores", r);
    }

    /// Mean physical mask+unmask pair against mean one-vector SET_IRQS.
    fn timing(&mut self) {
        let n = self.count();
        let r = (|| {
            if self.src.enabled_count() != n {
                self.src.enable(n).map_err(|e| e.to_string())?;
            }
            const PAIRS: u32 = 2000;
            const SET_IRQS: u32 = 200;
            let t = Instant::now();
            for i in 0..PAIRS {
                let v = (i % u32::from(n)) as u16;
                self.src.mask(v).map_err(|e| e.to_string())?;
                self.src.unmask(v).map_err(|e| e.to_string())?;
            }
            let pair = t.elapsed() / PAIRS;
            let t = Instant::now();
            for i in 0..SET_IRQS {
                self.src
                    .reassign((i % u32::from(n)) as u16)
                    .map_err(|e| e.to_string())?;
            }
            let set_irqs = t.elapsed() / SET_IRQS;
            println!(
                "TIMING {:?}: mask+unmask pair {:.2} us, one-vector SET_IRQS {:.2} us, ratio SET_IRQS/pair {:.1}",
                self.nic,
                pair.as_secs_f64() * 1e6,
                set_irqs.as_secs_f64() * 1e6,
                set_irqs.as_secs_f64() / pair.as_secs_f64().max(1e-12)
            );
            self.drain_all()
        })();
        self.check("timing_mask_pair_vs_set_irqs", r);
    }

    fn enable_bus_master(&self) -> CheckResult {
        let mut cmd = [0u8; 2];
        self.src
            .region_read(CONFIG, PCI_COMMAND, &mut cmd)
            .map_err(|e| e.to_string())?;
        let value = u16::from_le_bytes(cmd) | PCI_COMMAND_MASTER | PCI_COMMAND_MEMORY;
        self.src
            .region_write(CONFIG, PCI_COMMAND, &value.to_le_bytes())
            .map_err(|e| e.to_string())?;
        self.src
            .region_read(CONFIG, PCI_COMMAND, &mut cmd)
            .map_err(|e| e.to_string())?;
        if u16::from_le_bytes(cmd) & PCI_COMMAND_MASTER == 0 {
            return Err(format!("PCI_COMMAND reads {:#x}", u16::from_le_bytes(cmd)));
        }
        Ok(())
    }
}

fn run_device(sysfs: &Path) -> (u32, u32) {
    let nic = match Nic::identify(sysfs) {
        Ok(nic) => nic,
        Err(e) => {
            println!("FAIL identify_device: {e}");
            return (0, 1);
        }
    };
    let src = match VfioMsixSource::open(sysfs) {
        Ok(src) => {
            println!("PASS open_{:?}", nic);
            src
        }
        Err(e) => {
            println!("FAIL open_{nic:?}: {e}");
            return (0, 1);
        }
    };
    let mut h = Harness {
        nic,
        src,
        passed: 1,
        failed: 0,
    };
    h.run();
    (h.passed, h.failed)
}

fn main() -> ExitCode {
    let devices: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if devices.is_empty() {
        eprintln!("usage: vfio-vm-test /sys/bus/pci/devices/BDF...");
        return ExitCode::from(2);
    }
    let (mut passed, mut failed) = (0, 0);
    for dev in &devices {
        let (p, f) = run_device(dev);
        passed += p;
        failed += f;
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
