//! Sparse vs dense attention on one device, side by side in one run.
//!
//! ```text
//! cargo run --release --example bench_attention -- [--device flex|ndarray|wgpu|vulkan|cuda]
//!     [--seq 1024,4096,16384] [--sparsity 0.5,0.8,0.9,0.95] [--head-dims 64,128]
//!     [--heads 8] [--group 32] [--rank 16] [--repeats 3] [--out out/bench_attention.json]
//! ```
//!
//! For each shape it times Burn's dense `module::attention` and our selection + sparse
//! attention, forward and forward+backward (autodiff), and prints the speedup, the ideal
//! `1/(1−s)`, effective GFLOP/s (work actually done: 4·S·K·D forward, 3.5× that for
//! forward+backward, the FlashAttention convention), selection as a share of the sparse
//! forward, and the peak heap memory of each (CPU backends; counted by this binary's
//! allocator). Dense runs whose score matrices would not fit `--dense-mem-gib` are skipped.

use burn::tensor::{Device, Distribution, Tensor, module::attention, ops::AttentionModuleOptions};
use burn_sparse_video::sparse_attn::{SelectionConfig, select_critical_keys, sparse_attention};

#[path = "common/measure.rs"]
mod measure;
use measure::measure;

struct Args {
    device: String,
    seqs: Vec<usize>,
    sparsities: Vec<f64>,
    head_dims: Vec<usize>,
    heads: usize,
    group: usize,
    rank: usize,
    repeats: usize,
    dense_mem_gib: f64,
    out: String,
}

fn parse_list<T: std::str::FromStr>(s: &str) -> Vec<T> {
    s.split(',').map(|x| x.trim().parse().unwrap_or_else(|_| panic!("bad list item `{x}`"))).collect()
}

fn parse_args() -> Args {
    let mut a = Args {
        device: "flex".into(),
        seqs: vec![1024, 4096, 16384],
        sparsities: vec![0.5, 0.8, 0.9, 0.95],
        head_dims: vec![64, 128],
        heads: 8,
        group: 32,
        rank: 16,
        repeats: 3,
        dense_mem_gib: 12.0,
        out: "out/bench_attention.json".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (flag, value) = (pair[0].as_str(), pair.get(1).map(String::as_str).unwrap_or_else(|| panic!("{} needs a value", pair[0])));
        match flag {
            "--device" => a.device = value.into(),
            "--seq" => a.seqs = parse_list(value),
            "--sparsity" => a.sparsities = parse_list(value),
            "--head-dims" => a.head_dims = parse_list(value),
            "--heads" => a.heads = value.parse().expect("--heads"),
            "--group" => a.group = value.parse().expect("--group"),
            "--rank" => a.rank = value.parse().expect("--rank"),
            "--repeats" => a.repeats = value.parse().expect("--repeats"),
            "--dense-mem-gib" => a.dense_mem_gib = value.parse().expect("--dense-mem-gib"),
            "--out" => a.out = value.into(),
            other => panic!("unknown flag {other}; see the doc comment at the top of bench_attention.rs"),
        }
    }
    a
}

fn device_named(name: &str) -> Device {
    match name {
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        other => panic!("device `{other}` is not compiled in (features: flex, ndarray, wgpu, vulkan, cuda)"),
    }
}

fn gflops(flops: f64, secs: f64) -> f64 {
    flops / secs / 1e9
}

