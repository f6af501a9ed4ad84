//! `msix-bench`: the side-by-side MSI-X benchmark (no subcommand; see
//! `--help`) and the scenario runner (`msix-bench scenario FILE...`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(msix_bench::cli::run(&args));
}
