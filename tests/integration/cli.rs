//! Every example binary on a table of bad arguments: each exits non-zero with a message
//! naming the argument or file at fault, and none panics. `--help` works everywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use burn_sparse_video::dit::train::{RunDir, RunMode, TrainConfig, Trainer};
use burn_sparse_video::dit::{AttentionKind, VideoDitConfig};

/// The example binaries cargo built beside this test (same profile and features).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("examples").join(name)
}

const EXAMPLES: [&str; 9] = [
    "video_dit",
    "long_video",
    "bench_attention",
    "bench_training",
    "bench_memory",
    "bench_sampling",
    "bench_long_video",
    "bench_context_parallel",
    "plan_context_parallel",
];

/// Runs `name args`, killing it after `limit`.
fn run(name: &str, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(example(name))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} (cargo test builds the examples): {e}",
                example(name).display()
            )
        });
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{name} {args:?} still running after {limit:?}: it took bad arguments as good\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A run folder holding the tiny preset's checkpoint (DSV attention, step 0).
fn tiny_checkpoint(dir: &Path) {
    let config =
        TrainConfig::tiny(VideoDitConfig::tiny().with_attention(AttentionKind::tiny_dsv()));
    Trainer::new(config, &Device::flex())
        .unwrap()
        .save_checkpoint(dir)
        .unwrap();
}

