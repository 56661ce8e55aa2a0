//! Sampling accelerators on a trained checkpoint, side by side in one run: wall time per
//! sample and the report's video metrics for the plain sampler and each accelerator.
//!
//! ```text
//! cargo run --release --example bench_sampling -- [--run out/tiny] [--clips 48]
//!     [--methods baseline,faster-cache] [--frames 8] [--online-sparsity 0.9]
//!     [--seed 1234] [--out out/bench_sampling.json]
//! ```
//!
//! Every method samples the same `--clips` held-out labels from the same noise with the
//! checkpoint's EMA weights and sampler settings (the main job's: 20 Euler steps, guidance
//! 5), and the samples are measured as `video_dit eval` measures them. `faster-cache` is
//! FasterCache, `free-init` FreeInit and `online-sparse` online sparse attention with their
//! default settings (`FasterCacheConfig::default`, `FreeInitConfig::default`,
//! `OnlineSparseConfig::default` at `--online-sparsity`); `dense` makes every self-attention
//! dense. Methods with `dense` or `online-sparse` also time the self-attention alone and
//! print each block's calls, sparsity and recall. `--frames` samples longer clips than the
//! run trained on (more tokens), measured the same way.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use burn_sparse_video::dit::data::ClipShape;
use burn_sparse_video::dit::media::Frames;
use burn_sparse_video::dit::metrics::HeldOut;
use burn_sparse_video::dit::sample::SamplerConfig;
use burn_sparse_video::dit::sample::faster_cache::FasterCacheConfig;
use burn_sparse_video::dit::sample::free_init::FreeInitConfig;
use burn_sparse_video::dit::sample::online_sparse::{OnlineLayerStats, OnlineSparseConfig};
use burn_sparse_video::dit::train::{IfDamaged, generate_with_stats, load_for_sampling};

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

#[derive(clap::Parser)]
#[command(about = "Sampling accelerators against the plain sampler on a trained checkpoint")]
struct Args {
    /// Run folder holding `checkpoints/latest` (the main job's by default).
    #[arg(long, default_value = "out/tiny")]
    run: PathBuf,
    /// Held-out labels to sample (1 to 1024).
    #[arg(long, default_value_t = 48)]
    clips: usize,
    /// Methods: `+`-joined parts of baseline, dense, faster-cache, free-init and
    /// online-sparse (e.g. `dense,online-sparse,online-sparse+faster-cache`).
    #[arg(long, value_delimiter = ',', default_value = "baseline,faster-cache")]
    methods: Vec<String>,
    /// Frames per sampled clip (default: the run's clip): longer clips, more tokens.
    #[arg(long)]
    frames: Option<usize>,
    /// Online sparse attention's sparsity (`OnlineSparseConfig::sparsity`).
    #[arg(long, default_value_t = OnlineSparseConfig::default().sparsity)]
    online_sparsity: f64,
    /// Online sparse attention's dense warm-up share (`OnlineSparseConfig::warmup`).
    #[arg(long, default_value_t = OnlineSparseConfig::default().warmup)]
    online_warmup: f64,
    /// Steps between online searches (`OnlineSparseConfig::search_every`).
    #[arg(long, default_value_t = OnlineSparseConfig::default().search_every)]
    online_search_every: usize,
    /// Whether online sparse attention keeps each search's skipped-key part
    /// (`OnlineSparseConfig::keep_tail`).
    #[arg(long, default_value_t = OnlineSparseConfig::default().keep_tail, action = clap::ArgAction::Set)]
    online_keep_tail: bool,
    /// Online sparse attention's query cube `t,h,w` in tokens (`OnlineSparseConfig::query_cube`).
    #[arg(long, value_delimiter = ',', default_value = "1,4,4")]
    online_cube: Vec<usize>,
    /// Noise seed.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// FreeInit's re-noising level (`FreeInitConfig::renoise_sigma`).
    #[arg(long, default_value_t = FreeInitConfig::default().renoise_sigma)]
    renoise_sigma: f64,
    /// JSON report.
    #[arg(long, default_value = "out/bench_sampling.json")]
    out: String,
}

/// The sampler of `method`: `+`-joined parts, each `baseline` (the checkpoint's sampler),
/// `dense` (every attention dense and timed, through online sparse attention's dense path),
/// `faster-cache`, `free-init` or `online-sparse`.
fn sampler_for(method: &str, base: SamplerConfig, args: &Args) -> SamplerConfig {
    let mut sampler = base;
    for part in method.split('+') {
        match part {
            "baseline" => {}
            "dense" => sampler.online_sparse = Some(OnlineSparseConfig::dense_timed()),
            "faster-cache" => sampler.faster_cache = Some(FasterCacheConfig::default()),
            "free-init" => {
                sampler.free_init = Some(FreeInitConfig {
                    renoise_sigma: args.renoise_sigma,
                    ..FreeInitConfig::default()
                })
            }
            "online-sparse" => {
                let Ok(query_cube) = <[usize; 3]>::try_from(args.online_cube.as_slice()) else {
                    fail(format!("--online-cube: t,h,w, got {:?}", args.online_cube))
                };
                sampler.online_sparse = Some(OnlineSparseConfig {
                    sparsity: args.online_sparsity,
                    warmup: args.online_warmup,
                    search_every: args.online_search_every,
                    query_cube,
                    keep_tail: args.online_keep_tail,
                    ..OnlineSparseConfig::default()
                })
            }
            other => fail(format!(
                "--methods: `+`-joined parts of baseline, dense, faster-cache, free-init and \
                 online-sparse, got `{other}` in `{method}`"
            )),
        }
    }
    sampler
        .check("bench_sampling")
        .unwrap_or_else(|e| fail(format!("{e} (--renoise-sigma, --online-*)")));
    sampler
}

