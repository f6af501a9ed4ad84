//! `msix-bench conformance`: the scenario files against our accelerator
//! under every policy, with and without source masking, and against the
//! four peer VMM models, as a matrix of files x targets.

use msix_conformance::{load, run_matrix, Candidate, Ours};
use msix_peers::PeerModel;

/// `msix-bench conformance --help` (and `msix-bench help conformance`).
pub const HELP: &str = "\
usage: msix-bench conformance [--json] FILE...

Runs each scenario file (format: docs/scenarios.md) in a fresh real KVM
guest on every target: our accelerator under fast, strict and trap, each
with a plain and with a source-masking software source (fast-maskable,
...), then the models of QEMU, cloud-hypervisor, Dragonball and crosvm
(qemu-like, ...). Prints a table of files x targets, each cell pass, FAIL
or skip, then one line per failure (its first failing line and why) and
per skip (why the target cannot hold the file), then the totals.

Exit counts (`expect exits`) are held only on our accelerator under the
policies and source the file names, and `expect event` only where the
target reports events: elsewhere those steps are skipped with the reason
(the cell reads pass* when the rest held). docs/conformance.md records
the matrix of tests/scenarios/*.scn and explains each peer failure.

OPTIONS:
    --json       print {\"targets\": [...], \"files\": [{\"file\": ...,
                 \"results\": {TARGET: \"pass\"|\"fail\"|\"skipped\"},
                 \"detail\": {TARGET: outcome}}]}
    -h, --help   this text

Every file is read and parsed before anything runs.

EXIT STATUS:
    0 every file passed (or skipped steps only) on each of our targets,
    whatever the peers did; 1 one of our targets failed a file; 2 bad
    usage, a file that does not parse, /dev/kvm missing or not accessible.
";

/// Every target of the matrix, in column order: ours, then the peers.
pub fn candidates() -> Vec<Box<dyn Candidate>> {
    let mut all: Vec<Box<dyn Candidate>> = Ours::all()
        .into_iter()
        .map(|o| Box::new(o) as Box<dyn Candidate>)
        .collect();
    all.extend(
        PeerModel::ALL
            .into_iter()
            .map(|m| Box::new(m) as Box<dyn Candidate>),
    );
    all
}

/// Parses the arguments: `Ok(None)` for `--help`, else (json, files).
fn parse_args(args: &[String]) -> Result<Option<(bool, Vec<String>)>, String> {
    let mut json = false;
    let mut files = Vec::new();
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => return Ok(None),
            s if s.starts_with('-') => {
                return Err(format!(
                    "unknown option {s} (see msix-bench conformance --help)"
                ))
            }
            f => files.push(f.to_string()),
        }
    }
    if files.is_empty() {
        return Err("no FILE given (see msix-bench conformance --help)".into());
    }
    Ok(Some((json, files)))
}

/// `msix-bench conformance ...`: returns the process exit code.
pub fn run_cli(args: &[String]) -> i32 {
    let (json, files) = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return 0;
        }
        Err(e) => {
            eprintln!("msix-bench conformance: {e}");
            return 2;
        }
    };
    let scenarios = match load(&files) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    if let Err(e) = msix_rig::sys::check_kvm() {
        eprintln!("msix-bench conformance: {e}");
        return 2;
    }
    // Progress on stderr, one line per file once its row is done, so that
    // a log shows where a run of minutes is.
    let candidates = candidates();
    let start = std::time::Instant::now();
    let mut runs = 0;
    let matrix = run_matrix(&scenarios, &candidates, |o| {
        runs += 1;
        if runs % candidates.len() == 0 {
            eprintln!(
                "msix-bench conformance: {:>6.1} s: {}/{} {}",
                start.elapsed().as_secs_f64(),
                runs / candidates.len(),
                scenarios.len(),
                o.file
            );
        }
    });
    let ours: Vec<String> = Ours::all().iter().map(|o| o.name()).collect();
    let ours_failed = matrix.files.iter().any(|f| {
        ours.iter()
            .any(|t| f.results.get(t) == Some(&msix_conformance::Verdict::Fail))
    });
    if json {
        if !crate::json::print_json("msix-bench conformance", &matrix) {
            return 1;
        }
    } else {
        print!("{}", matrix.table());
    }
    i32::from(ours_failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_checked_before_any_file_is_read() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&["--help", "x.scn"])), Ok(None));
        assert_eq!(
            parse_args(&args(&["--json", "a.scn", "b.scn"])),
            Ok(Some((true, vec!["a.scn".into(), "b.scn".into()])))
        );
        assert!(parse_args(&args(&[])).unwrap_err().contains("no FILE"));
        assert!(parse_args(&args(&["--frob", "a.scn"]))
            .unwrap_err()
            .contains("unknown option --frob"));
    }

    #[test]
    fn the_columns_are_ours_then_the_four_peers() {
        let names: Vec<String> = candidates().iter().map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "fast",
                "strict",
                "trap",
                "fast-maskable",
                "strict-maskable",
                "trap-maskable",
                "qemu-like",
                "cloud-hypervisor-like",
                "dragonball-like",
                "crosvm-like"
            ]
        );
    }
}
