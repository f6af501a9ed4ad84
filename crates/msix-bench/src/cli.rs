//! The `msix-bench` command line: which subcommand runs, `help` and
//! `--version`. Each subcommand parses and checks its own arguments before
//! any work starts; the two that measure on this host with flags alone (the
//! bench and `--vfio`) share that front matter (`prepare`).

use crate::{bench, conformance, scenario, stress};

/// `msix-bench --version`.
pub const VERSION: &str = concat!("msix-bench ", env!("CARGO_PKG_VERSION"));

/// Runs `msix-bench` with `args` (the arguments after the program name);
/// returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("scenario") => scenario::run_cli(&args[1..]),
        Some("conformance") => conformance::run_cli(&args[1..]),
        Some("stress") => stress::run_cli(&args[1..]),
        Some("help") => help(&args[1..]),
        Some("--version" | "-V") if args.len() == 1 => {
            println!("{VERSION}");
            0
        }
        _ if args.iter().any(|a| a == "--vfio") => crate::vfio::run_cli(args),
        _ => bench::run_cli(args),
    }
}

/// The front matter of the bench and of `--vfio`, in the order a user
/// meets its failures, each reported in one line on stderr before anything
/// is measured: `-h` or `--help` anywhere prints `help` (exit code 0);
/// `parse` turns the flags into options and checks what it can of them
/// (exit code 2 on its error); /dev/kvm must open read-write (exit code 2).
/// Ok with the options when the run may start, else the exit code.
pub(crate) fn prepare<O>(
    args: &[String],
    help: &str,
    parse: impl FnOnce(&[String]) -> Result<O, String>,
) -> Result<O, i32> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{help}");
        return Err(0);
    }
    let options = parse(args).map_err(|e| {
        eprintln!("msix-bench: {e}");
        2
    })?;
    if let Err(e) = msix_rig::sys::check_kvm() {
        eprintln!("msix-bench: {e}");
        return Err(2);
    }
    Ok(options)
}

/// `msix-bench help [SUBCOMMAND]`.
fn help(args: &[String]) -> i32 {
    match args {
        [] => {
            print!("{}", bench::HELP);
            0
        }
        [topic] if topic == "scenario" => {
            print!("{}", scenario::HELP);
            0
        }
        [topic] if topic == "conformance" => {
            print!("{}", conformance::HELP);
            0
        }
        [topic] if topic == "stress" => {
            print!("{}", stress::HELP);
            0
        }
        [topic, ..] => {
            eprintln!("msix-bench help: no help on {topic:?} (try `msix-bench help`)");
            2
        }
    }
}