#[test]
fn every_example_names_bad_arguments_without_panicking() {
    let root = std::env::temp_dir().join(format!("cli-bad-args-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let run_dir = root.join("run");
    tiny_checkpoint(&run_dir);
    let locked = root.join("locked");
    let _owner = RunDir::open(&locked, RunMode::Fresh).unwrap();
    // The table's paths hold no spaces: arguments are split at them.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let blocker = root.join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let many_labels = vec!["circle:red"; 1025].join(",");

    // (example, arguments split at spaces, what the message must name)
    let (run_s, locked_s, empty_s) = (run_dir.display(), locked.display(), empty.display());
    let unwritable = blocker.join("run");
    let unwritable = unwritable.display();
    #[rustfmt::skip]
    let cases: Vec<(&str, String, &str)> = vec![
        ("video_dit", "train --stepz 3".into(), "--stepz"),
        ("video_dit", format!("train --out {empty_s} --steps 0"), "--steps"),
        ("video_dit", format!("train --out {empty_s} --batch 0"), "--batch"),
        ("video_dit", format!("train --out {empty_s} --replicas 0"), "--replicas"),
        ("video_dit", format!("train --out {empty_s} --lr=-1"), "--lr"),
        ("video_dit", format!("train --out {empty_s} --lr nan"), "--lr"),
        ("video_dit", "train --resume --overwrite".into(), "--overwrite"),
        ("video_dit", format!("train --out {run_s}"), "not empty"),
        ("video_dit", format!("train --out {locked_s}"), "in use by another run"),
        ("video_dit", format!("train --out {unwritable}"), "cannot write to"),
        ("video_dit", format!("train --out {empty_s} --resume"), "latest"),
        ("video_dit", format!("train --out {run_s} --resume --head-conv"), "`model.head_conv` differs"),
        ("video_dit", format!("sample --out {empty_s}"), "train first"),
        ("video_dit", format!("sample --out {run_s} --labels circle:mauve"), "--labels"),
        ("video_dit", format!("sample --out {run_s} --labels {many_labels}"), "at most 1024"),
        ("video_dit", format!("sample --out {run_s} --attention dense"), "--attention dense contradicts"),
        ("video_dit", format!("sample --out {run_s} --data fashion"), "--data"),
        ("video_dit", format!("eval --out {run_s} --clips 0"), "--clips"),
        ("video_dit", format!("eval --out {run_s} --clips 100000"), "--clips"),
        ("video_dit", format!("eval --out {run_s} --sampling-steps 0"), "steps"),
        ("video_dit", format!("eval --out {run_s} --guidance inf"), "guidance"),
        ("long_video", format!("--out {empty_s}"), "checkpoint"),
        ("long_video", format!("--out {run_s} --ranks 100000 --clips-per-rank 100000"), "--ranks"),
        ("long_video", format!("--out {run_s} --ranks 1024 --clips-per-rank 64"), "clips in all"),
        ("long_video", format!("--out {run_s} --ranks 0"), "--ranks"),
        ("long_video", format!("--out {run_s} --switch-sigma 7"), "--switch-sigma"),
        ("long_video", format!("--out {run_s} --window 1000"), "window"),
        ("long_video", format!("--out {run_s} --global-frames 1000"), "global_frames"),
        ("long_video", format!("--out {run_s} --ranks 1 --clips-per-rank 1 --prompts circle:red,square:blue"), "--prompts"),
        ("long_video", format!("--out {run_s} --steps 0"), "--steps"),
        ("long_video", format!("--out {run_s} --free-init 0"), "free_init.iterations"),
        ("bench_attention", "--repeats 0".into(), "--repeats"),
        ("bench_attention", "--seq 0".into(), "--seq"),
        ("bench_attention", "--sparsity 1.5".into(), "--sparsity"),
        ("bench_attention", "--bogus".into(), "--bogus"),
        ("bench_training", "--step 2 --frame 8".into(), "--step"),
        ("bench_memory", "--budget-gib 0".into(), "--budget-gib"),
        ("bench_memory", "--variants dense,sparse".into(), "--variants"),
        ("bench_memory", "--frames 3".into(), "--frames"),
        ("bench_memory", "--size 30".into(), "--size"),
        ("bench_sampling", "--clips 0".into(), "--clips"),
        ("bench_sampling", format!("--run {empty_s}"), "--run"),
        ("bench_sampling", format!("--run {run_s} --methods turbo"), "--methods"),
        ("bench_sampling", format!("--run {run_s} --methods free-init --renoise-sigma 1"), "renoise_sigma"),
        ("bench_sampling", format!("--run {run_s} --methods online-sparse --online-sparsity 1"), "online_sparse.sparsity"),
        ("bench_sampling", format!("--run {run_s} --methods dense+turbo"), "--methods"),
        ("bench_sampling", format!("--run {run_s} --frames 0"), "--frames"),
        ("video_dit", format!("eval --out {run_s} --faster-cache --sampling-steps 0"), "steps"),
        ("video_dit", format!("eval --out {run_s} --free-init 0"), "free_init.iterations"),
        ("video_dit", format!("sample --out {run_s} --free-init 99"), "free_init.iterations"),
        ("video_dit", format!("eval --out {run_s} --online-sparse 1.5"), "online_sparse.sparsity"),
        ("bench_long_video", "--frames-per-clip 0".into(), "--frames-per-clip"),
        ("bench_context_parallel", "--bogus".into(), "--bogus"),
        ("plan_context_parallel", "--seq=-5".into(), "--seq"),
        ("plan_context_parallel", "--nvlink 0".into(), "--nvlink"),
    ];
    let mut failures = Vec::new();
    for (name, args, expect) in &cases {
        let args: Vec<&str> = args.split(' ').collect();
        let out = run(name, &args, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let exited = out.status.code().is_some_and(|c| c != 0);
        let panicked = stderr.contains("panicked") || stderr.contains("stack backtrace");
        if !exited || panicked || !stderr.contains(expect) {
            failures.push(format!(
                "{name} {args:?}: status {}, expected a message with {expect:?}, got:\n{stderr}",
                out.status
            ));
        }
    }
    // Nothing was written where it was refused.
    assert!(!locked.join("checkpoints/latest").exists());
    assert!(!empty.join("checkpoints/latest").exists());
    assert!(!empty.join("report.json").exists());
    let _ = std::fs::remove_dir_all(&root);
    assert!(
        failures.is_empty(),
        "{} of {} bad invocations misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_example_has_help() {
    for name in EXAMPLES {
        let out = run(name, &["--help"], Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Usage"),
            "{name} --help: {}\n{stdout}",
            out.status
        );
    }
}
