//! The `msix-bench` command line: which subcommand runs, `help` and
//! `--version`. Each subcommand parses and checks its own arguments before
//! any work starts.

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
