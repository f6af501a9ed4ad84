//! `msix-bench scenario`: its options, reading every file before anything
//! runs, and the PASS/FAIL lines or `--json` output.

use msix_accel::Policy;

use super::parse::parse;
use super::run::run;
use super::step::Scenario;

const SEE_HELP: &str = "see msix-bench scenario --help";

/// `msix-bench scenario --help` (and `msix-bench help scenario`).
pub const HELP: &str = "\
usage: msix-bench scenario [--policy fast|strict|trap] [--json] FILE...

Runs each scenario file (format: docs/scenarios.md) in a fresh real KVM
guest with its accelerated MSI-X devices (one unless it says `devices N`)
on software sources, under each policy the file lists (or only under --policy), and prints one PASS or FAIL
line per file and policy, then `N passed, N failed`.

OPTIONS:
    --policy P   run every file under P only (fast, strict or trap)
    --json       print a JSON array, one object per file and policy run
    -h, --help   this text

Every file is read and parsed before anything runs: an error is one line
`FILE:LINE: what is wrong` (or `FILE: what is wrong` for the whole file,
e.g. unreadable or without steps).

EXIT STATUS:
    0 every expectation held; 1 an expectation failed; 2 bad usage, a file
    that does not parse, or /dev/kvm missing or not accessible.
";

/// What `msix-bench scenario` was asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Args {
    policy: Option<Policy>,
    json: bool,
    files: Vec<String>,
}

/// Parses the scenario runner's arguments; `Ok(None)` for `--help`.
fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        policy: None,
        json: false,
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

/// Reads and parses every file; the first error, as one line.
fn load(files: &[String]) -> Result<Vec<Scenario>, String> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: cannot read: {e}"))?;
            parse(f, &text).map_err(|e| e.to_string())
        })
        .collect()
}

/// `msix-bench scenario ...`: returns the process exit code (0 only when
/// every expectation of every file held; 2 for usage or parse errors or no
/// usable /dev/kvm, each reported in one line before anything runs).
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
    if let Err(e) = crate::bench::sys::check_kvm() {
        eprintln!("msix-bench scenario: {e}");
        return 2;
    }
    let mut outcomes = Vec::new();
    for s in &scenarios {
        let policies = args.policy.map_or_else(|| s.policies.clone(), |p| vec![p]);
        for p in policies {
            let o = run(s, p);
            if !args.json {
                match &o.failure {
                    None => println!(
                        "PASS {} [{} {}] {} steps, {} exits, {} ms",
                        o.file, o.policy, o.source, o.steps_run, o.exits, o.millis
                    ),
                    Some(f) => println!("FAIL {f} [{} {}]", o.policy, o.source),
                }
            }
            outcomes.push(o);
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if args.json {
        match serde_json::to_string_pretty(&outcomes) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("msix-bench scenario: cannot encode JSON: {e}");
                return 1;
            }
        }
    } else {
        println!("{} passed, {} failed", outcomes.len() - failed, failed);
    }
    i32::from(failed > 0)
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
    fn an_unreadable_file_is_named_without_a_line() {
        let e = load(&["/nonexistent/x.scn".to_string()]).unwrap_err();
        assert!(e.starts_with("/nonexistent/x.scn: cannot read: "), "{e}");
    }
}
