//! Training throughput of the video DiT, dense vs DSV attention, side by side in one run.
//!
//! ```text
//! cargo run --release --example bench_training -- [--frames 8,16,32] [--size 64]
//!     [--steps 6] [--quality-steps 0] [--sparsity 0.9] [--device flex|ndarray|wgpu|vulkan|cuda]
//!     [--out out/bench_training.json, or out/bench_training_quality.json with --quality-steps]
//! ```
//!
//! For each clip geometry (the tiny model's 2×4×4 patches: tokens = (frames/2)·(size/4)²) it
//! trains the same model
//! from the same seed with dense attention and with DSV attention held in its sparse stage at
//! the given sparsity (budget = (1 − s)·N keys per head, from step 2 on), and prints steps/s,
//! their ratio, the share of a dense step spent in attention (attention forward+backward
//! timed alone on the step's shapes), and — with `--quality-steps N` — the mean training loss
//! of the last 10 of N steps and the held-out validation loss after them
//! ([`Trainer::validation_loss`]: the same clips, noise and noise levels for both).

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, module::attention, ops::AttentionModuleOptions};
use burn_sparse_video::dit::data::ClipShape;
use burn_sparse_video::dit::train::{TrainConfig, Trainer};
use burn_sparse_video::dit::{AttentionKind, DsvPolicy, VideoDitConfig};
use burn_sparse_video::sparse_attn::dsv::{DsvHost, DsvStage};

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/device.rs"]
mod device;
use device::device_named;

fn arg_list(name: &str, default: &str) -> Vec<usize> {
    let args: Vec<String> = std::env::args().collect();
    let value = args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(String::as_str).unwrap_or(default);
    value.split(',').map(|x| x.parse().unwrap_or_else(|_| panic!("{name}: bad number `{x}`"))).collect()
}

fn arg_str(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn config(clip: ClipShape, attention: AttentionKind) -> TrainConfig {
    let mut c = TrainConfig::tiny(VideoDitConfig::tiny().with_attention(attention));
    c.clip = clip;
    c.batch_size = 1;
    c.warmup_steps = 10;
    c
}

/// Held-out clips and noise levels of the validation loss: 16 forward passes per model.
const VALIDATION_CLIPS: usize = 4;
const VALIDATION_SIGMAS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];

/// Trains `steps` steps after one warm-up step; returns (steps/s, losses of every step, the
/// trained run).
fn run(config: TrainConfig, steps: usize, sparse: bool, device: &Device) -> (f64, Vec<f32>, Trainer) {
    let mut trainer = Trainer::new(config, device).expect("bouncing shapes need no files");
    let mut losses = vec![trainer.train_step().loss];
    if sparse {
        for layer in trainer.model().dsv_layers() {
            layer.set_stage(DsvStage::Sparse);
        }
    }
    let start = Instant::now();
    for _ in 0..steps {
        losses.push(trainer.train_step().loss);
    }
    let rate = steps as f64 / start.elapsed().as_secs_f64();
    if sparse {
        assert!(trainer.model().dsv_layers().iter().all(|l| l.stats().ran_sparse), "DSV layers must run sparse in the benchmark");
    }
    (rate, losses, trainer)
}

/// Seconds of dense attention forward+backward for one step's shapes (all layers).
fn attention_seconds(tokens: usize, model: &VideoDitConfig, device: &Device) -> f64 {
    let ad = device.clone().autodiff();
    let shape = [1, model.heads, tokens, model.head_dim()];
    let make = || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let (q, k, v) = (make(), make(), make());
    let once = || {
        let _ = attention(q.clone(), k.clone(), v.clone(), None, None, AttentionModuleOptions::default()).sum().backward();
    };
    once();
    let start = Instant::now();
    for _ in 0..model.depth {
        once();
    }
    start.elapsed().as_secs_f64()
}

