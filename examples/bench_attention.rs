//! Sparse vs dense attention on one device, side by side in one run.
//!
//! ```text
//! cargo run --release --example bench_attention -- [--device flex|ndarray|wgpu|vulkan|cuda]
//!     [--seq 1024,4096,16384] [--sparsity 0.5,0.8,0.9,0.95] [--head-dims 64,128]
//!     [--heads 8] [--group 32] [--rank 16] [--repeats 3] [--dense-mem-gib 12]
//!     [--skip-dense true] [--dtype f32|tf32|f16|bf16] [--our-dense false] [--key-block 1]
//!     [--peer out/peer_attention.json] [--out out/bench_attention.json]
//! ```
//!
//! For each shape it times dense attention and our selection + sparse attention, forward and
//! forward+backward (autodiff). Dense is the faster of Burn's fused `module::attention` (`f`
//! in the table; first checked on the last 128 query rows against the matmul form, and
//! dropped if it disagrees) and the plain matmul-softmax-matmul form (`m`; run where its
//! score matrices fit `--dense-mem-gib`). It prints the speedup, the ideal
//! `1/(1−s)`, effective GFLOP/s (work actually done: 4·S·K·D forward, 3.5× that for
//! forward+backward, the FlashAttention convention), selection as a share of the sparse
//! forward, and the peak heap memory of each (CPU backends; counted by this binary's
//! allocator). Dense runs whose score matrices would not fit `--dense-mem-gib` are skipped.
//! Our own dense path (`flash_attention`: every key selected, linear memory) is timed too,
//! forward and forward+backward, and sparse forward+backward is compared with it (`vs ours`).
//!
//! `--key-block b` selects blocks of `b` keys (FlexAttention's and VSA's setting) instead of
//! single keys. `--peer FILE` reads PyTorch's timings of the same shapes
//! (`scripts/peer/attention.py`: dense SDPA, FlexAttention with a block mask of the same
//! sparsity) and prints our forward (selection included) against FlexAttention's and our
//! forward+backward against SDPA's, also into the JSON.

use burn::tensor::DType;
use burn::tensor::{
    Distribution, Tensor, activation::softmax, module::attention, ops::AttentionModuleOptions,
};
use burn_sparse_video::sparse_attn::{
    SelectionConfig, flash_attention, select_critical_keys, sparse_attention,
};

use fail::fail;
#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/device.rs"]
mod device;
#[path = "common/fail.rs"]
mod fail;
#[path = "common/limits.rs"]
mod limits;
#[path = "common/measure.rs"]
mod measure;
#[path = "common/report.rs"]
mod report;
use burn_sparse_video::sparse_attn::{F32Precision, SparseAttentionOptions};
use device::device_named;
use measure::measure;

#[derive(clap::Parser)]
#[command(about = "Sparse attention against Burn's dense attention, forward and forward+backward")]
struct Args {
    /// Device (flex, ndarray, wgpu, vulkan, cuda; each but flex needs its cargo feature).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Sequence lengths.
    #[arg(long = "seq", value_delimiter = ',', default_value = "1024,4096,16384")]
    seqs: Vec<usize>,
    /// Sparsities: shares of keys each query group skips, in [0, 1).
    #[arg(
        long = "sparsity",
        value_delimiter = ',',
        default_value = "0.5,0.8,0.9,0.95"
    )]
    sparsities: Vec<f64>,
    /// Head dimensions.
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    head_dims: Vec<usize>,
    /// Heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Queries per selection group.
    #[arg(long, default_value_t = 32)]
    group: usize,
    /// Width of the low-rank selection inputs.
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// Timed repeats (median) after a warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Largest dense score buffer to attempt, GiB.
    #[arg(long, default_value_t = 12.0)]
    dense_mem_gib: f64,
    /// Time only our kernels (profiling them); the table then has no speedups.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    skip_dense: bool,
    /// Input dtype of q, k, v and the selection inputs (f32, f16 or bf16; tf32: f32 inputs
    /// whose sparse attention multiplies on TF32 tensor cores where the device has them).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Also time our dense path (`flash_attention`), forward and forward+backward.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    our_dense: bool,
    /// Keys per selected unit (1: single keys, DSV's setting).
    #[arg(long, default_value_t = 1)]
    key_block: usize,
    /// PyTorch's timings of the same shapes (`scripts/peer/attention.py`'s JSON).
    #[arg(long)]
    peer: Option<String>,
    /// JSON report.
    #[arg(long, default_value = "out/bench_attention.json")]
    out: String,
}