/// The self-attention's time per sample (against the first method that timed it) and each
/// block's online sparse record.
fn print_layers(layers: &[OnlineLayerStats], seconds: f64, dense: f64, width: usize) {
    println!(
        "{:>width$}   attention {seconds:.3} s/sample, {:.2}× the first timed method",
        "",
        dense / seconds
    );
    for (i, l) in layers.iter().enumerate() {
        let recall = match l.recall.len() {
            0 => "no search".to_string(),
            n => format!("recall {:.3}", l.recall.iter().sum::<f64>() / n as f64),
        };
        println!(
            "{:>width$}   block {i}: {} dense, {} searches, {} sparse calls; sparsity {:.3}, {recall}",
            "", l.dense, l.searches, l.sparse, l.sparsity
        );
    }
}

fn main() {
    allocator::keep_freed_memory();
    // Everything runs on Flex.
    device::make_default("flex");
    let args = <Args as clap::Parser>::parse();
    if !(1..=1024).contains(&args.clips) {
        fail(format!("--clips must be in 1..=1024, got {}", args.clips));
    }
    // Ranges are the methods' own checks; a non-finite value has none to meet.
    for (flag, value) in [
        ("--online-sparsity", args.online_sparsity),
        ("--online-warmup", args.online_warmup),
        ("--renoise-sigma", args.renoise_sigma),
    ] {
        if !value.is_finite() {
            fail(format!("{flag} must be a finite number, got {value}"));
        }
    }
    if args.methods.is_empty() {
        fail("--methods: at least one");
    }
    let device = Device::flex();
    let (model, config) = load_for_sampling(&args.run, &device, IfDamaged::Fail)
        .unwrap_or_else(|e| fail(format!("--run {}: {e}", args.run.display())));
    for m in &args.methods {
        sampler_for(m, config.sampler, &args);
    }
    let g = ClipShape {
        frames: args.frames.unwrap_or(config.clip.frames),
        ..config.clip
    };
    if g.frames == 0 || !g.frames.is_multiple_of(model.config().patch[0]) {
        fail(format!(
            "--frames must be a positive multiple of the frame patch {}, got {}",
            model.config().patch[0],
            g.frames
        ));
    }
    limits::check_fits(
        "--frames",
        &format!("a clip of {} frames of {}×{}", g.frames, g.height, g.width),
        limits::tiny_dit_clip_bytes(g.frames, g.height.max(g.width)),
    );
    let data = config
        .data
        .open(
            config.clip,
            config.dataset_size,
            config.dataset_size,
            config.seed,
        )
        .unwrap_or_else(|e| fail(format!("the run's data: {e}")));
    let held_out = HeldOut::new(&data, config.dataset_size, args.clips);
    let labels = held_out.labels();
    println!(
        "{} clips of {}×{}×{} from {}, sampler {:?}",
        args.clips,
        g.frames,
        g.height,
        g.width,
        args.run.display(),
        config.sampler
    );
    let width = args
        .methods
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(6);
    println!(
        "{:>width$} | {:>8} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7}",
        "method",
        "s/sample",
        "speed",
        "object",
        "colour",
        "IoU",
        "one",
        "flicker",
        "smooth",
        "area"
    );
    let mut rows = Vec::new();
    let mut baseline_seconds = None;
    let mut dense_attention_seconds = None;
    for method in &args.methods {
        let sampler = sampler_for(method, config.sampler, &args);
        let start = Instant::now();
        let (samples, layers): (Vec<Frames>, _) =
            generate_with_stats(&model, g, labels, sampler, args.seed, |_, _| {});
        let per_sample = start.elapsed().as_secs_f64() / args.clips as f64;
        let reference = *baseline_seconds.get_or_insert(per_sample);
        let m = held_out.measure(&samples);
        println!(
            "{method:>width$} | {per_sample:>8.3} {:>6.2}× | {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>7.3} {:>7.3} {:>7.3}",
            reference / per_sample,
            m.object_accuracy,
            m.colour_accuracy,
            m.shape_iou.unwrap_or(f64::NAN),
            m.single_object_rate,
            m.temporal_flickering,
            m.motion_smoothness,
            m.area_variation
        );
        let attention = (!layers.is_empty()).then(|| {
            let seconds = layers.iter().map(|l| l.seconds).sum::<f64>() / args.clips as f64;
            let dense = *dense_attention_seconds.get_or_insert(seconds);
            print_layers(&layers, seconds, dense, width);
            serde_json::json!({
                "seconds_per_sample": seconds,
                "speed_vs_first_timed": dense / seconds,
                "layers": layers,
            })
        });
        rows.push(serde_json::json!({
            "method": method,
            "sampler": sampler,
            "seconds_per_sample": per_sample,
            "speed_vs_first": reference / per_sample,
            "metrics": m,
            "attention": attention,
        }));
    }
    let report = serde_json::json!({
        "run": args.run,
        "clips": args.clips,
        "clip": g,
        "tokens": g.frames / model.config().patch[0]
            * (g.height / model.config().patch[1])
            * (g.width / model.config().patch[2]),
        "seed": args.seed,
        "methods": rows,
    });
    report::write_json(&args.out, &report);
}
