//! Long-video throughput: clip parallelism with dual-scope attention over ranks (threads of
//! this process or MPI processes) against full 3D attention over the whole video on one rank.
//!
//! ```text
//! cargo run --release --example bench_long_video -- [--frames 16,32,64,128,256]
//!     [--ranks 1,2,4,8] [--frames-per-clip 8] [--full-max-frames 128] [--repeats 2]
//!     [--out out/bench_long_video.json]
//! mpirun -np 4 -x RAYON_NUM_THREADS=1 target/release/examples/bench_long_video \
//!     --transport mpi --frames 64 --full-max-frames 0 --out …
//! ```
//! One denoising step of the tiny DiT (32×32 frames, batch 2 as under guidance, no autodiff)
//! per row: dual-scope clip parallelism (window ±2 latent frames, 4 global frames), each rank
//! stepping its own clips, and (threads only) the same model with full 3D attention over the
//! whole video up to `--full-max-frames`. Prints the slowest rank's seconds per step, the
//! share of it the ranks spend in collectives (sending and waiting), the bytes moved between
//! ranks per step, and the peak heap growth of this process (all ranks with threads; rank 0's
//! process under MPI). Under MPI the ranks are the job's processes and `--ranks` is ignored.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};

use burn_sparse_video::ctx_parallel::{ClipLayout, Communicator, DualScopeConfig};
use burn_sparse_video::dit::data::SplitMix;
use burn_sparse_video::dit::{
    ClipGroup, DitError, ForwardContext, VideoDit, VideoDitConfig, VideoDitInput,
};
use clap::Parser;

use fail::fail;
#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/fail.rs"]
mod fail;
#[path = "common/limits.rs"]
mod limits;
#[path = "common/measure.rs"]
mod measure;
#[path = "common/ranks.rs"]
mod ranks;
#[path = "common/report.rs"]
mod report;
use measure::{measure, peak_since, reset_peak};
use ranks::{Transport, on_ranks};

#[derive(Parser)]
#[command(
    about = "Long-video denoising steps: dual-scope clip parallelism over ranks against full attention"
)]
struct Args {
    /// Video lengths in frames (multiples of --frames-per-clip).
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    frames: Vec<usize>,
    /// Rank counts to run with `--transport threads`.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    ranks: Vec<usize>,
    /// What carries the messages between ranks.
    #[arg(long, value_enum, default_value_t = Transport::Threads)]
    transport: Transport,
    /// Frames per clip.
    #[arg(long, default_value_t = 8)]
    frames_per_clip: usize,
    /// Longest video run with full attention too (0 = none).
    #[arg(long, default_value_t = 128)]
    full_max_frames: usize,
    /// Timed steps per row (after one warm-up step).
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// JSON report.
    #[arg(long, default_value = "out/bench_long_video.json")]
    out: String,
}

/// Batch 2 (both guidance branches), 32×32 frames.
const BATCH: usize = 2;
const SIZE: usize = 32;

/// One row's measurements, as rank 0 reports them.
struct Row {
    ranks: usize,
    seconds: f64,
    comm_share: f64,
    bytes: u64,
    peak: usize,
}

/// Every rank steps its clips of a `frames`-frame video `1 + repeats` times; returns (on
/// rank 0) the slowest rank's median step, the ranks' mean share of it in collectives and
/// the bytes all ranks sent per step.
fn dual_scope_step(
    comm: &Communicator,
    model: &VideoDit,
    frames: usize,
    args: &Args,
) -> Result<Option<Row>, DitError> {
    let device = comm.device();
    let clips = frames / args.frames_per_clip;
    let layout = ClipLayout::uniform(clips, args.frames_per_clip, comm.world())?;
    let mine = layout.clips_of(comm.rank());
    let cond = model.embed_labels(Tensor::from_data(
        TensorData::new(vec![1i64, 4, 2, 5], [BATCH, 2]),
        device,
    ));
    // This rank's clips, one after another in time.
    let x = Tensor::cat(
        mine.map(|c| {
            SplitMix(c as u64).normal_tensor([BATCH, 3, layout.frames(c), SIZE, SIZE], device)
        })
        .collect(),
        2,
    );
    let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.7f32; BATCH], [BATCH]), device);
    let scope = DualScopeConfig::new();
    let ctx = ForwardContext::clips(
        ClipGroup {
            comm,
            layout: &layout,
            scope: &scope,
        },
        &[0.7; BATCH],
    );
    let step = || -> Result<(), DitError> {
        let input = VideoDitInput::new(x.clone(), sigma.clone(), cond.clone());
        model.forward(input, &ctx)?.into_data();
        Ok(())
    };
    step()?;
    reset_peak();
    comm.reset_stats();
    let mut times = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let start = Instant::now();
        step()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let peak = peak_since();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let stats = comm.stats();
    let nanos = |s: f64| (s * 1e9) as usize;
    let medians = comm.gather_sizes(nanos(median))?;
    let in_comm = comm.gather_sizes(nanos(stats.seconds / args.repeats as f64))?;
    let bytes: usize = comm.gather_sizes(stats.bytes as usize)?.iter().sum();
    let slowest = medians.iter().copied().max().unwrap_or(0) as f64 / 1e9;
    let share = in_comm
        .iter()
        .zip(&medians)
        .map(|(&c, &m)| c as f64 / m.max(1) as f64)
        .sum::<f64>()
        / comm.world() as f64;
    Ok((comm.rank() == 0).then_some(Row {
        ranks: comm.world(),
        seconds: slowest,
        comm_share: share,
        bytes: (bytes / args.repeats) as u64,
        peak,
    }))
}

