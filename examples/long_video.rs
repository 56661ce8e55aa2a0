//! A video many times longer than the model was trained on, by clip parallelism with
//! dual-scope attention (Video-Infinity), from the main job's checkpoint.
//!
//! ```text
//! cargo run --release --example long_video -- [--out out/tiny] [--ranks 8] [--clips-per-rank 2]
//!     [--window 2] [--global-frames 4] [--scope-bias 10] [--switch-sigma 0.5]
//!     [--prompts circle:red,square:blue] [--steps 24] [--faster-cache] [--free-init 3] [--seed 7]
//!     [--clip-frames 128] [--online-sparse 0.9] [--time-attention] [--skip-independent]
//! mpirun -np 4 target/release/examples/long_video --transport mpi [--clips-per-rank 4] …
//! ```
//! Ranks are threads of this process on the CPU (Flex), or with `--transport mpi` (a build
//! with `--features mpi`) the processes of an MPI job, one rank each; rank 0 writes the
//! files. The video is cut into `ranks × clips-per-rank` clips of the training length; each
//! clip has its own noise and its prompt (the prompts are spread over time in order), so the
//! video is the same however the clips are spread. For comparison rank 0 also generates the
//! same clips one by one with no attention between them. With `--free-init`, FreeInit filters
//! the whole video between passes (every rank gathers it). With `--online-sparse`, each
//! clip's dual-scope attention searches its critical keys online; `--time-attention` times
//! each block's self-attention (dense, or online sparse) and reports it summed over the
//! ranks. Writes under `OUT/long_video/`:
//! `long_video.gif`, `side_by_side.gif` (dual-scope left, independent clips right),
//! `report.json`, `report.md`.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use burn_sparse_video::ctx_parallel::{ClipLayout, DualScopeConfig};
use burn_sparse_video::dit::ClipGroup;
use burn_sparse_video::dit::data::{COLOURS, COND_TOKENS, parse_label};
use burn_sparse_video::dit::media::{Frames, tile, upscale, write_gif};
use burn_sparse_video::dit::metrics::{
    clip_continuity, detect, dynamic_degree, motion_smoothness, temporal_flickering,
};
use burn_sparse_video::dit::sample::faster_cache::FasterCacheConfig;
use burn_sparse_video::dit::sample::free_init::FreeInitConfig;
use burn_sparse_video::dit::sample::long_video::{clip_noise, generate_long_with_stats};
use burn_sparse_video::dit::sample::online_sparse::{OnlineLayerStats, OnlineSparseConfig};
use burn_sparse_video::dit::sample::sample_euler;
use burn_sparse_video::dit::train::{IfDamaged, label_ids, load_for_sampling, write_atomically};
use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Generate a long video from the tiny DiT by clip parallelism with dual-scope attention"
)]
struct Args {
    /// Folder of the main job (its `checkpoints/latest`); results go to `OUT/long_video`.
    #[arg(long, default_value = "out/tiny")]
    out: PathBuf,
    /// What carries the messages between ranks.
    #[arg(long, value_enum, default_value_t = Transport::Threads)]
    transport: Transport,
    /// Ranks (threads) with `--transport threads`; an MPI job has as many as `mpirun -np`.
    #[arg(long, default_value_t = 8)]
    ranks: usize,
    /// Clips per rank (each as long as a training clip).
    #[arg(long, default_value_t = 2)]
    clips_per_rank: usize,
    /// Local window radius in latent (token) frames.
    #[arg(long, default_value_t = 2)]
    window: usize,
    /// Global frames (token frames) sampled evenly over the video.
    #[arg(long, default_value_t = 4)]
    global_frames: usize,
    /// Logit bias of the favoured scope (0 = none).
    #[arg(long, default_value_t = 10.0)]
    scope_bias: f64,
    /// Noise level where the favoured scope switches from global to local.
    #[arg(long, default_value_t = 0.5)]
    switch_sigma: f64,
    /// `object:colour` prompts, spread over the video in order.
    #[arg(long, default_value = "circle:red,square:blue")]
    prompts: String,
    /// Euler steps (default: the training run's sampler).
    #[arg(long)]
    steps: Option<usize>,
    /// FasterCache: reuse attention outputs and the guidance difference across steps.
    #[arg(long)]
    faster_cache: bool,
    /// FreeInit with this many sampling passes over the whole video (its defaults otherwise;
    /// the video's frames, height and width must be powers of two).
    #[arg(long)]
    free_init: Option<usize>,
    /// Frames per clip (default: the training clip's; a multiple of the frame patch): longer
    /// clips, more tokens in each clip's attention.
    #[arg(long)]
    clip_frames: Option<usize>,
    /// Online sparse attention skipping this share of each clip's keys (its defaults
    /// otherwise).
    #[arg(long)]
    online_sparse: Option<f64>,
    /// Time each block's self-attention (dense, or online sparse with `--online-sparse`).
    #[arg(long)]
    time_attention: bool,
    /// Skip generating the same clips one by one for comparison.
    #[arg(long)]
    skip_independent: bool,
    /// Noise seed; clip `c` draws from its own stream of it.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// When the newest checkpoint fails its manifest, load the newest intact one instead of
    /// stopping.
    #[arg(long)]
    use_intact: bool,
}

