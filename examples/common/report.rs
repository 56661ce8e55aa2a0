//! Writing a bench's JSON report (include with `#[path]`, beside `fail.rs`).

/// Writes `report` as pretty JSON to `path` (whole or not at all), creating its folder, and
/// says so; exits naming `--out` and the reason when it cannot.
pub fn write_json(path: &str, report: &serde_json::Value) {
    let text = serde_json::to_string_pretty(report).expect("a JSON value serialises");
    let written = std::path::Path::new(path)
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            burn_sparse_video::dit::train::write_atomically(path.as_ref(), |file| {
                file.write_all(text.as_bytes())
            })
        });
    if let Err(e) = written {
        super::fail::fail(format!("--out {path}: {e}"));
    }
    println!("wrote {path}");
}
