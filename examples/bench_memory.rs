//! Training memory of the video DiT: the longest clip one training step fits in a memory
//! budget, and peak memory and step time at fixed lengths, for dense and DSV attention, each
//! with and without per-block activation checkpointing.
//!
//! ```text
//! cargo run --release --example bench_memory -- [--budget-gib 20] [--size 32]
//!     [--frames 32,64,128] [--max-frames 2048] [--sparsity 0.9]
//!     [--variants dense,dense-ckpt,dsv,dsv-ckpt] [--ranks 1,2,4] [--out out/bench_memory.json]
//! ```
//!
//! Every measurement is a fresh process (this program with `--probe`): it builds the tiny
//! DiT's trainer (width 128, depth 4, 4 heads; batch 1, one replica) on `frames × size ×
//! size` clips, runs a training step and reports its peak resident memory (the kernel's
//! high-water mark, `VmHWM`), so nothing is estimated. DSV runs in its sparse stage at
//! `--sparsity` (budget (1 − s)·N keys per head) and takes two steps: the first profiles
//! (every 128th query row against all keys: the profiler's and the predictor loss's
//! `S/128 × S` tensors are part of its cost), the second does not; their peaks are reported
//! apart (the high-water mark is reset between them) and the larger counts. The last step is
//! timed.
//!
//! A probe's address space is capped a little above the budget, so a clip far too long fails
//! its allocation instead of pushing the machine into swap; that counts as not fitting. The
//! search doubles the frames from the longest fixed length while a step fits, up to
//! `--max-frames` (a sparse step at 64k tokens takes minutes on two cores), then bisects.
//!
//! `--ranks N` (N > 1) splits every clip along time over N processes of an MPI job (`mpirun`
//! from OpenMPI; a build with `--features mpi`): sequence-parallel training
//! (`Trainer::with_sequence_parallel`), where dense attention runs as a ring and DSV's layer
//! is sharded. The budget and the address-space cap then hold for each process, and the
//! report gives every rank's peak; the machine's cores are shared among the processes.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use burn_sparse_video::dit::data::ClipShape;
use burn_sparse_video::dit::train::{TrainConfig, Trainer};
use burn_sparse_video::dit::{AttentionKind, DsvPolicy, VideoDitConfig};
use burn_sparse_video::sparse_attn::dsv::{DsvHost, DsvStage};

use fail::fail;
#[path = "common/fail.rs"]
mod fail;
#[path = "common/limits.rs"]
mod limits;
#[path = "common/ranks.rs"]
mod ranks;
#[path = "common/report.rs"]
mod report;

const GIB: f64 = (1u64 << 30) as f64;

#[derive(clap::Parser)]
#[command(about = "Longest trainable clip in a memory budget, dense against DSV, ± checkpointing")]
struct Args {
    /// Peak resident memory allowed to one training process, GiB.
    #[arg(long, default_value_t = 20.0)]
    budget_gib: f64,
    /// Frame height and width (a multiple of the 4-pixel patch).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Fixed clip lengths (frames) measured for every variant.
    #[arg(long, value_delimiter = ',', default_value = "32,64,128")]
    frames: Vec<usize>,
    /// Longest clip the search tries.
    #[arg(long, default_value_t = 2048)]
    max_frames: usize,
    /// DSV's sparsity, in [0, 1).
    #[arg(long, default_value_t = 0.9)]
    sparsity: f64,
    /// Variants to measure: dense, dense-ckpt, dsv, dsv-ckpt.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dense,dense-ckpt,dsv,dsv-ckpt"
    )]
    variants: Vec<String>,
    /// Processes each clip is split over (sequence parallelism; N > 1 runs under `mpirun`).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    ranks: Vec<usize>,
    /// Skip the search for the longest clip (fixed lengths only).
    #[arg(long)]
    no_search: bool,
    /// JSON report.
    #[arg(long, default_value = "out/bench_memory.json")]
    out: String,
    /// Internal: measure one training step of this many frames and print it as JSON.
    #[arg(long, hide = true)]
    probe: Option<usize>,
    /// Internal: the variant a probe measures.
    #[arg(long, hide = true, default_value = "dense")]
    variant: String,
    /// Internal: the processes of a probe's MPI job.
    #[arg(long, hide = true, default_value_t = 1)]
    probe_ranks: usize,
}

