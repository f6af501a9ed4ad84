//! Checks on a real assigned device (`msix-bench --vfio BDF`): the kernel
//! VFIO source under our accelerator, driving a real KVM guest, with the
//! device's own vectors raised through its registers ([`nic`], the one
//! place that knows device registers). See docs/hardware.md.

pub mod checks;
pub mod counted_source;
pub mod cycle;
pub mod device;
pub mod nic;
pub mod regs;
pub mod rig;

use std::path::PathBuf;

use msix_accel::Policy;

use crate::bench::sys;
use checks::{Outcome, RunResult};
use device::AssignedDevice;

/// `msix-bench --vfio` usage.
pub const HELP: &str = "\
msix-bench --vfio BDF [--json]

Runs the end-to-end checks on a PCI device bound to vfio-pci (root, /dev/kvm,
/dev/vfio): the device's own MSI-X vectors through the kernel VFIO source and
the accelerator into a real KVM guest, under fast, strict and trap, each with
and without source masking. See docs/hardware.md.

EXIT STATUS: 0 all checks passed; 1 a check failed; 2 bad usage, or the
device, /dev/kvm or VFIO cannot be opened.
";

/// What `--vfio` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The device (BDF or sysfs path).
    pub device: PathBuf,
    /// Print JSON instead of the lines and table.
    pub json: bool,
}

impl Options {
    /// Parses the arguments (which contain `--vfio BDF`).
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut device = None;
        let mut json = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--vfio" => {
                    let bdf = it.next().ok_or("--vfio needs a device (BDF)")?;
                    device = Some(PathBuf::from(bdf));
                }
                "--json" => json = true,
                other => {
                    return Err(format!(
                        "--vfio: unknown argument {other:?} (see --vfio --help)"
                    ))
                }
            }
        }
        Ok(Options {
            device: device.ok_or("--vfio needs a device (BDF)")?,
            json,
        })
    }
}

/// Every run: each policy, without and with source masking.
pub fn runs() -> Vec<(Policy, bool)> {
    Policy::ALL
        .iter()
        .flat_map(|&p| [(p, false), (p, true)])
        .collect()
}

/// Runs `msix-bench --vfio ...`; returns the exit code.
pub fn run_cli(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{HELP}");
        return 0;
    }
    let options = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("msix-bench: {e}");
            return 2;
        }
    };
    if let Err(e) = sys::check_kvm() {
        eprintln!("msix-bench: {e}");
        return 2;
    }
    let device = match AssignedDevice::open(&options.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("msix-bench: --vfio {}: {e}", options.device.display());
            return 2;
        }
    };
    let family = device.family().map_or("unknown family", |f| f.name());
    let results: Vec<RunResult> = runs()
        .into_iter()
        .map(|(policy, masking)| checks::run(&device, policy, masking))
        .collect();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for r in &results {
        for c in &r.checks {
            match &c.outcome {
                Outcome::Pass => {
                    passed += 1;
                    println!("PASS {} {family} {}: {}", device.bdf(), r.name(), c.name);
                }
                Outcome::Fail(why) => {
                    failed += 1;
                    println!(
                        "FAIL {} {family} {}: {}: {why}",
                        device.bdf(),
                        r.name(),
                        c.name
                    );
                }
                Outcome::Skipped(why) => {
                    skipped += 1;
                    println!(
                        "SKIP {} {family} {}: {}: {why}",
                        device.bdf(),
                        r.name(),
                        c.name
                    );
                }
            }
        }
    }
    if skipped > 0 {
        println!("end-to-end: {skipped} skipped");
    }
    println!("end-to-end: {passed} passed, {failed} failed");
    if failed == 0 && passed > 0 {
        0
    } else {
        1
    }
}
