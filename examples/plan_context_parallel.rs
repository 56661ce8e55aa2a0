//! Predicted attention time of head-only, sequence-only and hybrid context parallelism on a
//! modelled GPU cluster, and the straggler penalty that LPT head placement removes.
//!
//! ```text
//! cargo run --release --example plan_context_parallel -- [--report out/tiny/report.json]
//!     [--seq 131072] [--head-dim 128] [--nvlink 300] [--ib 25] [--tflops 400] [--latency-us 10]
//!     [--calibration benchmarks/cpu-flex/context-parallel/mpi_4.json]
//! ```
//! Per-head sparsities come from a DSV layer profile in a `video_dit` report (`--report`;
//! the heads of every layer are pooled) or, by default, a profile shaped like DSV's
//! measurements (most heads ~95% sparse, a few 80–90%). `--calibration` reads a
//! `bench_context_parallel` JSON, whose attention rows hold the measured time next to the
//! same cost model calibrated on that machine, and prints how far the model was from the
//! measurements there beside the projection. Every time printed is a model, not a measurement.

use burn_sparse_video::ctx_parallel::planner::{
    AttentionWorkload, ClusterSpec, estimate, lpt_assign, naive_assign, plan, straggler_penalty,
};
use clap::Parser;

#[path = "common/fail.rs"]
mod fail;
use fail::fail;

#[derive(Parser)]
#[command(about = "Model head, sequence and hybrid context parallelism on 8-128 GPUs")]
struct Args {
    /// A `video_dit` report whose DSV layers give the per-head sparsities.
    #[arg(long)]
    report: Option<String>,
    /// Tokens per video.
    #[arg(long, default_value_t = 131_072)]
    seq: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// NVLink bandwidth per GPU, GB/s.
    #[arg(long, default_value_t = 300.0)]
    nvlink: f64,
    /// Inter-node bandwidth per GPU, GB/s.
    #[arg(long, default_value_t = 25.0)]
    ib: f64,
    /// Sustained attention throughput per GPU, TFLOP/s.
    #[arg(long, default_value_t = 400.0)]
    tflops: f64,
    /// Per-message latency, µs.
    #[arg(long, default_value_t = 10.0)]
    latency_us: f64,
    /// A `bench_context_parallel` JSON: the model against measurements on that machine.
    #[arg(long)]
    calibration: Option<String>,
}

/// GPUs of the largest plan.
const LARGEST_CLUSTER: usize = 128;
/// Longest video the cost model plans for, in tokens.
const MAX_SEQ: usize = 1 << 26;

fn sparsities(report: Option<&str>) -> (Vec<f64>, String) {
    if let Some(path) = report {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| fail(format!("--report {path}: {e}")));
        let report: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("--report {path}: {e}")));
        let heads: Vec<f64> = report["dsv_layers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["head_sparsity"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .collect();
        if heads.is_empty() {
            fail(format!("--report {path}: no DSV head sparsities in it"));
        }
        return (heads, format!("measured, {path}"));
    }
    let mut heads = vec![0.95; 16];
    for (h, s) in [(1, 0.80), (2, 0.85), (5, 0.88), (6, 0.90)] {
        heads[h] = s;
    }
    (
        heads,
        "DSV-like profile (12 heads at 0.95, 4 at 0.80–0.90)".into(),
    )
}

/// `measured / model` of every attention row of a `bench_context_parallel` JSON that has both.
fn model_error(path: &str) -> (Vec<(String, f64)>, String) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| fail(format!("--calibration {path}: {e}")));
    let bench: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("--calibration {path}: {e}")));
    let ratios: Vec<(String, f64)> = bench["attention"]["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["kind"].as_str()?.to_string(),
                r["seconds"].as_f64()? / r["model_seconds"].as_f64()?,
            ))
        })
        .collect();
    if ratios.is_empty() {
        fail(format!(
            "--calibration {path}: no attention rows with a model time (bench_context_parallel writes them)"
        ));
    }
    let c = &bench["calibration"];
    let what = format!(
        "{} ranks over {}: link {:.1} µs + bytes / {:.2} GB/s, {:.2} GFLOP/s dense",
        bench["world"],
        bench["transport"].as_str().unwrap_or("?"),
        c["link_latency_s"].as_f64().unwrap_or(f64::NAN) * 1e6,
        c["link_bytes_per_s"].as_f64().unwrap_or(f64::NAN) / 1e9,
        c["dense_flops_per_s"].as_f64().unwrap_or(f64::NAN) / 1e9
    );
    (ratios, what)
}

