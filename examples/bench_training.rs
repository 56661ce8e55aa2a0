//! Training throughput of the video DiT, dense vs DSV attention, side by side in one run.
//!
//! ```text
//! cargo run --release --example bench_training -- [--frames 8,16,32] [--size 64]
//!     [--steps 6] [--quality-steps 0] [--dense-steps 1] [--seeds 42] [--tail 10] [--sparsity 0.9]
//!     [--device flex|ndarray|wgpu|vulkan|cuda]
//!     [--out out/bench_training.json, or out/bench_training_quality.json with --quality-steps]
//! ```
//!
//! For each clip geometry (the tiny model's 2×4×4 patches: tokens = (frames/2)·(size/4)²) it
//! trains the same model
//! from the same seed with dense attention and with DSV attention held in its sparse stage at
//! the given sparsity (budget = (1 − s)·N keys per head, from step 2 on), and prints steps/s,
//! their ratio, the share of a dense step spent in attention (attention forward+backward
//! timed alone on the step's shapes), and — with `--quality-steps N` — the mean training loss
//! of the last `--tail` of N steps and the held-out validation loss after them, of the live
//! and of the EMA weights ([`Trainer::validation_loss`], [`Trainer::ema_validation_loss`]:
//! the same clips, noise and noise levels for both).
//!
//! A quality run pairs DSV with its own twin held dense: the same model, initial weights,
//! data and noise, whose layers never go sparse, so that the two losses differ only by the
//! sparse attention (a dense-attention model from the same seed starts from other weights,
//! the predictors drawing their weights from the same generator). It follows DSV's two
//! stages: `--dense-steps D` steps (at least one) in which the predictors learn, then N steps
//! with DSV sparse. It is repeated for every seed of `--seeds`; the table shows the means and
//! the JSON each seed with both loss curves, since one batch-1 run is noisy.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor, module::attention, ops::AttentionModuleOptions};
use burn_sparse_video::dit::data::ClipShape;
use burn_sparse_video::dit::train::{TrainConfig, Trainer};
use burn_sparse_video::dit::{AttentionKind, DsvPolicy, VideoDitConfig};
use burn_sparse_video::sparse_attn::dsv::{DsvHost, DsvStage};

use fail::fail;
#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/device.rs"]
mod device;
#[path = "common/fail.rs"]
mod fail;
#[path = "common/limits.rs"]
mod limits;
#[path = "common/report.rs"]
mod report;
use device::try_device_named;

#[derive(clap::Parser)]
#[command(about = "Training throughput and loss of the tiny DiT, dense against DSV")]
struct Args {
    /// Clip lengths in frames (multiples of the 2-frame patch).
    #[arg(long, value_delimiter = ',', default_value = "8,16,32")]
    frames: Vec<usize>,
    /// Frame height and width (a multiple of the 4-pixel patch).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Timed steps per run of the throughput sweep.
    #[arg(long, default_value_t = 6)]
    steps: usize,
    /// Steps of a quality run with DSV sparse (0 = no quality run).
    #[arg(long, default_value_t = 0)]
    quality_steps: usize,
    /// Dense-stage steps before a quality run goes sparse (at least 1).
    #[arg(long, default_value_t = 1)]
    dense_steps: usize,
    /// Seeds of the quality runs.
    #[arg(long, value_delimiter = ',', default_value = "42")]
    seeds: Vec<u64>,
    /// Steps whose mean training loss a quality run reports.
    #[arg(long, default_value_t = 10)]
    tail: usize,
    /// DSV's sparsity, in [0, 1).
    #[arg(long, default_value_t = 0.9)]
    sparsity: f64,
    /// Device (flex, ndarray, wgpu, vulkan, cuda; each but flex needs its cargo feature).
    #[arg(long, default_value = "flex")]
    device: String,
    /// JSON report (default: out/bench_training.json, or out/bench_training_quality.json
    /// with --quality-steps).
    #[arg(long)]
    out: Option<String>,
}

fn config(clip: ClipShape, attention: AttentionKind, seed: u64) -> TrainConfig {
    // The learning-rate schedule of a 500-step run, whatever the bench trains.
    let mut c = TrainConfig::tiny(VideoDitConfig::tiny().with_attention(attention)).with_steps(500);
    c.clip = clip;
    c.seed = seed;
    c.batch_size = 1;
    c.warmup_steps = 10;
    c
}

/// Held-out clips, noise levels and noise seed of the validation loss: 16 forward passes per
/// model.
const VALIDATION_CLIPS: usize = 4;
const VALIDATION_SIGMAS: [f64; 4] = [0.2, 0.4, 0.6, 0.8];
const VALIDATION_SEED: u64 = 7;

/// What a quality run measures of one trained run.
struct Quality {
    /// Mean training loss of the last `--tail` steps.
    loss: f32,
    /// Held-out loss of the live weights, and of the EMA weights.
    val: f32,
    ema_val: f32,
    /// Training losses as means of 10 steps, to see a run that diverged.
    curve: Vec<f32>,
}

