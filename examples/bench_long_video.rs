//! Long-video throughput and memory: clip parallelism with dual-scope attention against full
//! 3D attention over the whole video, side by side on one device.
//!
//! ```text
//! cargo run --release --example bench_long_video -- [--frames 16,32,64,128,256]
//!     [--ranks 1,2,4,8] [--frames-per-clip 8] [--full-max-frames 128] [--repeats 2]
//!     [--out out/bench_long_video.json]
//! ```
//! One denoising step of the tiny DiT (32×32 frames, batch 2 as under guidance, no autodiff)
//! per row: dual-scope clip parallelism over virtual ranks (window ±2 latent frames, 4 global
//! frames), and the same model with full 3D attention over the whole video up to
//! `--full-max-frames`. Prints frames/s, the process's peak heap growth (all virtual ranks
//! together, counted by this binary's allocator), and the bytes moved between ranks.

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use burn_sparse_video::ctx_parallel::{ClipLayout, DeviceGroup, DualScopeConfig};
use burn_sparse_video::dit::VideoDitConfig;

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/measure.rs"]
mod measure;
use measure::measure;

fn list(text: &str) -> Vec<usize> {
    text.split(',').map(|x| x.trim().parse().unwrap_or_else(|_| panic!("expected a list of integers, got `{text}`"))).collect()
}

fn main() {
    allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string());
    let lengths = list(&arg("--frames", "16,32,64,128,256"));
    let ranks = list(&arg("--ranks", "1,2,4,8"));
    let per_clip: usize = arg("--frames-per-clip", "8").parse().expect("--frames-per-clip");
    let full_max: usize = arg("--full-max-frames", "128").parse().expect("--full-max-frames");
    let repeats: usize = arg("--repeats", "2").parse().expect("--repeats");
    let out = arg("--out", "out/bench_long_video.json");

    let device = Device::flex();
    device.seed(3);
    let model = VideoDitConfig::tiny().init(&device);
    let c = model.config().clone();
    let scope = DualScopeConfig::new();
    let (b, size) = (2, 32);
    let tokens_per_frame = (size / c.patch[1]) * (size / c.patch[2]);
    let cond = model.embed_labels(Tensor::from_data(TensorData::new(vec![1i64, 4, 2, 5], [2, 2]), &device));
    let sigmas = [0.7, 0.7];
    let sigma = Tensor::<1>::from_data(TensorData::new(vec![0.7f32; 2], [2]), &device);

    println!("device Flex, tiny DiT (d {}, depth {}, heads {}), {size}×{size} frames, batch {b}, {per_clip}-frame clips", c.d_model, c.depth, c.heads);
    println!("| frames | tokens | ranks | dual-scope s/step | frames/s | peak MiB | MiB between ranks | full attention s/step | frames/s | peak MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for &frames in &lengths {
        let clips = frames / per_clip;
        assert!(clips >= 1 && frames % per_clip == 0, "--frames: {frames} is not a multiple of --frames-per-clip {per_clip}");
        let video = Tensor::<5>::random([b, 3, frames, size, size], Distribution::Normal(0.0, 1.0), &device);
        let tokens = frames / c.patch[0] * tokens_per_frame;
        let full = (frames <= full_max).then(|| measure(&device, repeats, || {
            model.forward(video.clone(), sigma.clone(), cond.clone()).expect("shapes").into_data();
        }));
        for &world in ranks.iter().filter(|&&r| r <= clips) {
            let layout = ClipLayout::uniform(clips, per_clip, world).expect("layout");
            let group = DeviceGroup::virtual_ranks(&device, world).expect("group");
            let parts: Vec<Tensor<5>> = (0..clips).map(|i| video.clone().narrow(2, layout.frame_offset(i), per_clip)).collect();
            let step = || {
                for v in model.forward_clips(&group, &layout, parts.clone(), &sigmas, vec![cond.clone(); clips], None, &scope).expect("shapes") {
                    v.into_data();
                }
            };
            let (seconds, peak) = measure(&device, repeats, step);
            group.reset_stats();
            step();
            let bytes = group.stats().bytes;
            let mib = |x: usize| x as f64 / (1 << 20) as f64;
            let (fs, fp) = full.map_or(("-".to_string(), "-".to_string()), |(s, p)| (format!("{s:.3}"), format!("{:.0}", mib(p))));
            let ffps = full.map_or("-".to_string(), |(s, _)| format!("{:.1}", frames as f64 / s));
            println!("| {frames} | {tokens} | {world} | {seconds:.3} | {:.1} | {:.0} | {:.1} | {fs} | {ffps} | {fp} |", frames as f64 / seconds, mib(peak), bytes as f64 / (1 << 20) as f64);
            rows.push(serde_json::json!({
                "frames": frames, "tokens": tokens, "ranks": world, "clips": clips,
                "dual_scope_s": seconds, "dual_scope_frames_per_s": frames as f64 / seconds, "dual_scope_peak_bytes": peak, "bytes_between_ranks": bytes,
                "full_s": full.map(|x| x.0), "full_peak_bytes": full.map(|x| x.1),
            }));
        }
    }
    let report = serde_json::json!({ "device": "flex", "model": "tiny", "batch": b, "frame_size": size, "frames_per_clip": per_clip, "scope": scope, "rows": rows });
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("creating the output folder");
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("json")).expect("writing the JSON report");
    println!("wrote {out}");
}