fn parse_prompt(pair: &str, classes: &[&str]) -> (usize, usize) {
    parse_label(pair, classes).unwrap_or_else(|e| fail(format!("--prompts: {e}")))
}

/// The network-free metrics of one long video.
fn metrics(video: &Frames, clip_starts: &[usize], frame_patch: usize) -> serde_json::Value {
    let continuity = clip_continuity(video, clip_starts, frame_patch);
    let detected = video
        .frames
        .iter()
        .filter(|f| detect(f, video.width).is_some())
        .count() as f64
        / video.len() as f64;
    serde_json::json!({
        "temporal_flickering": temporal_flickering(video),
        "motion_smoothness": motion_smoothness(video),
        "dynamic_degree": dynamic_degree(video),
        "boundary_change": continuity.across,
        "within_clip_change": continuity.within,
        "boundary_over_within": continuity.across / continuity.within.max(1e-9),
        "object_detected": detected,
    })
}

use fail::fail;
#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/device.rs"]
mod device;
#[path = "common/fail.rs"]
mod fail;
#[path = "common/ranks.rs"]
mod ranks;
use ranks::{Transport, on_ranks};

/// Bounds on the video's size (this example's; the library takes any).
const MAX_RANKS: usize = 1024;
const MAX_CLIPS_PER_RANK: usize = 64;
const MAX_CLIPS: usize = 256;

/// What rank 0 reports of the dual-scope generation.
struct Generated {
    video: Frames,
    ranks: usize,
    seconds: f64,
    bytes: u64,
    messages: u64,
    /// Each block's self-attention record, summed over the ranks (with `--online-sparse` or
    /// `--time-attention`).
    attention: Vec<OnlineLayerStats>,
}