fn main() {
    let args = parse_args();
    let device = device_named(&args.device);
    let normal = Distribution::Normal(0.0, 1.0);
    let mut rows = Vec::new();
    println!("device: {:?}, heads {}, group {}, rank {}, median of {}", device, args.heads, args.group, args.rank, args.repeats);
    println!(
        "{:>6} {:>4} {:>5} | {:>9} {:>9} {:>7} {:>6} | {:>9} {:>9} {:>7} | {:>7} {:>7} | {:>9} {:>9}",
        "S", "D", "s", "dense fwd", "sparse fw", "speedup", "ideal", "dense f+b", "sparse fb", "speedup",
        "GF/s fw", "GF/s fb", "select %", "mem ratio"
    );
    for &d in &args.head_dims {
        for &s in &args.seqs {
            let shape = [1, args.heads, s, d];
            let q = Tensor::<4>::random(shape, normal, &device);
            let k = Tensor::<4>::random(shape, normal, &device);
            let v = Tensor::<4>::random(shape, normal, &device);
            let w = Tensor::<4>::random(shape, normal, &device);
            let q_lr = q.clone().narrow(3, 0, args.rank);
            let k_lr = k.clone().narrow(3, 0, args.rank);
            let dense_flops = 4.0 * (args.heads * s * s * d) as f64;
            // Scores and probabilities of every head, f32, twice over for autodiff.
            let dense_bytes = (args.heads * s * s * 4) as f64 * 3.0;
            let dense_fits = dense_bytes / (1u64 << 30) as f64 <= args.dense_mem_gib;
            let opts = AttentionModuleOptions::default;
            // Burn's Flex forward streams over keys; only the autodiff path materialises scores.
            let dense_fwd = Some(()).map(|_| {
                measure(&device, args.repeats, || {
                    attention(q.clone(), k.clone(), v.clone(), None, None, opts())
                })
            });
            let dense_fb = dense_fits.then(|| {
                let (q, k, v, w) = (q.clone().autodiff().require_grad(), k.clone().autodiff().require_grad(), v.clone().autodiff().require_grad(), w.clone().autodiff());
                measure(&device, args.repeats, || {
                    (attention(q.clone(), k.clone(), v.clone(), None, None, opts()) * w.clone()).sum().backward()
                })
            });
            for &sparsity in &args.sparsities {
                let budget = ((s as f64 * (1.0 - sparsity)).round() as usize).clamp(1, s);
                let config = SelectionConfig::new(args.group, budget);
                let keys = select_critical_keys(q_lr.clone(), k_lr.clone(), config).unwrap();
                let (select_t, _) = measure(&device, args.repeats, || {
                    select_critical_keys(q_lr.clone(), k_lr.clone(), config).unwrap()
                });
                let (sparse_fwd_t, sparse_fwd_mem) = measure(&device, args.repeats, || {
                    sparse_attention(q.clone(), k.clone(), v.clone(), &keys, None).unwrap()
                });
                let (qa, ka, va, wa) = (q.clone().autodiff().require_grad(), k.clone().autodiff().require_grad(), v.clone().autodiff().require_grad(), w.clone().autodiff());
                let keys_ad = select_critical_keys(qa.clone().narrow(3, 0, args.rank), ka.clone().narrow(3, 0, args.rank), config).unwrap();
                let (sparse_fb_t, sparse_fb_mem) = measure(&device, args.repeats, || {
                    (sparse_attention(qa.clone(), ka.clone(), va.clone(), &keys_ad, None).unwrap() * wa.clone()).sum().backward()
                });
                let sparse_flops = 4.0 * (args.heads * s * budget * d) as f64;
                let sparse_total = sparse_fwd_t + select_t;
                let fmt_t = |x: Option<(f64, usize)>| x.map(|(t, _)| format!("{:.4}", t)).unwrap_or_else(|| "skipped".into());
                let speed = |dense: Option<(f64, usize)>, sparse: f64| dense.map(|(t, _)| format!("{:.2}x", t / sparse)).unwrap_or_else(|| "-".into());
                let mem_ratio = dense_fb.map(|(_, m)| format!("{:.3}", sparse_fb_mem as f64 / m.max(1) as f64)).unwrap_or_else(|| "-".into());
                println!(
                    "{:>6} {:>4} {:>5.2} | {:>9} {:>9.4} {:>7} {:>5.1}x | {:>9} {:>9.4} {:>7} | {:>7.1} {:>7.1} | {:>8.1}% {:>9}",
                    s, d, sparsity, fmt_t(dense_fwd), sparse_total, speed(dense_fwd, sparse_total), 1.0 / (1.0 - sparsity),
                    fmt_t(dense_fb), sparse_fb_t + select_t, speed(dense_fb, sparse_fb_t + select_t),
                    gflops(sparse_flops, sparse_fwd_t), gflops(3.5 * sparse_flops, sparse_fb_t),
                    100.0 * select_t / sparse_fwd_t, mem_ratio
                );
                rows.push(serde_json::json!({
                    "seq": s, "head_dim": d, "heads": args.heads, "group": args.group, "rank": args.rank,
                    "sparsity": sparsity, "budget": budget,
                    "dense_fwd_s": dense_fwd.map(|x| x.0), "dense_fwd_peak_bytes": dense_fwd.map(|x| x.1),
                    "dense_fwd_bwd_s": dense_fb.map(|x| x.0), "dense_fwd_bwd_peak_bytes": dense_fb.map(|x| x.1),
                    "select_s": select_t, "sparse_fwd_s": sparse_fwd_t, "sparse_fwd_peak_bytes": sparse_fwd_mem,
                    "sparse_fwd_bwd_s": sparse_fb_t, "sparse_fwd_bwd_peak_bytes": sparse_fb_mem,
                    "speedup_fwd": dense_fwd.map(|x| x.0 / sparse_total),
                    "speedup_fwd_bwd": dense_fb.map(|x| x.0 / (sparse_fb_t + select_t)),
                    "ideal_speedup": 1.0 / (1.0 - sparsity),
                    "dense_fwd_gflops": dense_fwd.map(|x| gflops(dense_flops, x.0)),
                    "dense_fwd_bwd_gflops": dense_fb.map(|x| gflops(3.5 * dense_flops, x.0)),
                    "sparse_fwd_gflops": gflops(sparse_flops, sparse_fwd_t),
                    "sparse_fwd_bwd_gflops": gflops(3.5 * sparse_flops, sparse_fb_t),
                    "select_share_of_sparse_fwd": select_t / sparse_fwd_t,
                }));
            }
        }
    }
    let report = serde_json::json!({ "device": format!("{device:?}"), "rows": rows });
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        std::fs::create_dir_all(dir).expect("create output folder");
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report).unwrap()).expect("write JSON");
    println!("wrote {}", args.out);
}
