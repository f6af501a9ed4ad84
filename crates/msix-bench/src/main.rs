//! `msix-bench`: the side-by-side MSI-X benchmark (no subcommand; see
//! `--help`) and the scenario runner (`msix-bench scenario FILE...`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("scenario") => msix_bench::scenario::run_cli(&args[1..]),
        _ if args.iter().any(|a| a == "--vfio") => msix_bench::hardware::run_cli(&args),
        _ => msix_bench::bench::run_cli(&args),
    };
    std::process::exit(code);
}