fn main() {
    let args = Args::parse();
    for (name, v) in [
        ("--nvlink", args.nvlink),
        ("--ib", args.ib),
        ("--tflops", args.tflops),
    ] {
        if !(v > 0.0 && v.is_finite()) {
            fail(format!("{name} must be a positive number, got {v}"));
        }
    }
    if !(args.latency_us >= 0.0 && args.latency_us.is_finite()) {
        fail(format!("--latency-us must be ≥ 0, got {}", args.latency_us));
    }
    // The plans split a video over up to 128 GPUs, at least one token each; past 2^26 tokens
    // one layer takes minutes on 128 GPUs and the cost model's terms are not what they
    // were measured for.
    if !(LARGEST_CLUSTER..=MAX_SEQ).contains(&args.seq) {
        fail(format!(
            "--seq must be in {LARGEST_CLUSTER}..={MAX_SEQ} (a token per GPU of the largest plan, \
             {LARGEST_CLUSTER} GPUs; at most 2^26), got {}",
            args.seq
        ));
    }
    if !(1..=1024).contains(&args.head_dim) {
        fail(format!(
            "--head-dim must be in 1..=1024, got {}",
            args.head_dim
        ));
    }
    let (head_sparsity, source) = sparsities(args.report.as_deref());
    let correction = args.calibration.as_deref().map(|path| {
        let (ratios, what) = model_error(path);
        let mut sorted: Vec<f64> = ratios.iter().map(|r| r.1).collect();
        sorted.sort_by(f64::total_cmp);
        println!("cost model against measurements ({what}):");
        for (kind, r) in &ratios {
            println!("  {kind}: measured / model = {r:.2}");
        }
        let median = sorted[sorted.len() / 2];
        println!("  median {median:.2}; the last column scales the model by it\n");
        median
    });
    let work = AttentionWorkload {
        seq: args.seq,
        head_dim: args.head_dim,
        head_sparsity,
        remote_fraction: 0.9,
        elem_bytes: 2,
    };
    let costs: Vec<f64> = work.head_sparsity.iter().map(|s| 1.0 - s).collect();
    println!(
        "MODEL: {} heads ({source}), S = {}, D = {}, bf16; per layer, forward + backward",
        costs.len(),
        work.seq,
        work.head_dim
    );
    println!(
        "{:>6} | {:>11} {:>11} {:>18} | {:>9} {:>9} | {:>10} | {:>14}",
        "GPUs",
        "head-only s",
        "seq-only s",
        "best hybrid s",
        "naive imb",
        "LPT imb",
        "best/naive",
        "best × measured/model"
    );
    for devices in [8usize, 16, 32, 64, LARGEST_CLUSTER] {
        let cluster = ClusterSpec {
            devices,
            devices_per_node: 8,
            nvlink_gbps: args.nvlink,
            ib_gbps: args.ib,
            tflops: args.tflops,
            latency_s: args.latency_us * 1e-6,
        };
        let heads = costs.len();
        let head_group = (1..=devices.min(heads))
            .rev()
            .find(|g| devices % g == 0 && heads.is_multiple_of(*g))
            .unwrap_or(1);
        let head_only = estimate(&cluster, &work, head_group, devices / head_group, false);
        let seq_only = estimate(&cluster, &work, 1, devices, true);
        let best = plan(&cluster, &work)
            .into_iter()
            .next()
            .expect("a split exists");
        let naive_imb = straggler_penalty(&costs, &naive_assign(heads, head_group));
        let lpt_imb = straggler_penalty(&costs, &lpt_assign(&costs, head_group));
        println!(
            "{:>6} | {:>11.4} {:>11.4} {:>9.4} ({:>2}×{:<3}) | {:>8.1}% {:>8.1}% | {:>9.2}× | {:>14}",
            devices,
            head_only.total_s,
            seq_only.total_s,
            best.total_s,
            best.head_group,
            best.seq_group,
            100.0 * naive_imb,
            100.0 * lpt_imb,
            head_only.total_s / best.total_s,
            correction.map_or("-".into(), |c| format!("{:.4}", best.total_s * c))
        );
    }
    println!(
        "head-only = the largest head group dividing the heads (naive contiguous placement), the rest sequence-parallel"
    );
}
