//! Runs inside a QEMU guest: checks `vfio_vectors::kernel::VfioMsixSource`
//! against a real vfio-pci device (QEMU's emulated igb or e1000e behind an
//! emulated IOMMU).
//!
//! Usage: `vfio-vm-test /sys/bus/pci/devices/BDF` (the device bound to
//! vfio-pci). The NIC is made to raise each MSI-X vector on demand through
//! its BAR0 registers (`msix_hardware::nic`, the one place that knows
//! device registers); every check prints `PASS name` or
//! `FAIL name: why`, the last line is `N passed, M failed`, and the exit
//! status is non-zero when anything failed. Every wait is bounded and fails
//! its check when it runs out.
//!
//! "Nothing else was signalled" is proven, never waited for: the test pins
//! itself to CPU 0 and the guest kernel runs with `irqaffinity=0`, so every
//! device interrupt is handled on the CPU the test runs on (a check at the
//! end confirms it from /proc/interrupts). The emulated NIC sends a message
//! synchronously with the register write that raises it, and a CPU takes every interrupt pending in its local APIC before it
//! returns to user mode. So device messages reach their eventfds in the
//! order the device sent them, and once the test has seen the eventfd of a
//! *sentinel* vector raised after some event, every message the device sent
//! before the sentinel has been signalled ([`Harness::settle`]). A masked
//! raise is proven held by the device's own Pending Bit Array.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use msix_hardware::nic::{Nic, PciIds};
use msix_hardware::regs::DeviceRegs;
use vfio_vectors::kernel::VfioMsixSource;
use vfio_vectors::{Error, MsixSource};
use vmm_sys_util::eventfd::EventFd;

/// Watchdog of every wait for a signal: reaching it fails the check. A
/// vector arrives within microseconds; the bound only stops a broken run.
/// Generous, because this guest runs under QEMU's TCG on a shared host,
/// which can leave the whole guest without a CPU for seconds; a passing
/// run never waits it out.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// The CPU the test runs on and every device interrupt is handled on (the
/// guest kernel boots with `irqaffinity=0`).
const TEST_CPU: usize = 0;