/// The `--dtype` flag as the inputs' dtype and how sparse attention multiplies f32.
fn dtype_named(name: &str) -> Option<(DType, F32Precision)> {
    match name {
        "f32" => Some((DType::F32, F32Precision::Exact)),
        "tf32" => Some((DType::F32, F32Precision::Tf32)),
        "f16" => Some((DType::F16, F32Precision::Exact)),
        "bf16" => Some((DType::BF16, F32Precision::Exact)),
        _ => None,
    }
}

/// The command line, checked: every value in range, or an error naming the flag.
fn parse_args() -> Args {
    let a = <Args as clap::Parser>::parse();
    if a.seqs.is_empty() || a.seqs.contains(&0) {
        fail(format!("--seq: lengths must be ≥ 1, got {:?}", a.seqs));
    }
    if let Some(s) = a.sparsities.iter().find(|s| !(0.0..1.0).contains(*s)) {
        fail(format!("--sparsity: each must be in [0, 1), got {s}"));
    }
    if a.head_dims.is_empty() || a.head_dims.iter().any(|&d| d < a.rank) {
        fail(format!(
            "--head-dims: each must be ≥ --rank ({}), got {:?}",
            a.rank, a.head_dims
        ));
    }
    for (name, v) in [
        ("--heads", a.heads),
        ("--group", a.group),
        ("--rank", a.rank),
        ("--repeats", a.repeats),
        ("--key-block", a.key_block),
    ] {
        if v == 0 {
            fail(format!("{name} must be ≥ 1"));
        }
    }
    if dtype_named(&a.dtype).is_none() {
        fail(format!(
            "--dtype: f32, tf32, f16 or bf16, got {:?}",
            a.dtype
        ));
    }
    if !(a.dense_mem_gib > 0.0 && a.dense_mem_gib.is_finite()) {
        fail(format!(
            "--dense-mem-gib must be a positive number, got {}",
            a.dense_mem_gib
        ));
    }
    // The largest case: q, k, v, the output and their gradients (f32, about ten tensors of
    // [heads, S, D]) and the selected-key index with its inverse (4 bytes per selected key).
    let (seq, dim) = (a.seqs.iter().max(), a.head_dims.iter().max());
    let (seq, dim) = (*seq.expect("checked"), *dim.expect("checked"));
    let densest = a.sparsities.iter().copied().fold(1.0, f64::min);
    let selected = ((1.0 - densest) * seq as f64).ceil() as usize;
    let tensors = limits::bytes_of(&[10, 4, a.heads, seq, dim]);
    let index = limits::bytes_of(&[2, 4, a.heads, seq.div_ceil(a.group), selected]);
    limits::check_fits(
        "--seq",
        &format!("a case of S = {seq}, D = {dim}, {} heads", a.heads),
        tensors.zip(index).and_then(|(t, i)| t.checked_add(i)),
    );
    a
}

/// Dense attention as plain ops, `softmax(q kᵀ / √D) v`, over blocks of query rows whose
/// scores stay under 1 GiB (a single `[B, H, S, S]` buffer outgrows a GPU API's largest
/// buffer at S = 16k): the baseline every backend computes correctly.
fn matmul_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [batch, heads, rows, head_dim] = q.dims();
    let keys = k.dims()[2];
    let scale = (head_dim as f64).powf(-0.5);
    let block = ((1usize << 28) / (batch * heads * keys)).clamp(1, rows);
    let kt = k.swap_dims(2, 3);
    let blocks = (0..rows)
        .step_by(block)
        .map(|start| {
            softmax(
                q.clone()
                    .narrow(2, start, block.min(rows - start))
                    .matmul(kt.clone())
                    * scale,
                3,
            )
            .matmul(v.clone())
        })
        .collect();
    Tensor::cat(blocks, 2)
}

