//! `msix-bench scenario`: its options, reading every file before anything
//! runs, and the PASS/FAIL lines or `--json` output.

use std::path::Path;

use msix_accel::Policy;

use msix_conformance::{load, run, skip_reason, Outcome};

use msix_hardware::device::AssignedDevice;
use msix_hardware::scenario_rig;

const SEE_HELP: &str = "see msix-bench scenario --help";

/// `msix-bench scenario --help` (and `msix-bench help scenario`).
pub const HELP: &str = "\
usage: msix-bench scenario [--vfio BDF] [--policy fast|strict|trap] [--json] FILE...

Runs each scenario file (format: docs/scenarios.md) in a fresh real KVM
guest with its accelerated MSI-X devices (one unless it says `devices N`)
on software sources, under each policy the file lists (or only under --policy), and prints one PASS or FAIL
line per file and policy, then `N passed, N failed`.

With --vfio BDF, the device is the PCI device BDF bound to vfio-pci (root):
its own vectors through kernel VFIO, `device fire` raising them through
its registers (docs/hardware.md). A file the device cannot run (more
vectors or devices than it has, a storm, source masking it lacks, ...)
prints `SKIP FILE [POLICY SOURCE]: reason` per policy, and the last line
then reads `N passed, N failed, N skipped`.

OPTIONS:
    --vfio BDF   run on the real device BDF (0000:01:00.0 or a sysfs path)
    --policy P   run every file under P only (fast, strict or trap)
    --json       print a JSON array, one object per file and policy run
    -h, --help   this text

Every file is read and parsed before anything runs: an error is one line
`FILE:LINE: what is wrong` (or `FILE: what is wrong` for the whole file,
e.g. unreadable or without steps).

EXIT STATUS:
    0 every expectation held; 1 an expectation failed, or (--vfio) every
    file was skipped; 2 bad usage, a file that does not parse, /dev/kvm
    missing or not accessible, or (--vfio) the device or VFIO cannot be
    opened.
";

/// What `msix-bench scenario` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Args {
    policy: Option<Policy>,
    json: bool,
    /// The real device to run on, if any.
    vfio: Option<String>,
    files: Vec<String>,
}

/// Parses the scenario runner's arguments; `Ok(None)` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        policy: None,
        json: false,
        vfio: None,
        files: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => parsed.json = true,
            "--policy" => {
                let p = it
                    .next()
                    .ok_or(format!("--policy needs a policy ({SEE_HELP})"))?;
                parsed.policy = Some(p.parse::<Policy>().map_err(|e| e.to_string())?);
            }
            "--vfio" => {
                let bdf = it
                    .next()
                    .ok_or(format!("--vfio needs a device (BDF) ({SEE_HELP})"))?;
                msix_hardware::device::check_pci_address(bdf)?;
                parsed.vfio = Some(bdf.clone());
            }
            "-h" | "--help" => return Ok(None),
            f if f.starts_with('-') => return Err(format!("unknown option {f} ({SEE_HELP})")),
            f => parsed.files.push(f.to_string()),
        }
    }
    if parsed.files.is_empty() {
        return Err(format!("no FILE given ({SEE_HELP})"));
    }
    Ok(Some(parsed))
}

