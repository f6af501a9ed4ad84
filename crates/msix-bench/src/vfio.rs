//! `msix-bench --vfio BDF`: the end-to-end checks of `msix-hardware` on a
//! real assigned device, ours under `fast`, `strict` and `trap` with and
//! without source masking and under the default, `auto+srcmask` (7 runs),
//! then the QEMU-like and crosvm-like handlers of the same device,
//! printed as a table and lines or JSON. See docs/hardware.md.

use std::path::PathBuf;
use std::time::Instant;

use msix_accel::{Policy, DEFAULT_POLICY};

use msix_hardware::checks::{self, RunResult};
use msix_hardware::device::{self, AssignedDevice};
use msix_hardware::peers::{PeerKind, PeerRig};
use msix_hardware::report::HardwareReport;

/// `msix-bench --vfio` usage.
pub const HELP: &str = "\
msix-bench --vfio BDF [--json]

Runs the end-to-end checks on a PCI device bound to vfio-pci (root, /dev/kvm,
/dev/vfio): the device's own MSI-X vectors through the kernel VFIO source and
the accelerator into a real KVM guest, under fast, strict and trap, each with
and without source masking, and under the default (auto, which measures the
host and runs fast or strict) with it; then the same checks on QEMU-like and
crosvm-like handlers of the same device, and the cost of a Linux mask cycle
of each, side by side. See docs/hardware.md.

EXIT STATUS: 0 all checks passed; 1 a check failed (ours or a peer's); 2 bad usage, or the
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
                    device::check_pci_address(bdf)?;
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

/// Every run: each mechanism, without and with source masking, then the
/// library's default with source masking (`auto+srcmask`) when it is not
/// one of those.
pub fn runs() -> Vec<(Policy, bool)> {
    let mut runs: Vec<(Policy, bool)> = Policy::ALL
        .iter()
        .flat_map(|&p| [(p, false), (p, true)])
        .collect();
    if !runs.contains(&(DEFAULT_POLICY, true)) {
        runs.push((DEFAULT_POLICY, true));
    }
    runs
}

/// Runs `msix-bench --vfio ...`; returns the exit code.
pub fn run_cli(args: &[String]) -> i32 {
    let options = match crate::cli::prepare(args, HELP, Options::parse) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let device = match AssignedDevice::open(&options.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("msix-bench: --vfio {}: {e}", options.device.display());
            return 2;
        }
    };
    let start = Instant::now();
    let results: Vec<RunResult> = runs()
        .into_iter()
        .map(|(policy, masking)| checks::run(&device, policy, masking))
        .collect();
    let peers: Vec<RunResult> = PeerKind::ALL
        .into_iter()
        .map(|kind| match PeerRig::new(&device, kind) {
            Ok(rig) => checks::run_on(&device, &rig, kind.name().to_string(), false, true),
            Err(e) => checks::failed_setup(kind.name().to_string(), false, true, &e),
        })
        .collect();
    let report = HardwareReport::new(&device, results, peers, start.elapsed().as_secs_f64());
    if options.json {
        if !crate::json::print_json("msix-bench", &report) {
            return 1;
        }
    } else {
        print!("{}", report.table());
        println!();
        print!("{}", report.lines());
        if report.skipped > 0 {
            println!(
                "end-to-end: {} skipped (nothing proven): {}",
                report.skipped,
                checks::NO_TRIGGER
            );
        }
        println!(
            "peers: {} passed, {} failed",
            report.peers_passed, report.peers_failed
        );
        println!(
            "end-to-end: {} passed, {} failed",
            report.passed, report.failed
        );
    }
    // A failing peer check fails the run: the comparison with a broken
    // peer handler would mean nothing.
    if report.failed == 0 && report.passed > 0 && report.peers_failed == 0 {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn vfio_options_take_a_device_and_json() {
        let o = Options::parse(&args(&["--json", "--vfio", "0000:01:00.0"])).unwrap();
        assert_eq!(o.device, PathBuf::from("0000:01:00.0"));
        assert!(o.json);
    }

    #[test]
    fn vfio_options_refuse_a_missing_device_and_unknown_flags() {
        assert!(Options::parse(&args(&["--vfio"]))
            .unwrap_err()
            .contains("needs a device"));
        assert!(
            Options::parse(&args(&["--vfio", "0000:01:00.0", "--quick"]))
                .unwrap_err()
                .contains("unknown argument")
        );
    }

    #[test]
    fn vfio_takes_a_pci_address_or_a_sysfs_path_ending_in_one() {
        for good in [
            "0000:01:00.0",
            "abcd:ff:1f.7",
            "/sys/bus/pci/devices/0000:00:03.0",
        ] {
            assert_eq!(device::check_pci_address(good), Ok(()), "{good}");
        }
        for bad in [
            "nothing",
            "",
            "01:00.0",
            "0000:01:20.0",
            "0000:01:00.8",
            "0000:01:00:0",
            "0000.01:00:0",
            "0000:0g:00.0",
            "+000:01:00.0",
            "/sys/bus/pci/devices",
        ] {
            let e = device::check_pci_address(bad).unwrap_err();
            assert!(e.contains("not a PCI address"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_mechanism_runs_without_and_with_source_masking_and_the_default_last() {
        let r = runs();
        assert_eq!(r.len(), 7);
        for p in Policy::ALL {
            assert!(r.contains(&(p, false)) && r.contains(&(p, true)));
        }
        assert_eq!(r.last(), Some(&(Policy::Auto, true)));
    }
}
