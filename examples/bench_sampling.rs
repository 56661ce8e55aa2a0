//! Sampling accelerators on a trained checkpoint, side by side in one run: wall time per
//! sample and the report's video metrics for the plain sampler and each accelerator.
//!
//! ```text
//! cargo run --release --example bench_sampling -- [--run out/tiny] [--clips 48]
//!     [--methods baseline,faster-cache] [--seed 1234] [--out out/bench_sampling.json]
//! ```
//!
//! Every method samples the same `--clips` held-out labels from the same noise with the
//! checkpoint's EMA weights and sampler settings (the main job's: 20 Euler steps, guidance
//! 5), and the samples are measured as `video_dit eval` measures them. `faster-cache` is
//! FasterCache and `free-init` FreeInit with their default settings
//! (`FasterCacheConfig::default`, `FreeInitConfig::default`).

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;
use burn_sparse_video::dit::faster_cache::FasterCacheConfig;
use burn_sparse_video::dit::free_init::FreeInitConfig;
use burn_sparse_video::dit::media::Frames;
use burn_sparse_video::dit::metrics::{ObjectClassifier, measure};
use burn_sparse_video::dit::sample::SamplerConfig;
use burn_sparse_video::dit::train::{IfDamaged, generate, load_for_sampling};

#[path = "common/allocator.rs"]
mod allocator;
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
    /// Methods: baseline, faster-cache, free-init, free-init+faster-cache.
    #[arg(long, value_delimiter = ',', default_value = "baseline,faster-cache")]
    methods: Vec<String>,
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

fn fail(message: String) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

fn sampler_for(method: &str, base: SamplerConfig, renoise_sigma: f64) -> SamplerConfig {
    let free_init = FreeInitConfig {
        renoise_sigma,
        ..FreeInitConfig::default()
    };
    let sampler = match method {
        "baseline" => base,
        "faster-cache" => SamplerConfig {
            faster_cache: Some(FasterCacheConfig::default()),
            ..base
        },
        "free-init" => SamplerConfig {
            free_init: Some(free_init),
            ..base
        },
        "free-init+faster-cache" => SamplerConfig {
            faster_cache: Some(FasterCacheConfig::default()),
            free_init: Some(free_init),
            ..base
        },
        other => fail(format!(
            "--methods: baseline, faster-cache, free-init or free-init+faster-cache, got `{other}`"
        )),
    };
    sampler
        .check("bench_sampling")
        .unwrap_or_else(|e| fail(format!("{e} (--renoise-sigma)")));
    sampler
}

fn main() {
    allocator::keep_freed_memory();
    let args = <Args as clap::Parser>::parse();
    if !(1..=1024).contains(&args.clips) {
        fail(format!("--clips must be in 1..=1024, got {}", args.clips));
    }
    if args.methods.is_empty() {
        fail("--methods: at least one".into());
    }
    let device = Device::flex();
    let (model, config) = load_for_sampling(&args.run, &device, IfDamaged::Fail)
        .unwrap_or_else(|e| fail(format!("--run {}: {e}", args.run.display())));
    for m in &args.methods {
        sampler_for(m, config.sampler, args.renoise_sigma);
    }
    let data = config
        .data
        .open(
            config.clip,
            config.dataset_size,
            config.dataset_size,
            config.seed,
        )
        .unwrap_or_else(|e| fail(format!("the run's data: {e}")));
    let real: Vec<_> = (config.dataset_size..config.dataset_size + args.clips)
        .map(|i| data.generate(i))
        .collect();
    let labels: Vec<(usize, usize)> = real.iter().map(|r| (r.object, r.colour)).collect();
    let classifier = ObjectClassifier::for_set(&data, 2000);
    let g = config.clip;
    println!(
        "{} clips of {}×{}×{} from {}, sampler {:?}",
        args.clips,
        g.frames,
        g.height,
        g.width,
        args.run.display(),
        config.sampler
    );
    println!(
        "{:>13} | {:>8} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>7} {:>7} {:>7}",
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
    for method in &args.methods {
        let sampler = sampler_for(method, config.sampler, args.renoise_sigma);
        let start = Instant::now();
        let samples: Vec<Frames> = generate(&model, g, &labels, sampler, args.seed);
        let per_sample = start.elapsed().as_secs_f64() / args.clips as f64;
        let reference = *baseline_seconds.get_or_insert(per_sample);
        let m = measure(&samples, &labels, None, &classifier);
        println!(
            "{method:>13} | {per_sample:>8.3} {:>6.2}× | {:>6.3} {:>6.3} {:>6.3} {:>6.3} {:>7.3} {:>7.3} {:>7.3}",
            reference / per_sample,
            m.object_accuracy,
            m.colour_accuracy,
            m.shape_iou.unwrap_or(f64::NAN),
            m.single_object_rate,
            m.temporal_flickering,
            m.motion_smoothness,
            m.area_variation
        );
        rows.push(serde_json::json!({
            "method": method,
            "sampler": sampler,
            "seconds_per_sample": per_sample,
            "speed_vs_first": reference / per_sample,
            "metrics": m,
        }));
    }
    let report = serde_json::json!({
        "run": args.run,
        "clips": args.clips,
        "seed": args.seed,
        "methods": rows,
    });
    report::write_json(&args.out, &report);
}
