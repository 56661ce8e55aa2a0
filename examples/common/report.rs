//! Writing a bench's JSON report (include with `#[path]`).

/// Writes `report` as pretty JSON to `path`, creating its folder, and says so; exits naming
/// `--out` and the reason when it cannot.
pub fn write_json(path: &str, report: &serde_json::Value) {
    let written = std::path::Path::new(path)
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::write(
                path,
                serde_json::to_string_pretty(report).expect("a JSON value serialises"),
            )
        });
    if let Err(e) = written {
        eprintln!("error: --out {path}: {e}");
        std::process::exit(2);
    }
    println!("wrote {path}");
}
