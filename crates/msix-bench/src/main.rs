//! msix-bench: runs guest scenarios and the side-by-side policy benchmark.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("scenario") => msix_bench::scenario::run_cli(&args[1..]),
        _ => {
            eprintln!("usage: msix-bench scenario FILE...");
            2
        }
    };
    std::process::exit(code);
}