/// The faster of two optional timings, with its name: the dense baseline.
fn fastest(
    flash: Option<(f64, usize)>,
    matmul: Option<(f64, usize)>,
) -> (Option<(f64, usize)>, &'static str) {
    match (flash, matmul) {
        (Some(f), Some(m)) if m.0 < f.0 => (Some(m), "matmul"),
        (Some(f), _) => (Some(f), "flash"),
        (None, Some(m)) => (Some(m), "matmul"),
        (None, None) => (None, "-"),
    }
}

fn gflops(flops: f64, secs: f64) -> f64 {
    flops / secs / 1e9
}

fn main() {
    allocator::keep_freed_memory();
    let args = parse_args();
    let device = device_named(&args.device);
    let (dtype, precision) = dtype_named(&args.dtype).expect("checked by parse_args");
    // Read before the timings, so a bad file fails at once rather than after the run.
    let peer = args.peer.as_deref().map(read_peer);
    let options = SparseAttentionOptions::default().with_f32_precision(precision);
    if !device.supports_dtype(dtype) {
        fail(format!(
            "--dtype {}: {device:?} has no such dtype",
            args.dtype
        ));
    }
    let normal = Distribution::Normal(0.0, 1.0);
    let mut rows = Vec::new();
    println!(
        "device: {:?}, {}, heads {}, group {}, rank {}, median of {}",
        device, args.dtype, args.heads, args.group, args.rank, args.repeats
    );
    println!(
        "{:>6} {:>4} {:>5} | {:>9} {:>9} {:>7} {:>6} | {:>9} {:>9} {:>7} | {:>9} {:>8} | {:>7} {:>7} | {:>9} {:>9}",
        "S",
        "D",
        "s",
        "dense fwd",
        "sparse fw",
        "speedup",
        "ideal",
        "dense f+b",
        "sparse fb",
        "speedup",
        "ours f+b",
        "vs ours",
        "GF/s fw",
        "GF/s fb",
        "select %",
        "mem ratio"
    );
    for &d in &args.head_dims {
        for &s in &args.seqs {
            let shape = [1, args.heads, s, d];
            let random = || Tensor::<4>::random(shape, normal, &device).cast(dtype);
            let (q, k, v, w) = (random(), random(), random(), random());
            // Contiguous, as a predictor hands them over: a narrowed view would add Flex's
            // strided copy (a fifth of the selection time at 4k keys) to what is timed.
            let contiguous = |x: Tensor<4>| Tensor::<4>::from_data(x.into_data(), &device);
            let q_lr = contiguous(q.clone().narrow(3, 0, args.rank));
            let k_lr = contiguous(k.clone().narrow(3, 0, args.rank));
            let dense_flops = 4.0 * (args.heads * s * s * d) as f64;
            // Scores and probabilities of every head, f32, twice over for autodiff.
            let dense_bytes = (args.heads * s * s * 4) as f64 * 3.0;
            let dense_limit = args.dense_mem_gib * (1u64 << 30) as f64;
            let opts = AttentionModuleOptions::default;
            let flash =
                |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| attention(q, k, v, None, None, opts());
            // Burn's fused kernel is checked on the last query rows against the plain
            // matmul-softmax form: a backend that silently skips it must not set the baseline.
            let flash_error = if args.skip_dense {
                f64::NAN
            } else {
                let rows = s.min(128);
                let tail = |x: Tensor<4>| x.narrow(2, s - rows, rows);
                let diff = (tail(flash(q.clone(), k.clone(), v.clone()))
                    - matmul_attention(tail(q.clone()), k.clone(), v.clone()))
                .abs()
                .max();
                // A kernel that failed on the device (e.g. a buffer over the API's limit) fails here.
                diff.try_into_scalar::<f32>().map_or(f64::NAN, f64::from)
            };
            // Half dtypes round each output to 8 or 11 bits.
            let agreement = if dtype == DType::F32 { 1e-2 } else { 1e-1 };
            let flash_ok = flash_error.is_finite() && flash_error < agreement;
            let flash_fwd = flash_ok.then(|| {
                measure(&device, args.repeats, || {
                    flash(q.clone(), k.clone(), v.clone())
                })
            });
            // The matmul form holds 1 GiB of scores at a time (autodiff keeps every block's); it
            // runs where its gradients would fit, or where there is no other baseline.
            let matmul_fwd =
                (!args.skip_dense && (!flash_ok || dense_bytes <= dense_limit)).then(|| {
                    measure(&device, args.repeats, || {
                        matmul_attention(q.clone(), k.clone(), v.clone())
                    })
                });
            let (qa, ka, va, wa) = (
                q.clone().autodiff().require_grad(),
                k.clone().autodiff().require_grad(),
                v.clone().autodiff().require_grad(),
                w.clone().autodiff(),
            );
            let flash_fb = (flash_ok && dense_bytes <= dense_limit).then(|| {
                measure(&device, args.repeats, || {
                    (flash(qa.clone(), ka.clone(), va.clone()) * wa.clone())
                        .sum()
                        .backward()
                })
            });
            let matmul_fb = (!args.skip_dense && dense_bytes <= dense_limit).then(|| {
                measure(&device, args.repeats, || {
                    (matmul_attention(qa.clone(), ka.clone(), va.clone()) * wa.clone())
                        .sum()
                        .backward()
                })
            });
            let ours_fwd = args.our_dense.then(|| {
                measure(&device, args.repeats, || {
                    flash_attention(q.clone(), k.clone(), v.clone(), None)
                        .unwrap()
                        .output
                })
            });
            let ours_fb = args.our_dense.then(|| {
                measure(&device, args.repeats, || {
                    (flash_attention(qa.clone(), ka.clone(), va.clone(), None)
                        .unwrap()
                        .output
                        * wa.clone())
                    .sum()
                    .backward()
                })
            });
            if !flash_ok && !args.skip_dense {
                println!(
                    "{s:>6} {d:>4}   Burn's fused attention failed or disagrees with the matmul form (max |diff| {flash_error:.2e}): not a baseline"
                );
            }
            let (dense_fwd, dense_fwd_kind) = fastest(flash_fwd, matmul_fwd);
            let (dense_fb, dense_fb_kind) = fastest(flash_fb, matmul_fb);
            for &sparsity in &args.sparsities {
                let units = s.div_ceil(args.key_block);
                let budget = ((units as f64 * (1.0 - sparsity)).round() as usize).clamp(1, units);
                let config =
                    SelectionConfig::new(args.group, budget).with_key_block(args.key_block);
                let kept_keys = (budget * args.key_block).min(s);
                let keys = select_critical_keys(q_lr.clone(), k_lr.clone(), config).unwrap();
                let (select_t, _) = measure(&device, args.repeats, || {
                    select_critical_keys(q_lr.clone(), k_lr.clone(), config).unwrap()
                });
                let (sparse_fwd_t, sparse_fwd_mem) = measure(&device, args.repeats, || {
                    sparse_attention(q.clone(), k.clone(), v.clone(), &keys, None, options)
                        .map(|out| out.output)
                        .unwrap()
                });
                let keys_ad = select_critical_keys(
                    qa.clone().narrow(3, 0, args.rank),
                    ka.clone().narrow(3, 0, args.rank),
                    config,
                )
                .unwrap();
                let (sparse_fb_t, sparse_fb_mem) = measure(&device, args.repeats, || {
                    (sparse_attention(qa.clone(), ka.clone(), va.clone(), &keys_ad, None, options)
                        .map(|out| out.output)
                        .unwrap()
                        * wa.clone())
                    .sum()
                    .backward()
                });
                let sparse_flops = 4.0 * (args.heads * s * kept_keys * d) as f64;
                let sparse_total = sparse_fwd_t + select_t;
                // The dense time carries its kind: `f` Burn's fused kernel, `m` the matmul form.
                let fmt_t = |x: Option<(f64, usize)>, kind: &str| {
                    x.map(|(t, _)| format!("{:.4}{}", t, &kind[..1]))
                        .unwrap_or_else(|| "skipped".into())
                };
                let speed = |dense: Option<(f64, usize)>, sparse: f64| {
                    dense
                        .map(|(t, _)| format!("{:.2}x", t / sparse))
                        .unwrap_or_else(|| "-".into())
                };
                let mem_ratio = dense_fb
                    .map(|(_, m)| format!("{:.3}", sparse_fb_mem as f64 / m.max(1) as f64))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>6} {:>4} {:>5.2} | {:>9} {:>9.4} {:>7} {:>5.1}x | {:>9} {:>9.4} {:>7} | {:>9} {:>8} | {:>7.1} {:>7.1} | {:>8.1}% {:>9}",
                    s,
                    d,
                    sparsity,
                    fmt_t(dense_fwd, dense_fwd_kind),
                    sparse_total,
                    speed(dense_fwd, sparse_total),
                    1.0 / (1.0 - sparsity),
                    fmt_t(dense_fb, dense_fb_kind),
                    sparse_fb_t + select_t,
                    speed(dense_fb, sparse_fb_t + select_t),
                    fmt_t(ours_fb, "o"),
                    speed(ours_fb, sparse_fb_t + select_t),
                    gflops(sparse_flops, sparse_fwd_t),
                    gflops(3.5 * sparse_flops, sparse_fb_t),
                    100.0 * select_t / sparse_fwd_t,
                    mem_ratio
                );
                rows.push(serde_json::json!({
                    "dtype": args.dtype, "seq": s, "head_dim": d, "heads": args.heads, "group": args.group, "rank": args.rank,
                    "sparsity": sparsity, "budget": budget, "key_block": args.key_block,
                    "dense_fwd_s": dense_fwd.map(|x| x.0), "dense_fwd_peak_bytes": dense_fwd.map(|x| x.1), "dense_fwd_kind": dense_fwd_kind,
                    "dense_fwd_bwd_s": dense_fb.map(|x| x.0), "dense_fwd_bwd_peak_bytes": dense_fb.map(|x| x.1), "dense_fwd_bwd_kind": dense_fb_kind,
                    "flash_fwd_s": flash_fwd.map(|x| x.0), "matmul_fwd_s": matmul_fwd.map(|x| x.0),
                    "flash_fwd_bwd_s": flash_fb.map(|x| x.0), "matmul_fwd_bwd_s": matmul_fb.map(|x| x.0),
                    "flash_max_abs_error": flash_error,
                    "ours_dense_fwd_s": ours_fwd.map(|x| x.0), "ours_dense_fwd_peak_bytes": ours_fwd.map(|x| x.1),
                    "ours_dense_fwd_bwd_s": ours_fb.map(|x| x.0), "ours_dense_fwd_bwd_peak_bytes": ours_fb.map(|x| x.1),
                    "speedup_fwd_bwd_vs_ours": ours_fb.map(|x| x.0 / (sparse_fb_t + select_t)),
                    "ours_dense_fwd_gflops": ours_fwd.map(|x| gflops(dense_flops, x.0)),
                    "ours_dense_fwd_bwd_gflops": ours_fb.map(|x| gflops(3.5 * dense_flops, x.0)),
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
    let mut report = serde_json::json!({ "device": format!("{device:?}"), "rows": rows });
    if let Some(peer) = &peer {
        compare_with_peer(&mut report, peer);
    }
    report::write_json(&args.out, &report);
}

/// The `--peer` file: `scripts/peer/attention.py`'s JSON, with its `rows` array.
fn read_peer(path: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| fail(format!("--peer {path}: {e}")));
    let peer: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| fail(format!("--peer {path}: not JSON: {e}")));
    if !peer["rows"].is_array() {
        fail(format!("--peer {path}: no \"rows\" array"));
    }
    peer
}

/// Prints our rows against PyTorch's of the same (S, D, sparsity) from `peer` ([`read_peer`]),
/// and adds the peer's timings and the ratios to each matched row of `report`.
fn compare_with_peer(report: &mut serde_json::Value, peer: &serde_json::Value) {
    let peer_rows = peer["rows"].as_array().expect("checked by read_peer");
    println!(
        "peer: PyTorch {} on {} threads; ours: selection + sparse attention",
        peer["torch"], peer["threads"]
    );
    println!(
        "{:>6} {:>4} {:>5} {:>5} | {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7} | {:>9}",
        "S",
        "D",
        "s",
        "block",
        "ours fwd",
        "flex fwd",
        "ratio",
        "ours f+b",
        "sdpa f+b",
        "ratio",
        "flex f+b"
    );
    let key = |row: &serde_json::Value| {
        (
            row["seq"].as_u64(),
            row["head_dim"].as_u64(),
            row["sparsity"].as_f64(),
        )
    };
    let rows = report["rows"]
        .as_array_mut()
        .expect("rows were written as an array");
    for row in rows {
        let (seq, head_dim, sparsity) = key(row);
        let Some(theirs) = peer_rows
            .iter()
            .find(|p| key(p) == (seq, head_dim, sparsity))
        else {
            continue;
        };
        let seconds = |row: &serde_json::Value, name: &str| row[name].as_f64();
        let select = seconds(row, "select_s").unwrap_or(0.0);
        let ours_fwd = seconds(row, "sparse_fwd_s").map(|t| t + select);
        let ours_fb = seconds(row, "sparse_fwd_bwd_s").map(|t| t + select);
        let flex_fwd = seconds(theirs, "flex_fwd_s");
        let sdpa_fb = seconds(theirs, "sdpa_fwd_bwd_s");
        let ratio = |peer: Option<f64>, ours: Option<f64>| peer.zip(ours).map(|(p, o)| p / o);
        let (fwd_ratio, fb_ratio) = (ratio(flex_fwd, ours_fwd), ratio(sdpa_fb, ours_fb));
        let show = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{t:.4}"));
        let show_ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
        println!(
            "{:>6} {:>4} {:>5.2} {:>5} | {:>9} {:>9} {:>7} | {:>9} {:>9} {:>7} | {:>9}",
            seq.unwrap_or(0),
            head_dim.unwrap_or(0),
            sparsity.unwrap_or(f64::NAN),
            format!("{}/{}", row["key_block"], theirs["block"]),
            show(ours_fwd),
            show(flex_fwd),
            show_ratio(fwd_ratio),
            show(ours_fb),
            show(sdpa_fb),
            show_ratio(fb_ratio),
            show(seconds(theirs, "flex_fwd_bwd_s")),
        );
        let fields = serde_json::json!({
            "peer_flex_fwd_s": flex_fwd, "peer_flex_fwd_bwd_s": seconds(theirs, "flex_fwd_bwd_s"),
            "peer_sdpa_fwd_s": seconds(theirs, "sdpa_fwd_s"), "peer_sdpa_fwd_bwd_s": sdpa_fb,
            "peer_flex_block": theirs["block"],
            "ours_fwd_vs_flex_fwd": fwd_ratio, "ours_fwd_bwd_vs_sdpa_fwd_bwd": fb_ratio,
        });
        if let (Some(row), serde_json::Value::Object(fields)) = (row.as_object_mut(), fields) {
            row.extend(fields);
        }
    }
}
