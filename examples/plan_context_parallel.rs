//! Predicted attention time of head-only, sequence-only and hybrid context parallelism on a
//! simulated cluster, and the straggler penalty that LPT head placement removes.
//!
//! ```text
//! cargo run --release --example plan_context_parallel -- [--report out/tiny/report.json]
//!     [--seq 131072] [--nvlink 300] [--ib 25] [--tflops 400]
//! ```
//! Per-head sparsities come from a DSV layer profile in a `video_dit` report (`--report`;
//! the heads of every layer are pooled) or, by default, a profile shaped like DSV's
//! measurements (most heads ~95% sparse, a few 80–90%).

use burn_sparse_video::ctx_parallel::planner::{AttentionWorkload, ClusterSpec, estimate, naive_assign, plan, straggler_penalty, lpt_assign};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn num(name: &str, default: f64) -> f64 {
    arg(name).map(|v| v.parse().unwrap_or_else(|_| panic!("{name}: not a number: {v}"))).unwrap_or(default)
}

fn sparsities() -> (Vec<f64>, String) {
    if let Some(path) = arg("--report") {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("--report {path}: {e}"));
        let report: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("--report {path}: {e}"));
        let heads: Vec<f64> = report["dsv_layers"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["head_sparsity"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_f64())
            .collect();
        assert!(!heads.is_empty(), "--report {path}: no DSV head sparsities in it");
        return (heads, format!("measured, {path}"));
    }
    let mut heads = vec![0.95; 16];
    for (h, s) in [(1, 0.80), (2, 0.85), (5, 0.88), (6, 0.90)] {
        heads[h] = s;
    }
    (heads, "DSV-like profile (12 heads at 0.95, 4 at 0.80–0.90)".into())
}

fn main() {
    let (head_sparsity, source) = sparsities();
    let work = AttentionWorkload { seq: num("--seq", 131_072.0) as usize, head_dim: 128, head_sparsity, remote_fraction: 0.9, elem_bytes: 2 };
    let costs: Vec<f64> = work.head_sparsity.iter().map(|s| 1.0 - s).collect();
    println!("{} heads ({source}), S = {}, D = 128, bf16; per layer, forward + backward", costs.len(), work.seq);
    println!("{:>6} | {:>11} {:>11} {:>18} | {:>9} {:>9} | {:>10}", "GPUs", "head-only s", "seq-only s", "best hybrid s", "naive imb", "LPT imb", "best/naive");
    for devices in [8usize, 16, 32, 64, 128] {
        let cluster = ClusterSpec { devices, devices_per_node: 8, nvlink_gbps: num("--nvlink", 300.0), ib_gbps: num("--ib", 25.0), tflops: num("--tflops", 400.0) };
        let heads = costs.len();
        let head_group = (1..=devices.min(heads)).rev().find(|g| devices % g == 0 && heads % g == 0).unwrap_or(1);
        let head_only = estimate(&cluster, &work, head_group, devices / head_group, false);
        let seq_only = estimate(&cluster, &work, 1, devices, true);
        let best = plan(&cluster, &work).into_iter().next().expect("a split exists");
        let naive_imb = straggler_penalty(&costs, &naive_assign(heads, head_group));
        let lpt_imb = straggler_penalty(&costs, &lpt_assign(&costs, head_group));
        println!(
            "{:>6} | {:>11.4} {:>11.4} {:>9.4} ({:>2}×{:<3}) | {:>8.1}% {:>8.1}% | {:>9.2}×",
            devices, head_only.total_s, seq_only.total_s, best.total_s, best.head_group, best.seq_group, 100.0 * naive_imb, 100.0 * lpt_imb, head_only.total_s / best.total_s
        );
    }
    println!("head-only = the largest head group dividing the heads (naive contiguous placement), the rest sequence-parallel");
}
