//! How the examples end on a user's error (include with `#[path]`).

/// Prints `error: {message}` on standard error and exits with status 2.
pub fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}