impl Quality {
    fn of((_, losses, trainer): (f64, Vec<f32>, Trainer), tail_steps: usize) -> Self {
        let valid = "valid validation settings";
        Self {
            loss: losses.iter().rev().take(tail_steps).sum::<f32>()
                / losses.len().min(tail_steps) as f32,
            val: trainer
                .validation_loss(VALIDATION_CLIPS, &VALIDATION_SIGMAS, VALIDATION_SEED)
                .expect(valid),
            ema_val: trainer
                .ema_validation_loss(VALIDATION_CLIPS, &VALIDATION_SIGMAS, VALIDATION_SEED)
                .expect(valid),
            curve: losses
                .chunks(10)
                .map(|c| c.iter().sum::<f32>() / c.len() as f32)
                .collect(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({ "loss": self.loss, "validation_loss": self.val, "ema_validation_loss": self.ema_val, "loss_per_10_steps": self.curve })
    }
}

/// Trains `dense_steps` untimed steps (at least one; DSV's dense stage), then `steps` timed ones with DSV
/// (when `sparse`) held sparse; returns (steps/s, losses of every step, the trained run).
fn run(
    config: TrainConfig,
    dense_steps: usize,
    steps: usize,
    sparse: bool,
    device: &Device,
) -> (f64, Vec<f32>, Trainer) {
    let mut trainer = Trainer::new(config, device).expect("bouncing shapes need no files");
    let mut losses: Vec<f32> = (0..dense_steps.max(1))
        .map(|_| trainer.train_step().loss)
        .collect();
    if sparse {
        trainer.set_dsv_stage(DsvStage::Sparse);
    }
    let start = Instant::now();
    for _ in 0..steps {
        losses.push(trainer.train_step().loss);
    }
    let rate = steps as f64 / start.elapsed().as_secs_f64();
    let ran_sparse = trainer
        .model()
        .dsv_layers()
        .iter()
        .map(|l| l.stats().ran_sparse)
        .collect::<Vec<_>>();
    assert!(
        ran_sparse.iter().all(|&r| r == sparse),
        "DSV layers must run sparse exactly when asked, ran sparse: {ran_sparse:?}"
    );
    (rate, losses, trainer)
}

/// Seconds of dense attention forward+backward for one step's shapes (all layers).
fn attention_seconds(tokens: usize, model: &VideoDitConfig, device: &Device) -> f64 {
    let ad = device.clone().autodiff();
    let shape = [1, model.heads, tokens, model.head_dim()];
    let make = || Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &ad).require_grad();
    let (q, k, v) = (make(), make(), make());
    let once = || {
        let _ = attention(
            q.clone(),
            k.clone(),
            v.clone(),
            None,
            None,
            AttentionModuleOptions::default(),
        )
        .sum()
        .backward();
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
    let args = <Args as clap::Parser>::parse();
    if args.frames.is_empty() || args.frames.iter().any(|&f| f == 0 || f % 2 != 0) {
        fail(format!(
            "--frames: positive multiples of 2, got {:?}",
            args.frames
        ));
    }
    if args.size == 0 || args.size % 4 != 0 {
        fail(format!(
            "--size: a positive multiple of 4, got {}",
            args.size
        ));
    }
    let longest = args.frames.iter().copied().max().expect("checked");
    limits::check_fits(
        "--frames",
        &format!("a clip of {longest} frames of {0}×{0}", args.size),
        limits::tiny_dit_clip_bytes(longest, args.size),
    );
    if args.steps < 2 || args.dense_steps == 0 || args.tail == 0 || args.seeds.is_empty() {
        fail("--steps must be ≥ 2, --dense-steps and --tail ≥ 1, --seeds non-empty");
    }
    if !(0.0..1.0).contains(&args.sparsity) {
        fail(format!(
            "--sparsity must be in [0, 1), got {}",
            args.sparsity
        ));
    }
    let (frames, size, steps, quality_steps, dense_steps, seeds, sparsity) = (
        args.frames.clone(),
        args.size,
        args.steps,
        args.quality_steps,
        args.dense_steps,
        args.seeds.clone(),
        args.sparsity,
    );
    // A quality run writes beside the length sweep, not over it.
    let out = args.out.clone().unwrap_or_else(|| {
        if quality_steps > 0 {
            "out/bench_training_quality.json"
        } else {
            "out/bench_training.json"
        }
        .to_string()
    });
    let device = try_device_named(&args.device).unwrap_or_else(|e| fail(format!("--device: {e}")));
    let tail_steps = args.tail;
    let policy = DsvPolicy::new()
        .with_min_sparse_len(0)
        .with_sparsity_threshold(0.0)
        .with_min_budget_fraction(1.0 - sparsity)
        .with_max_budget_fraction(1.0 - sparsity)
        .with_sample_stride(64)
        .with_profile_every(1000);
    let dsv = AttentionKind::Dsv(policy.clone());
    // The quality baseline: the same DSV model (same initial weights, predictors learning
    // alike) that never goes sparse, so the two runs differ only in the sparse attention.
    let dense_twin = AttentionKind::Dsv(policy.with_min_sparse_len(usize::MAX));
    println!(
        "device {device:?}; tiny DiT (width 128, depth 4, 4 heads), batch 1, {steps} timed steps, DSV at sparsity {sparsity}"
    );
    println!(
        "{:>7} | {:>9} {:>9} {:>7} | {:>10} | {:>10} {:>10} | {:>10} {:>10} | {:>10} {:>10}",
        "tokens",
        "dense it/s",
        "DSV it/s",
        "ratio",
        "attn share",
        "dense loss",
        "DSV loss",
        "dense val",
        "DSV val",
        "dense EMA",
        "DSV EMA"
    );
    let mut rows = Vec::new();
    for &t in &frames {
        let clip = ClipShape {
            frames: t,
            height: size,
            width: size,
        };
        let [pt, ph, pw] = VideoDitConfig::tiny().patch;
        let tokens = (t / pt) * (size / ph) * (size / pw);
        let (dense_rate, ..) = run(
            config(clip, AttentionKind::Dense, 42),
            1,
            steps,
            false,
            &device,
        );
        let (dsv_rate, ..) = run(config(clip, dsv.clone(), 42), 1, steps, true, &device);
        let step_seconds = 1.0 / dense_rate;
        let share = attention_seconds(tokens, &VideoDitConfig::tiny(), &device) / step_seconds;
        // Per seed: (seed, dense twin's measures, DSV's measures).
        let per_seed: Vec<(u64, Quality, Quality)> = if quality_steps == 0 {
            Vec::new()
        } else {
            seeds
                .iter()
                .map(|&seed| {
                    let dense = Quality::of(run(config(clip, dense_twin.clone(), seed), dense_steps, quality_steps, false, &device), tail_steps);
                    let dsv = Quality::of(run(config(clip, dsv.clone(), seed), dense_steps, quality_steps, true, &device), tail_steps);
                    let pct = |a: f32, b: f32| 100.0 * (b / a - 1.0);
                    println!(
                        "        seed {seed}: loss {:.4} vs DSV {:.4} ({:+.1}%), val {:.4} vs {:.4} ({:+.1}%), EMA val {:.4} vs {:.4} ({:+.1}%)",
                        dense.loss, dsv.loss, pct(dense.loss, dsv.loss), dense.val, dsv.val, pct(dense.val, dsv.val), dense.ema_val, dsv.ema_val, pct(dense.ema_val, dsv.ema_val)
                    );
                    (seed, dense, dsv)
                })
                .collect()
        };
        let mean = |f: &dyn Fn(&(u64, Quality, Quality)) -> f32| {
            (!per_seed.is_empty())
                .then(|| per_seed.iter().map(f).sum::<f32>() / per_seed.len() as f32)
        };
        let fmt = |x: Option<f32>| x.map(|v| format!("{v:.4}")).unwrap_or("-".into());
        let (dense_loss, dsv_loss) = (mean(&|q| q.1.loss), mean(&|q| q.2.loss));
        let (dense_val, dsv_val) = (mean(&|q| q.1.val), mean(&|q| q.2.val));
        let (dense_ema_val, dsv_ema_val) = (mean(&|q| q.1.ema_val), mean(&|q| q.2.ema_val));
        println!(
            "{:>7} | {:>9.3} {:>9.3} {:>6.2}x | {:>9.1}% | {:>10} {:>10} | {:>10} {:>10} | {:>10} {:>10}",
            tokens,
            dense_rate,
            dsv_rate,
            dsv_rate / dense_rate,
            100.0 * share,
            fmt(dense_loss),
            fmt(dsv_loss),
            fmt(dense_val),
            fmt(dsv_val),
            fmt(dense_ema_val),
            fmt(dsv_ema_val)
        );
        rows.push(serde_json::json!({
            "tokens": tokens, "frames": t, "size": size, "dense_steps_per_s": dense_rate, "dsv_steps_per_s": dsv_rate,
            "ratio": dsv_rate / dense_rate, "attention_share_dense": share, "sparsity": sparsity,
            "quality_steps": quality_steps, "dense_steps": dense_steps, "tail_steps": tail_steps,
            "quality_baseline": "the DSV model held dense (same initial weights)", "dense_loss": dense_loss, "dsv_loss": dsv_loss,
            "validation": (!per_seed.is_empty()).then(|| serde_json::json!({ "clips": VALIDATION_CLIPS, "sigmas": VALIDATION_SIGMAS, "seed": VALIDATION_SEED })),
            "dense_validation_loss": dense_val, "dsv_validation_loss": dsv_val,
            "dense_ema_validation_loss": dense_ema_val, "dsv_ema_validation_loss": dsv_ema_val,
            "seeds": per_seed.iter().map(|(seed, dense, dsv)| serde_json::json!({ "seed": seed, "dense": dense.json(), "dsv": dsv.json() })).collect::<Vec<_>>(),
        }));
    }
    report::write_json(
        &out,
        &serde_json::json!({ "device": format!("{device:?}"), "rows": rows }),
    );
}