/// What one probe measured.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Probe {
    frames: usize,
    tokens: usize,
    /// Processes the clip was split over.
    ranks: usize,
    /// Whether the step ran within the address-space cap.
    ran: bool,
    /// Peak resident memory over both steps (the largest rank's).
    peak_gib: Option<f64>,
    /// Peak of the first step alone (DSV profiles there) and of the second alone.
    step_peaks_gib: Option<[f64; 2]>,
    /// Every rank's peak over both steps.
    rank_peaks_gib: Option<Vec<f64>>,
    /// The last step's time (the slowest rank's).
    step_seconds: Option<f64>,
}

impl Probe {
    /// A probe whose step did not run within the cap.
    fn failed(frames: usize, size: usize, ranks: usize) -> Self {
        Self {
            frames,
            tokens: tokens(frames, size),
            ranks,
            ran: false,
            peak_gib: None,
            step_peaks_gib: None,
            rank_peaks_gib: None,
            step_seconds: None,
        }
    }
}

fn tokens(frames: usize, size: usize) -> usize {
    let [pt, ph, pw] = VideoDitConfig::tiny().patch;
    (frames / pt) * (size / ph) * (size / pw)
}

fn variant_config(variant: &str, sparsity: f64) -> (AttentionKind, bool) {
    let dsv = AttentionKind::Dsv(
        DsvPolicy::new()
            .with_min_sparse_len(0)
            .with_sparsity_threshold(0.0)
            .with_min_budget_fraction(1.0 - sparsity)
            .with_max_budget_fraction(1.0 - sparsity)
            .with_sample_stride(128)
            .with_profile_every(1000),
    );
    match variant {
        "dense" => (AttentionKind::Dense, false),
        "dense-ckpt" => (AttentionKind::Dense, true),
        "dsv" => (dsv, false),
        "dsv-ckpt" => (dsv, true),
        other => fail(format!(
            "--variants: dense, dense-ckpt, dsv or dsv-ckpt, got `{other}`"
        )),
    }
}

/// This process's peak resident memory, GiB (Linux's `VmHWM`).
fn peak_resident_gib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib * 1024.0 / GIB
}

/// The probe itself: the training step(s), the last timed; under `mpirun` every rank trains
/// its shard and rank 0 reports.
fn probe(args: &Args, frames: usize) {
    let (attention, checkpointing) = variant_config(&args.variant, args.sparsity);
    let mut config =
        TrainConfig::tiny(VideoDitConfig::tiny().with_attention(attention)).with_steps(100);
    config.clip = ClipShape {
        frames,
        height: args.size,
        width: args.size,
    };
    config.batch_size = 1;
    config.replicas = 1;
    config.dataset_size = 2;
    config.checkpointing = checkpointing;
    let device = Device::flex();
    let trainer = || Trainer::new(config.clone(), &device).expect("bouncing shapes need no files");
    let report = if args.probe_ranks <= 1 {
        let [first, last, seconds] = measure_steps(&mut trainer());
        Some(probe_report(frames, args.size, &[[first, last, seconds]]))
    } else {
        let measured = ranks::on_ranks(ranks::Transport::Mpi, 1, &device, |comm| {
            let mut trainer = trainer().with_sequence_parallel(comm)?;
            let own = measure_steps(&mut trainer);
            let comm = trainer
                .parallelism()
                .communicator()
                .expect("a sequence-parallel group");
            let all = comm.all_gather(Tensor::<1>::from_floats(own, comm.device()), 0)?;
            let all: Vec<f64> = all
                .into_data()
                .convert::<f64>()
                .try_to_vec()
                .expect("f64 peaks");
            Ok(probe_report(
                frames,
                args.size,
                &all.chunks_exact(3)
                    .map(|c| [c[0], c[1], c[2]])
                    .collect::<Vec<_>>(),
            ))
        });
        measured.unwrap_or_else(|e| fail(e))
    };
    if let Some(report) = report {
        println!(
            "{}",
            serde_json::to_string(&report).expect("a probe serialises")
        );
    }
}

/// This process's training steps: the first step's peak (0 when one step is measured), the
/// last's, and the last step's seconds. DSV profiles on its first step and attends sparse
/// from its second: both count. A dense model's steps are alike, so one is measured.
fn measure_steps(trainer: &mut Trainer) -> [f64; 3] {
    let dsv = !trainer.model().dsv_layers().is_empty();
    trainer.set_dsv_stage(DsvStage::Sparse);
    let first = dsv.then(|| {
        trainer.train_step();
        let peak = peak_resident_gib();
        // "5" resets the high-water mark, so the second step's peak is its own.
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        peak
    });
    let start = Instant::now();
    trainer.train_step();
    let seconds = start.elapsed().as_secs_f64();
    [first.unwrap_or(0.0), peak_resident_gib(), seconds]
}