/// `msix-bench scenario ...`: returns the process exit code (0 only when
/// every expectation of every file held, and with --vfio something ran; 2
/// for usage or parse errors, no usable /dev/kvm, or a device that cannot
/// be opened, each reported in one line before anything runs).
pub fn run_cli(args: &[String]) -> i32 {
    let args = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return 0;
        }
        Err(e) => {
            eprintln!("msix-bench scenario: {e}");
            return 2;
        }
    };
    let scenarios = match load(&args.files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let device = match &args.vfio {
        None => None,
        Some(bdf) => match AssignedDevice::open(Path::new(bdf)) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("msix-bench scenario: --vfio {bdf}: {e}");
                return 2;
            }
        },
    };
    if let Err(e) = msix_rig::sys::check_kvm() {
        eprintln!("msix-bench scenario: {e}");
        return 2;
    }
    let offer = device.as_ref().map(scenario_rig::offer);
    if let (Some(offer), false) = (&offer, args.json) {
        println!(
            "INFO {}: {} vectors, {} raisable, source masking {}",
            offer.name,
            offer.table_size,
            offer.raisable.as_ref().map_or(0, |n| *n),
            offer
                .unmaskable
                .as_deref()
                .map_or("available".into(), |why| format!("unavailable ({why})"))
        );
    }
    let mut outcomes = Vec::new();
    for s in &scenarios {
        let policies = args.policy.map_or_else(|| s.policies.clone(), |p| vec![p]);
        let skip = offer.as_ref().and_then(|o| skip_reason(s, o));
        for p in policies {
            let o = match (&device, &skip) {
                (_, Some(why)) => Outcome::skipped(s, p, why.clone()),
                (Some(d), None) => scenario_rig::run(d, s, p),
                (None, None) => run(s, p),
            };
            if !args.json {
                println!("{}", line(&o));
            }
            outcomes.push(o);
        }
    }
    let skipped = outcomes.iter().filter(|o| o.skipped.is_some()).count();
    let failed = outcomes
        .iter()
        .filter(|o| !o.passed && o.skipped.is_none())
        .count();
    let passed = outcomes.len() - failed - skipped;
    if args.json {
        if !crate::json::print_json("msix-bench scenario", &outcomes) {
            return 1;
        }
    } else {
        println!("{}", summary(passed, failed, skipped));
    }
    i32::from(failed > 0 || passed == 0)
}

/// The PASS, FAIL or SKIP line of one run.
fn line(o: &Outcome) -> String {
    match (&o.skipped, &o.failure) {
        (Some(why), _) => format!("SKIP {} [{} {}]: {why}", o.file, o.policy, o.source),
        (None, None) => format!(
            "PASS {} [{} {}] {} steps, {} exits, {} ms",
            o.file, o.policy, o.source, o.steps_run, o.exits, o.millis
        ),
        (None, Some(f)) => format!("FAIL {f} [{} {}]", o.policy, o.source),
    }
}

/// The last line: `N passed, M failed`, with `, K skipped` when some were.
fn summary(passed: usize, failed: usize, skipped: usize) -> String {
    if skipped == 0 {
        format!("{passed} passed, {failed} failed")
    } else {
        format!("{passed} passed, {failed} failed, {skipped} skipped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_arguments_are_checked_before_any_file_is_read() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&["--help", "x.scn"])), Ok(None));
        let parsed = parse_args(&args(&["--policy", "trap", "--json", "a.scn"]))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.policy, Some(Policy::Trap));
        assert!(parsed.json);
        assert_eq!(parsed.files, vec!["a.scn".to_string()]);
        assert!(parse_args(&args(&[])).unwrap_err().contains("no FILE"));
        assert!(parse_args(&args(&["--policy"]))
            .unwrap_err()
            .contains("needs a policy"));
        assert!(parse_args(&args(&["--policy", "fastest", "a.scn"])).is_err());
        assert!(parse_args(&args(&["--frob", "a.scn"]))
            .unwrap_err()
            .contains("unknown option --frob"));
    }

    #[test]
    fn vfio_takes_a_device_and_skips_are_counted_only_when_there_are_some() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let parsed = parse_args(&args(&["--vfio", "0000:00:03.0", "a.scn"]))
            .unwrap()
            .unwrap();
        assert_eq!(parsed.vfio.as_deref(), Some("0000:00:03.0"));
        assert!(parse_args(&args(&["a.scn", "--vfio"]))
            .unwrap_err()
            .contains("--vfio needs a device"));
        assert_eq!(summary(3, 0, 0), "3 passed, 0 failed");
        assert_eq!(summary(3, 1, 2), "3 passed, 1 failed, 2 skipped");
    }
}