fn main() {
    allocator::keep_freed_memory();
    let args = Args::parse();
    if args.frames_per_clip == 0 || args.repeats == 0 || args.ranks.contains(&0) {
        fail("--frames-per-clip, --repeats and every --ranks entry must be ≥ 1");
    }
    if let Some(f) = args
        .frames
        .iter()
        .find(|&&f| f == 0 || f % args.frames_per_clip != 0)
    {
        fail(format!(
            "--frames: {f} is not a positive multiple of --frames-per-clip {}",
            args.frames_per_clip
        ));
    }
    let longest = args.frames.iter().copied().max().unwrap_or(0);
    limits::check_fits(
        "--frames",
        &format!("a video of {longest} frames of {SIZE}×{SIZE}"),
        limits::tiny_dit_clip_bytes(longest, SIZE),
    );
    let device = Device::flex();
    device.seed(3);
    let model = VideoDitConfig::tiny().init(&device);
    let c = model.config().clone();
    let tokens_per_frame = (SIZE / c.patch[1]) * (SIZE / c.patch[2]);
    let worlds: Vec<usize> = match args.transport {
        Transport::Threads => args.ranks.clone(),
        Transport::Mpi => vec![0], // the job's size
    };
    let mut rows = Vec::new();
    let mut lead = true;
    for &frames in &args.frames {
        let clips = frames / args.frames_per_clip;
        let tokens = frames / c.patch[0] * tokens_per_frame;
        let full =
            (args.transport == Transport::Threads && frames <= args.full_max_frames).then(|| {
                let video = SplitMix(0).normal_tensor([BATCH, 3, frames, SIZE, SIZE], &device);
                let cond = model.embed_labels(Tensor::from_data(
                    TensorData::new(vec![1i64, 4, 2, 5], [BATCH, 2]),
                    &device,
                ));
                let sigma =
                    Tensor::<1>::from_data(TensorData::new(vec![0.7f32; BATCH], [BATCH]), &device);
                measure(&device, args.repeats, || {
                    let input = VideoDitInput::new(video.clone(), sigma.clone(), cond.clone());
                    model
                        .forward(input, &ForwardContext::whole())
                        .expect("shapes")
                        .into_data()
                })
            });
        for &world in worlds.iter().filter(|&&w| w <= clips) {
            // Every rank's own copy of the model: the weights are read-only here.
            let row = on_ranks(args.transport, world, &device, |comm| {
                if comm.world() > clips {
                    return Ok(None);
                }
                dual_scope_step(&comm, &model, frames, &args)
            })
            .unwrap_or_else(|e| {
                eprintln!("error: {e}");
                std::process::exit(1)
            });
            let Some(Some(row)) = row else {
                lead = row.is_some();
                continue;
            };
            let mib = |x: usize| x as f64 / (1 << 20) as f64;
            if rows.is_empty() {
                println!(
                    "device Flex, tiny DiT (d {}, depth {}, heads {}), {SIZE}×{SIZE} frames, batch {BATCH}, {}-frame clips, {:?} ranks",
                    c.d_model, c.depth, c.heads, args.frames_per_clip, args.transport
                );
                println!(
                    "| frames | tokens | ranks | dual-scope s/step | frames/s | in collectives | KiB between ranks | peak MiB | full attention s/step | peak MiB |"
                );
                println!("|---|---|---|---|---|---|---|---|---|---|");
            }
            let (fs, fp) = full.map_or(("-".to_string(), "-".to_string()), |(s, p)| {
                (format!("{s:.3}"), format!("{:.0}", mib(p)))
            });
            println!(
                "| {frames} | {tokens} | {} | {:.3} | {:.1} | {:.1}% | {:.0} | {:.0} | {fs} | {fp} |",
                row.ranks,
                row.seconds,
                frames as f64 / row.seconds,
                100.0 * row.comm_share,
                row.bytes as f64 / 1024.0,
                mib(row.peak)
            );
            rows.push(serde_json::json!({
                "frames": frames, "tokens": tokens, "ranks": row.ranks, "clips": clips,
                "dual_scope_s": row.seconds, "dual_scope_frames_per_s": frames as f64 / row.seconds, "share_in_collectives": row.comm_share,
                "bytes_between_ranks_per_step": row.bytes, "peak_heap_bytes": row.peak,
                "full_s": full.map(|x| x.0), "full_peak_bytes": full.map(|x| x.1),
            }));
        }
    }
    if !lead {
        return;
    }
    let threads = std::env::var("RAYON_NUM_THREADS").ok();
    let report = serde_json::json!({
        "device": "flex", "model": "tiny", "batch": BATCH, "frame_size": SIZE, "frames_per_clip": args.frames_per_clip,
        "transport": format!("{:?}", args.transport).to_lowercase(), "rayon_threads_per_rank": threads, "scope": DualScopeConfig::new(), "rows": rows,
    });
    report::write_json(&args.out, &report);
}