fn main() {
    allocator::keep_freed_memory();
    let frames = arg_list("--frames", "8,16,32");
    let size = arg_list("--size", "64")[0];
    let steps = arg_list("--steps", "6")[0];
    let quality_steps = arg_list("--quality-steps", "0")[0];
    let sparsity: f64 = arg_str("--sparsity", "0.9").parse().expect("--sparsity");
    // A quality run writes beside the length sweep, not over it.
    let out = arg_str("--out", if quality_steps > 0 { "out/bench_training_quality.json" } else { "out/bench_training.json" });
    let device = device_named(&arg_str("--device", "flex"));
    let dsv = AttentionKind::Dsv(
        DsvPolicy::new()
            .with_min_sparse_len(0)
            .with_sparsity_threshold(0.0)
            .with_min_budget_fraction(1.0 - sparsity)
            .with_max_budget_fraction(1.0 - sparsity)
            .with_sample_stride(64)
            .with_profile_every(1000),
    );
    println!("device {device:?}; tiny DiT (width 128, depth 4, 4 heads), batch 1, {steps} timed steps, DSV at sparsity {sparsity}");
    println!(
        "{:>7} | {:>9} {:>9} {:>7} | {:>10} | {:>10} {:>10} | {:>10} {:>10}",
        "tokens", "dense it/s", "DSV it/s", "ratio", "attn share", "dense loss", "DSV loss", "dense val", "DSV val"
    );
    let mut rows = Vec::new();
    for &t in &frames {
        let clip = ClipShape { frames: t, height: size, width: size };
        let [pt, ph, pw] = VideoDitConfig::tiny().patch;
        let tokens = (t / pt) * (size / ph) * (size / pw);
        let (dense_rate, ..) = run(config(clip, AttentionKind::Dense), steps, false, &device);
        let (dsv_rate, ..) = run(config(clip, dsv.clone()), steps, true, &device);
        let step_seconds = 1.0 / dense_rate;
        let share = attention_seconds(tokens, &VideoDitConfig::tiny(), &device) / step_seconds;
        // (mean of the last 10 training losses, validation loss) of each side.
        let quality = (quality_steps > 0).then(|| {
            let measure = |(_, losses, trainer): (f64, Vec<f32>, Trainer)| {
                let tail = losses.iter().rev().take(10).sum::<f32>() / losses.len().min(10) as f32;
                (tail, trainer.validation_loss(VALIDATION_CLIPS, &VALIDATION_SIGMAS, 7).expect("valid validation settings"))
            };
            let dense = measure(run(config(clip, AttentionKind::Dense), quality_steps, false, &device));
            let dsv = measure(run(config(clip, dsv.clone()), quality_steps, true, &device));
            (dense, dsv)
        });
        let fmt = |x: Option<f32>| x.map(|v| format!("{v:.4}")).unwrap_or("-".into());
        println!(
            "{:>7} | {:>9.3} {:>9.3} {:>6.2}x | {:>9.1}% | {:>10} {:>10} | {:>10} {:>10}",
            tokens,
            dense_rate,
            dsv_rate,
            dsv_rate / dense_rate,
            100.0 * share,
            fmt(quality.map(|q| q.0.0)),
            fmt(quality.map(|q| q.1.0)),
            fmt(quality.map(|q| q.0.1)),
            fmt(quality.map(|q| q.1.1))
        );
        rows.push(serde_json::json!({
            "tokens": tokens, "frames": t, "size": size, "dense_steps_per_s": dense_rate, "dsv_steps_per_s": dsv_rate,
            "ratio": dsv_rate / dense_rate, "attention_share_dense": share, "sparsity": sparsity,
            "quality_steps": quality_steps, "dense_loss": quality.map(|q| q.0.0), "dsv_loss": quality.map(|q| q.1.0),
            "validation": quality.map(|_| serde_json::json!({ "clips": VALIDATION_CLIPS, "sigmas": VALIDATION_SIGMAS, "seed": 7 })),
            "dense_validation_loss": quality.map(|q| q.0.1), "dsv_validation_loss": quality.map(|q| q.1.1),
        }));
    }
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("output folder");
    }
    std::fs::write(&out, serde_json::to_string_pretty(&serde_json::json!({ "device": format!("{device:?}"), "rows": rows })).unwrap()).expect("write JSON");
    println!("wrote {out}");
}