type CheckResult = Result<(), String>;

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
    sysfs: PathBuf,
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

    /// Has the NIC send `vector`'s message (see `Nic::raise`).
    fn raise(&self, vector: u16) -> CheckResult {
        self.nic.raise(vector).map_err(|e| e.to_string())
    }

    fn trigger(&self, v: u16) -> Result<&EventFd, String> {
        self.src.trigger(v).map_err(|e| e.to_string())
    }

    /// Waits (bounded) until `vector`'s eventfd is signalled and takes its
    /// count; fails when the watchdog runs out.
    fn wait_signal(&self, vector: u16) -> Result<u64, String> {
        let n = wait(self.trigger(vector)?, DELIVERY_TIMEOUT)?;
        if n == 0 {
            return Err(format!(
                "vector {vector}: no eventfd signal within {DELIVERY_TIMEOUT:?}"
            ));
        }
        Ok(n)
    }

    /// Whether the device has `vector` masked (Vector Control bit 0 of the
    /// mapped table; unknown, so assumed unmasked, when it is not mapped).
    fn device_masked(&self, vector: u16) -> bool {
        self.src
            .vector_control(vector)
            .is_some_and(|vc| vc & 1 != 0)
    }

    /// Proves that every message the device sent so far has reached its
    /// eventfd: raises a *sentinel*, an enabled vector the device has
    /// unmasked and not in `exclude`, and waits (bounded) for its eventfd.
    /// Device messages are signalled in the order they were sent (see the
    /// crate docs), so the earlier ones have been signalled by then. The
    /// sentinel's own eventfd is drained before and after; returns the
    /// sentinel, or None when no vector qualifies (then there is no other
    /// enabled vector that could have signalled).
    fn settle(&self, exclude: &[u16]) -> Result<Option<u16>, String> {
        let Some(sentinel) =
            (0..self.src.enabled_count()).find(|v| !exclude.contains(v) && !self.device_masked(*v))
        else {
            return Ok(None);
        };
        take(self.trigger(sentinel)?)?;
        self.raise(sentinel)?;
        self.wait_signal(sentinel)
            .map_err(|e| format!("sentinel {e}"))?;
        Ok(Some(sentinel))
    }

    /// Vectors other than `except` whose eventfds hold a count, as messages.
    fn signalled_except(&self, except: &[u16]) -> Vec<String> {
        (0..self.count())
            .filter(|v| !except.contains(v))
            .filter_map(|v| match self.trigger(v).and_then(take) {
                Ok(0) => None,
                Ok(n) => Some(format!("vector {v} signalled {n}")),
                Err(e) => Some(e),
            })
            .collect()
    }

    /// `vector` has signalled (>= 1) and no other vector has: after a
    /// sentinel proved every earlier message signalled, every other
    /// eventfd is still at 0.
    fn expect_only(&self, vector: u16) -> CheckResult {
        self.wait_signal(vector)?;
        let sentinel = self.settle(&[vector])?;
        let mut except = vec![vector];
        except.extend(sentinel);
        let others = self.signalled_except(&except);
        if others.is_empty() {
            Ok(())
        } else {
            Err(format!("raising {vector}: {}", others.join(", ")))
        }
    }

    /// Raises `vector` from a quiet start (every earlier message signalled
    /// and drained) and checks that only its eventfd is signalled.
    fn raise_expect_only(&self, vector: u16) -> CheckResult {
        self.settle(&[vector])?;
        self.drain_all()?;
        self.raise(vector)?;
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
    /// delivers exactly one signal and clears the PBA bit. "Signals
    /// nothing" is proven: the PBA bit shows the device held the message,
    /// and a sentinel raised afterwards shows nothing sent before it is
    /// still on its way.
    fn masked_then_delivered_once(&mut self, vector: u16) -> CheckResult {
        let vc = self.src.vector_control(vector).ok_or("table not mapped")?;
        if vc & 1 == 0 {
            return Err(format!(
                "vector {vector}: Vector Control {vc:#x} lost the mask bit"
            ));
        }
        // Quiet start: whatever was sent before (for instance messages the
        // device replayed when the host enabled MSI-X) is signalled now.
        self.settle(&[vector])?;
        self.drain_all()?;
        if self.src.pending(vector).map_err(|e| e.to_string())? {
            return Err(format!(
                "vector {vector}: PBA bit set before the raise (a stale pending message)"
            ));
        }
        self.raise(vector)?;
        // The emulated device latches synchronously with the write; the
        // bounded poll only guards against a device that does not.
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while !self.src.pending(vector).map_err(|e| e.to_string())? {
            if Instant::now() > deadline {
                return Err(format!("vector {vector}: PBA bit not set while masked"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.settle(&[vector])?;
        let leaked = take(self.trigger(vector)?)?;
        if leaked != 0 {
            return Err(format!("vector {vector}: signalled {leaked} while masked"));
        }
        self.src
            .unmask(vector)
            .map_err(|e| format!("unmask: {e}"))?;
        let n = self.wait_signal(vector)?;
        self.settle(&[vector])?;
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
            "INFO {}: {} vectors, irq flags {:#x}, dynamic {}, maskable {}, {:?}{}",
            self.nic.family().name(),
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
        let setup = self.nic.setup().map_err(|e| e.to_string());
        if !self.check("bus_master_and_nic_setup", setup) {
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

        // Disabled: nothing fires. There is no vector left to raise as a
        // sentinel, and none is needed: the host freed its IRQs at disable
        // (waiting for running handlers), so the eventfds are unwired and
        // nothing can signal them later; a message the device still sent
        // would have been handled on this CPU before the raise returned.
        let r = (|| {
            self.src.disable().map_err(|e| e.to_string())?;
            self.drain_all()?;
            for v in 0..n {
                self.raise(v)?;
            }
            let fired = self.signalled_except(&[]);
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
        let r = self.interrupts_handled_on_test_cpu();
        self.check("device_interrupts_handled_on_the_test_cpu_only", r);
        let r = self.src.disable().map_err(|e| e.to_string());
        self.check("final_disable", r);
    }

    fn mask_checks(&mut self) {
        let n = self.count();
        // Enabling replays what the device held while disabled (one message
        // per vector); settle signals them all before the first mask.
        let r = self
            .src
            .enable(n)
            .map_err(|e| e.to_string())
            .and_then(|()| self.settle(&[]).map(|_| ()))
            .and_then(|()| self.drain_all());
        if let Err(e) = r {
            self.check("enable_for_mask_checks", Err(e));
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
                "TIMING {}: mask+unmask pair {:.2} us, one-vector SET_IRQS {:.2} us, ratio SET_IRQS/pair {:.1}",
                self.nic.family().name(),
                pair.as_secs_f64() * 1e6,
                set_irqs.as_secs_f64() * 1e6,
                set_irqs.as_secs_f64() / pair.as_secs_f64().max(1e-12)
            );
            self.drain_all()
        })();
        self.check("timing_mask_pair_vs_set_irqs", r);
    }

    /// The ordering argument of [`Harness::settle`] holds: every interrupt
    /// of this device's vectors (as /proc/interrupts counts them for the
    /// IRQs allocated now) was handled on [`TEST_CPU`], and some were.
    fn interrupts_handled_on_test_cpu(&self) -> CheckResult {
        let bdf = self
            .sysfs
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("no BDF in the sysfs path")?;
        let text = std::fs::read_to_string("/proc/interrupts")
            .map_err(|e| format!("/proc/interrupts: {e}"))?;
        let mut lines = text.lines();
        let cpus = lines.next().map_or(0, |h| h.split_whitespace().count());
        let mut per_cpu = vec![0u64; cpus];
        for line in lines.filter(|l| l.contains("vfio-msix") && l.contains(bdf)) {
            for (cpu, count) in line.split_whitespace().skip(1).take(cpus).enumerate() {
                per_cpu[cpu] += count.parse::<u64>().unwrap_or(0);
            }
        }
        let elsewhere: u64 = per_cpu
            .iter()
            .enumerate()
            .filter(|(cpu, _)| *cpu != TEST_CPU)
            .map(|(_, n)| n)
            .sum();
        if per_cpu.get(TEST_CPU).copied().unwrap_or(0) == 0 || elsewhere != 0 {
            return Err(format!(
                "interrupts of {bdf} per CPU {per_cpu:?}: the guest kernel must run with irqaffinity={TEST_CPU}"
            ));
        }
        println!("INFO {bdf}: interrupts per CPU {per_cpu:?}");
        Ok(())
    }
}

/// Runs this thread on `cpu` only, the CPU the guest kernel handles every
/// device interrupt on (see the crate docs for why the checks need it).
fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` is below CPU_SETSIZE
    // (the test uses CPU 0).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is valid for the call.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if ret != 0 {
        return Err(format!(
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn run_device(sysfs: &Path) -> (u32, u32) {
    let ids = match PciIds::read(sysfs) {
        Ok(ids) => ids,
        Err(e) => {
            println!("FAIL identify_device: {e}");
            return (0, 1);
        }
    };
    let Some(family) = ids.family() else {
        println!("FAIL identify_device: no known trigger for {ids}");
        return (0, 1);
    };
    let src = match VfioMsixSource::open(sysfs) {
        Ok(src) => {
            println!("PASS open_{}", family.name());
            src
        }
        Err(e) => {
            println!("FAIL open_{}: {e}", family.name());
            return (0, 1);
        }
    };
    let nic = match DeviceRegs::new(&src).and_then(|regs| Nic::new(family, &ids, regs)) {
        Ok(nic) => nic,
        Err(e) => {
            println!("FAIL device_registers: {e}");
            return (1, 1);
        }
    };
    println!(
        "INFO {} {ids}{}",
        family.name(),
        if nic.is_qemu_e1000e() {
            ": QEMU's e1000e model (raises held masked at the device, then a reset)"
        } else {
            ""
        }
    );
    let mut h = Harness {
        sysfs: sysfs.to_path_buf(),
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
    if let Err(e) = pin_to_cpu(TEST_CPU) {
        println!("FAIL pin_to_cpu_{TEST_CPU}: {e}");
        println!("0 passed, 1 failed");
        return ExitCode::FAILURE;
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