fn main() {
    allocator::keep_freed_memory();
    // Everything runs on Flex.
    device::make_default("flex");
    let args = Args::parse();
    if args.ranks == 0 || args.clips_per_rank == 0 {
        fail("--ranks and --clips-per-rank must be ≥ 1");
    }
    // Every rank holds its clips' activations: bound the video before allocating it.
    if args.ranks > MAX_RANKS || args.clips_per_rank > MAX_CLIPS_PER_RANK {
        fail(format!(
            "--ranks must be at most {MAX_RANKS} and --clips-per-rank at most {MAX_CLIPS_PER_RANK}, got {} and {}",
            args.ranks, args.clips_per_rank
        ));
    }
    if !(0.0..=1.0).contains(&args.switch_sigma) {
        fail(format!(
            "--switch-sigma must be a noise level in [0, 1], got {}",
            args.switch_sigma
        ));
    }
    if !args.scope_bias.is_finite() {
        fail(format!(
            "--scope-bias must be finite, got {}",
            args.scope_bias
        ));
    }
    if args.steps == Some(0) {
        fail("--steps must be ≥ 1");
    }
    let device = Device::flex();
    let if_damaged = if args.use_intact {
        IfDamaged::UseNewestIntact
    } else {
        IfDamaged::Fail
    };
    let (model, config) = load_for_sampling(&args.out, &device, if_damaged)
        .unwrap_or_else(|e| fail(format!("{e}\n(run the main job first: scripts/main.sh)")));
    let clip = config.clip;
    let scope = DualScopeConfig::new()
        .with_window(args.window)
        .with_global_frames(args.global_frames)
        .with_scope_bias(args.scope_bias)
        .with_switch_sigma(args.switch_sigma);
    let mut sampler = config.sampler;
    if let Some(steps) = args.steps {
        sampler.steps = steps;
    }
    if args.faster_cache {
        sampler.faster_cache = Some(FasterCacheConfig::default());
    }
    sampler.online_sparse = match (args.online_sparse, args.time_attention) {
        (Some(sparsity), _) => Some(OnlineSparseConfig::new(sparsity)),
        (None, true) => Some(OnlineSparseConfig::dense_timed()),
        (None, false) => None,
    };
    let clip_frames = args.clip_frames.unwrap_or(clip.frames);
    if clip_frames == 0 || clip_frames % config.model.patch[0] != 0 {
        fail(format!(
            "--clip-frames must be a positive multiple of the frame patch ({}), got {clip_frames}",
            config.model.patch[0]
        ));
    }
    if let Some(iterations) = args.free_init {
        sampler.free_init = Some(FreeInitConfig {
            iterations,
            ..FreeInitConfig::default()
        });
    }
    sampler
        .check("long_video")
        .unwrap_or_else(|e| fail(format!("{e} (--steps, --free-init, --online-sparse)")));
    let prompts: Vec<(usize, usize)> = args
        .prompts
        .split(',')
        .map(|p| parse_prompt(p, config.data.classes()))
        .collect();
    // Every rank makes the same layout, prompts and noise from the same arguments.
    let clip_prompts = |clips: usize| -> Vec<(usize, usize)> {
        (0..clips)
            .map(|c| prompts[c * prompts.len() / clips])
            .collect()
    };
    // Each clip's conditioning and null conditioning.
    let conditioning = |clip_prompt: &[(usize, usize)]| -> (Vec<Tensor<3>>, Vec<Tensor<3>>) {
        let cond = clip_prompt
            .iter()
            .map(|&p| model.embed_labels(label_ids(&[p], &device)))
            .collect();
        let uncond = clip_prompt
            .iter()
            .map(|_| model.embed_labels(Tensor::zeros([1, COND_TOKENS], &device)))
            .collect();
        (cond, uncond)
    };
    let generated = on_ranks(args.transport, args.ranks, &device, |comm| {
        let ranks = comm.world();
        let clips = ranks * args.clips_per_rank;
        if clips > MAX_CLIPS {
            return Err(burn_sparse_video::sparse_attn::SparseAttnError {
                function: "long_video",
                argument: "--ranks × --clips-per-rank",
                expected: format!(
                    "at most {MAX_CLIPS} clips in all (every clip's activations stay in memory)"
                ),
                actual: clips.to_string(),
            }
            .into());
        }
        if prompts.len() > clips {
            return Err(burn_sparse_video::sparse_attn::SparseAttnError {
                function: "long_video",
                argument: "--prompts",
                expected: format!("at most one prompt per clip ({clips})"),
                actual: prompts.len().to_string(),
            }
            .into());
        }
        let layout = ClipLayout::uniform(clips, clip_frames, ranks)?;
        let (cond, uncond) = conditioning(&clip_prompts(clips));
        if comm.rank() == 0 {
            println!(
                "{} frames of {}×{} ({} clips of {clip_frames} frames; the training clips have {}) on {ranks} ranks ({:?}), {} clips each; window ±{} latent frames, {} global frames",
                layout.total_frames(),
                clip.height,
                clip.width,
                clips,
                clip.frames,
                args.transport,
                args.clips_per_rank,
                args.window,
                args.global_frames
            );
        }
        let start = Instant::now();
        let (video, attention) = generate_long_with_stats(
            &model,
            ClipGroup {
                comm: &comm,
                layout: &layout,
                scope: &scope,
            },
            [clip.height, clip.width],
            &cond,
            &uncond,
            sampler,
            args.seed,
        )?;
        let seconds = start.elapsed().as_secs_f64();
        let stats = comm.stats();
        let bytes: usize = comm.gather_sizes(stats.bytes as usize)?.iter().sum();
        let messages: usize = comm.gather_sizes(stats.messages as usize)?.iter().sum();
        Ok(video.map(|video| Generated {
            video,
            ranks,
            seconds,
            bytes: bytes as u64,
            messages: messages as u64,
            attention,
        }))
    });
    let Some(Generated {
        video,
        ranks,
        seconds: dual_seconds,
        bytes,
        messages,
        attention,
    }) = generated.unwrap_or_else(|e| fail(e)).flatten()
    else {
        return;
    };
    let clips = ranks * args.clips_per_rank;
    let layout = ClipLayout::uniform(clips, clip_frames, ranks).expect("made on every rank above");
    let clip_prompt = clip_prompts(clips);
    let (cond, uncond) = conditioning(&clip_prompt);
    let clip_starts: Vec<usize> = (0..clips).map(|c| layout.frame_offset(c)).collect();

    // The same clips with the same noise and prompts, each generated alone.
    let alone = (!args.skip_independent).then(|| {
        let start = Instant::now();
        let mut alone = Frames {
            width: clip.width,
            height: clip.height,
            frames: Vec::new(),
        };
        for c in 0..clips {
            let noise = clip_noise(
                args.seed,
                c,
                [1, 3, clip_frames, clip.height, clip.width],
                &device,
            );
            let x = sample_euler(&model, noise, cond[c].clone(), uncond[c].clone(), sampler)
                .unwrap_or_else(|e| fail(e));
            let pixels: Vec<f32> = x
                .into_data()
                .convert::<f32>()
                .try_to_vec()
                .expect("f32 video");
            alone
                .frames
                .extend(Frames::from_chw(&pixels, clip_frames, clip.height, clip.width).frames);
        }
        (alone, start.elapsed().as_secs_f64())
    });

    let dir = args.out.join("long_video");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| fail(format!("creating {}: {e}", dir.display())));
    let write = |name: &str, v: &Frames| {
        write_gif(&dir.join(name), v, 8).unwrap_or_else(|e| fail(format!("writing {name}: {e}")))
    };
    write("long_video.gif", &upscale(&video, 3));
    if let Some((alone, _)) = &alone {
        write(
            "side_by_side.gif",
            &tile(&[upscale(&video, 3), upscale(alone, 3)], 2),
        );
    }

    let frames = layout.total_frames() as f64;
    let report = serde_json::json!({
        "frames": layout.total_frames(), "height": clip.height, "width": clip.width,
        "training_clip_frames": clip.frames, "clip_frames": clip_frames, "ranks": ranks, "transport": format!("{:?}", args.transport).to_lowercase(), "clips": clips,
        "scope": { "window": args.window, "global_frames": args.global_frames, "scope_bias": args.scope_bias, "switch_sigma": args.switch_sigma },
        "sampler": sampler, "seed": args.seed,
        "prompts": clip_prompt.iter().map(|&(s, c)| format!("{}:{}", config.data.classes()[s], COLOURS[c].0)).collect::<Vec<_>>(),
        "dual_scope": { "seconds": dual_seconds, "frames_per_second": frames / dual_seconds, "bytes_between_ranks": bytes, "messages": messages, "metrics": metrics(&video, &clip_starts, config.model.patch[0]) },
        "independent_clips": alone.as_ref().map(|(alone, seconds)| serde_json::json!({ "seconds": seconds, "frames_per_second": frames / seconds, "metrics": metrics(alone, &clip_starts, config.model.patch[0]) })),
        "attention": (!attention.is_empty()).then(|| serde_json::json!({
            "seconds": attention.iter().map(|l| l.seconds).sum::<f64>(),
            "online_sparse": args.online_sparse,
            "layers": attention,
        })),
    });
    write_text(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(&report).expect("json"),
    );
    let row = |name: &str, key: &str| {
        let v = |which: &str| {
            report[which]["metrics"][key]
                .as_f64()
                .map_or("–".into(), |v| format!("{v:.3}"))
        };
        format!(
            "| {name} | {} | {} |\n",
            v("dual_scope"),
            v("independent_clips")
        )
    };
    let mut md = format!(
        "# Long video: {} frames from a model trained on {}-frame clips\n\n{} ranks × {} clips of {clip_frames} frames, window ±{} latent frames, {} global frames, scope bias {} switching at σ = {}; {} Euler steps, guidance {}.\n\n\
         Dual-scope: {:.1} s ({:.2} frames/s), {:.1} MiB between ranks. Independent clips: {}.\n\n| metric | dual-scope | independent clips |\n|---|---|---|\n",
        layout.total_frames(),
        clip.frames,
        ranks,
        args.clips_per_rank,
        args.window,
        args.global_frames,
        args.scope_bias,
        args.switch_sigma,
        sampler.steps,
        sampler.guidance,
        dual_seconds,
        frames / dual_seconds,
        bytes as f64 / (1 << 20) as f64,
        alone
            .as_ref()
            .map_or("skipped".into(), |(_, seconds)| format!("{seconds:.1} s"))
    );
    md += &row("temporal flickering (1 = steady)", "temporal_flickering");
    md += &row("motion smoothness (1 = linear)", "motion_smoothness");
    md += &row("dynamic degree (mean |Δframe|)", "dynamic_degree");
    md += &row("mean |Δframe| across clip boundaries", "boundary_change");
    md += &row(
        "mean |Δframe| within clips (at latent-frame steps)",
        "within_clip_change",
    );
    md += &row("boundary / within (1 = seamless)", "boundary_over_within");
    md += &row("object detected (share of frames)", "object_detected");
    if !attention.is_empty() {
        md += &format!(
            "\nSelf-attention ({}): {:.2} s summed over the ranks and blocks.\n\n| block | dense | searches | sparse | sparsity | recall |\n|---|---|---|---|---|---|\n",
            args.online_sparse
                .map_or("dense, timed".into(), |s| format!("online sparse at {s}")),
            attention.iter().map(|l| l.seconds).sum::<f64>()
        );
        for (i, l) in attention.iter().enumerate() {
            let recall = l.recall.first().map_or("–".into(), |r| format!("{r:.3}"));
            md += &format!(
                "| {i} | {} | {} | {} | {:.3} | {recall} |\n",
                l.dense, l.searches, l.sparse, l.sparsity
            );
        }
    }
    md += match alone {
        Some(_) => {
            "\nFiles: long_video.gif, side_by_side.gif (dual-scope left, independent clips right), report.json.\n"
        }
        None => "\nFiles: long_video.gif, report.json.\n",
    };
    write_text(&dir.join("report.md"), &md);
    println!("{md}");
}

/// Writes `text` to `path` whole or not at all; exits naming the file when it cannot.
fn write_text(path: &std::path::Path, text: &str) {
    write_atomically(path, |file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
}
