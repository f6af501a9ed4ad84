//! The one way every subcommand prints its report as JSON.

/// Prints `value` as pretty JSON on stdout; on failure says why on stderr,
/// after `who` (the command's name), and returns false.
pub fn print_json<T: serde::Serialize>(who: &str, value: &T) -> bool {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            true
        }
        Err(e) => {
            eprintln!("{who}: cannot encode JSON: {e}");
            false
        }
    }
}