/// The report of one probe from every rank's `[first peak, last peak, seconds]`.
fn probe_report(frames: usize, size: usize, ranks: &[[f64; 3]]) -> Probe {
    let max = |i: usize| ranks.iter().map(|r| r[i]).fold(0.0, f64::max);
    let (first, last) = (max(0), max(1));
    Probe {
        frames,
        tokens: tokens(frames, size),
        ranks: ranks.len(),
        ran: true,
        peak_gib: Some(first.max(last)),
        step_peaks_gib: (first > 0.0).then_some([first, last]),
        rank_peaks_gib: Some(ranks.iter().map(|r| r[0].max(r[1])).collect()),
        step_seconds: Some(max(2)),
    }
}

/// Runs one probe in a fresh process whose address space is capped at `cap_gib`.
fn run_probe(args: &Args, variant: &str, ranks: usize, frames: usize, cap_gib: f64) -> Probe {
    let exe = std::env::current_exe().expect("this program's path");
    let cap = (cap_gib * GIB) as u64;
    let mut command = match ranks {
        1 => Command::new(&exe),
        _ => {
            // The cores are shared among the ranks.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let mut mpirun = Command::new("mpirun");
            mpirun
                .args([
                    "--oversubscribe",
                    "--allow-run-as-root",
                    "--bind-to",
                    "none",
                ])
                .args(["-np", &ranks.to_string(), "-x", "RAYON_NUM_THREADS"])
                .env("RAYON_NUM_THREADS", (cores / ranks).max(1).to_string())
                .arg(&exe);
            mpirun
        }
    };
    command.args([
        "--probe",
        &frames.to_string(),
        "--variant",
        variant,
        "--size",
        &args.size.to_string(),
        "--sparsity",
        &args.sparsity.to_string(),
        "--probe-ranks",
        &ranks.to_string(),
    ]);
    // SAFETY: setrlimit between fork and exec touches only the child's own limits.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let limit = libc::rlimit {
                rlim_cur: cap,
                rlim_max: cap,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap_or_else(|e| {
        fail(format!(
            "the probe does not start ({e}); --ranks > 1 needs mpirun"
        ))
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Probe>(l).ok())
    {
        Some(probe) if output.status.success() => probe,
        _ => Probe::failed(frames, args.size, ranks),
    }
}

fn fits(probe: &Probe, budget: f64) -> bool {
    probe.ran && probe.peak_gib.is_some_and(|p| p <= budget)
}

fn show(variant: &str, p: &Probe, budget: f64) {
    let status = match (p.ran, p.peak_gib) {
        (true, Some(peak)) if peak <= budget => format!("{peak:6.2} GiB"),
        (true, Some(peak)) => format!("{peak:6.2} GiB (over)"),
        _ => "allocation failed (over)".to_string(),
    };
    let per_rank = match &p.rank_peaks_gib {
        Some(peaks) if p.ranks > 1 => format!(
            " (ranks: {})",
            peaks
                .iter()
                .map(|g| format!("{g:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    };
    println!(
        "{variant:>10} × {} {:>6} frames {:>7} tokens: {status}{per_rank}{}",
        p.ranks,
        p.frames,
        p.tokens,
        p.step_seconds
            .map(|s| format!(", {s:.2} s/step"))
            .unwrap_or_default()
    );
    let _ = std::io::stdout().flush();
}

/// Doubles from `start` frames while a step fits, then bisects until the longest clip that
/// fits and the shortest that does not are within a quarter of the former (a dense probe
/// near the limit takes minutes on two cores). `start` has been measured already.
fn longest_clip(
    args: &Args,
    variant: &str,
    ranks: usize,
    start: Probe,
    cap: f64,
) -> (usize, Vec<Probe>) {
    let budget = args.budget_gib;
    let step = VideoDitConfig::tiny().patch[0];
    let mut probes = Vec::new();
    let mut frames = start.frames;
    let mut known = Some(start);
    let mut measure = |frames: usize| {
        let p = match known.take() {
            Some(p) if p.frames == frames => p,
            _ => {
                let p = run_probe(args, variant, ranks, frames, cap);
                show(variant, &p, budget);
                p
            }
        };
        let ok = fits(&p, budget);
        probes.push(p);
        ok
    };
    let (mut good, mut bad) = (0, None);
    while frames <= args.max_frames {
        if measure(frames) {
            good = frames;
            frames *= 2;
        } else {
            bad = Some(frames);
            break;
        }
    }
    let Some(mut bad) = bad else {
        return (good, probes);
    };
    while bad - good > step.max(good / 4) {
        let mid = (good + bad) / 2 / step * step;
        if mid == good {
            break;
        }
        if measure(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    (good, probes)
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    if args.size == 0 || args.size % 4 != 0 {
        fail(format!(
            "--size: a positive multiple of 4, got {}",
            args.size
        ));
    }
    if !(0.0..1.0).contains(&args.sparsity) {
        fail(format!(
            "--sparsity must be in [0, 1), got {}",
            args.sparsity
        ));
    }
    if let Some(frames) = args.probe {
        if frames == 0 || frames % 2 != 0 {
            fail(format!(
                "--probe: a positive multiple of 2 frames, got {frames}"
            ));
        }
        probe(&args, frames);
        return;
    }
    if !(args.budget_gib > 0.0 && args.budget_gib.is_finite()) {
        fail(format!(
            "--budget-gib must be a positive number, got {}",
            args.budget_gib
        ));
    }
    if args.frames.is_empty() || args.frames.iter().any(|&f| f == 0 || f % 2 != 0) {
        fail(format!(
            "--frames: one or more positive multiples of 2, got {:?}",
            args.frames
        ));
    }
    let longest_fixed = args.frames.iter().copied().max().unwrap_or(0);
    if !args.no_search && args.max_frames < longest_fixed {
        fail(format!(
            "--max-frames must be at least the longest --frames ({longest_fixed}) for the search \
             to start, got {} (or pass --no-search)",
            args.max_frames
        ));
    }
    let longest = args.max_frames.max(longest_fixed);
    limits::check_size(
        "--max-frames",
        &format!("a clip of {longest} frames of {0}×{0}", args.size),
        limits::tiny_dit_clip_bytes(longest, args.size),
    );
    for v in &args.variants {
        variant_config(v, args.sparsity);
    }
    let frame_patch = VideoDitConfig::tiny().patch[0];
    let shortest = args.frames.iter().copied().min().unwrap_or(0);
    if args
        .ranks
        .iter()
        .any(|&r| r == 0 || shortest / frame_patch < r)
    {
        fail(format!(
            "--ranks: each between 1 and the shortest clip's {} latent frames, got {:?}",
            shortest / frame_patch,
            args.ranks
        ));
    }
    // Room for the allocator's and threads' address space beyond the resident set.
    let cap = args.budget_gib + 1.5;
    println!(
        "tiny DiT (width 128, depth 4, 4 heads), batch 1, {0}×{0} frames, DSV at sparsity {1}; budget {2} GiB peak resident per process",
        args.size, args.sparsity, args.budget_gib
    );
    let mut fixed = Vec::new();
    let mut longest_fixed = Vec::new();
    for &r in &args.ranks {
        for v in &args.variants {
            let mut longest: Option<Probe> = None;
            for &f in &args.frames {
                let p = run_probe(&args, v, r, f, cap);
                show(v, &p, args.budget_gib);
                fixed.push(serde_json::json!({ "variant": v, "ranks": r, "probe": p }));
                if longest.as_ref().is_none_or(|l| l.frames < p.frames) {
                    longest = Some(p);
                }
            }
            longest_fixed.push((v, r, longest.expect("--frames is not empty")));
        }
    }
    let mut longest = Vec::new();
    if !args.no_search {
        for (v, r, start) in longest_fixed {
            let (frames, probes) = longest_clip(&args, v, r, start, cap);
            println!(
                "{v:>10} × {r}: longest clip {frames} frames = {} tokens",
                tokens(frames, args.size)
            );
            longest.push(serde_json::json!({
                "variant": v,
                "ranks": r,
                "frames": frames,
                "tokens": tokens(frames, args.size),
                "probes": probes,
            }));
        }
    }
    let report = serde_json::json!({
        "model": "tiny (width 128, depth 4, 4 heads, patches 2x4x4)",
        "batch": 1,
        "size": args.size,
        "sparsity": args.sparsity,
        "budget_gib": args.budget_gib,
        "budget_per": "process",
        "ranks": args.ranks,
        "fixed": fixed,
        "longest": longest,
    });
    report::write_json(&args.out, &report);
}
