//! Context parallelism across ranks: what each collective costs, and what head-parallel
//! (Ulysses), ring and DSV-hybrid attention cost, dense and sparse, with the time of the
//! whole step, the time spent in collectives and the bytes moved.
//!
//! ```text
//! # ranks as threads of one process
//! cargo run --release --example bench_context_parallel -- --ranks 2
//! # ranks as processes (one core each here: RAYON_NUM_THREADS=1)
//! cargo build --release --features mpi --example bench_context_parallel
//! RAYON_NUM_THREADS=1 mpirun --oversubscribe -np 2 target/release/examples/bench_context_parallel --transport mpi
//! ```
//! Rank 0 prints the tables and writes `--out` (JSON). Collective times are the slowest
//! rank's median over `--repeats`; bandwidth is the bytes one rank sends over that time.
//!
//! The planner's cost model is calibrated on the same run: a link (latency + bytes /
//! bandwidth) fitted to the send/recv sweep, and the attention throughput of one rank from
//! the local dense and local sparse rows (forward + backward FLOPs over their time). Each
//! attention row prints the model's time next to the measured one.

use std::time::Instant;

use burn::tensor::{Device, Tensor, module::attention, ops::AttentionModuleOptions};
use burn_sparse_video::ctx_parallel::planner::{
    AttentionWorkload, ClusterSpec, LinkModel, estimate, lpt_assign,
};
use burn_sparse_video::ctx_parallel::{
    CommError, Communicator, HybridSplit, head_parallel_attention, hybrid_attention,
    ring_attention, sparse_sequence_attention,
};
use burn_sparse_video::sparse_attn::{SelectionConfig, select_critical_keys, sparse_attention};
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// What carries the messages.
    #[arg(long, value_enum, default_value = "threads")]
    transport: Transport,
    /// Ranks (threads transport; MPI takes the job's size).
    #[arg(long, default_value_t = 2)]
    ranks: usize,
    /// Message sizes of the collective sweep, KiB per rank.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256,4096")]
    kib: Vec<usize>,
    /// Attention: tokens in all.
    #[arg(long, default_value_t = 4096)]
    seq: usize,
    /// Attention: heads (divisible by the ranks).
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Attention: head dimension.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Sparse attention: share of key blocks skipped.
    #[arg(long, default_value_t = 0.9)]
    sparsity: f64,
    /// Timed repeats (median).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Where rank 0 writes the JSON.
    #[arg(long, default_value = "out/bench_context_parallel.json")]
    out: String,
}

/// The rows that calibrate the planner's compute rate.
const LOCAL_DENSE: &str = "local dense (own shard only, no messages)";
const LOCAL_SPARSE: &str = "local sparse (own shard only, no messages)";

/// One collective call of the sweep.
type Collective<'a> = Box<dyn Fn() -> Result<(), CommError> + 'a>;
/// One kind of context-parallel attention on this rank's q, k, v.
type Attend<'a> = Box<dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Result<Tensor<4>, CommError> + 'a>;

/// The slowest rank's median of `repeats` timed runs of `f`, in seconds.
fn time(
    comm: &Communicator,
    repeats: usize,
    mut f: impl FnMut() -> Result<(), CommError>,
) -> Result<f64, CommError> {
    f()?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        comm.gather_sizes(0)?; // line the ranks up
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let all = comm.gather_sizes((median * 1e9) as usize)?;
    Ok(*all.iter().max().expect("world ≥ 1") as f64 / 1e9)
}

fn bench(comm: Communicator, args: &Args) -> Result<serde_json::Value, CommError> {
    let (world, rank) = (comm.world(), comm.rank());
    let device = comm.device().clone();
    let lead = rank == 0;
    let mut collectives = Vec::new();
    let mut point_to_point = Vec::new();
    if lead {
        println!("collectives over {world} ranks ({:?})", args.transport);
        println!(
            "{:>16} {:>10} {:>12} {:>14} {:>10}",
            "collective", "KiB/rank", "time (ms)", "sent B/rank", "GB/s"
        );
    }
    for &kib in &args.kib {
        let n = kib * 1024 / 4;
        let rows = n.div_ceil(world) * world;
        let x = Tensor::<2>::ones([rows, 1], &device);
        let sizes = vec![rows / world; world];
        let halo_x = Tensor::<2>::ones([n.max(1), 1], &device);
        let cases: Vec<(&str, Collective)> = vec![
            (
                "all_gather",
                Box::new(|| comm.all_gather(x.clone(), 0).map(drop)),
            ),
            (
                "all_to_all",
                Box::new(|| comm.all_to_all(x.clone(), 0, &sizes, 0).map(drop)),
            ),
            (
                "all_reduce",
                Box::new(|| comm.all_reduce(x.clone()).map(drop)),
            ),
            (
                "reduce_scatter",
                Box::new(|| comm.reduce_scatter(x.clone(), 0).map(drop)),
            ),
            (
                "halo_exchange",
                Box::new(|| comm.halo_exchange(halo_x.clone(), 0, n.max(1)).map(drop)),
            ),
            (
                "send_recv",
                Box::new(|| {
                    comm.send_recv(x.clone(), (rank + 1) % world, (rank + world - 1) % world, 0)
                        .map(drop)
                }),
            ),
        ];
        for (name, f) in cases {
            comm.reset_stats();
            f()?;
            let sent = comm.stats().bytes;
            let seconds = time(&comm, args.repeats, &f)?;
            let gbps = sent as f64 / seconds / 1e9;
            if lead {
                println!(
                    "{name:>16} {kib:>10} {:>12.3} {sent:>14} {gbps:>10.3}",
                    seconds * 1e3
                );
            }
            if name == "send_recv" {
                point_to_point.push((sent as f64, seconds));
            }
            collectives.push(json!({"collective": name, "kib_per_rank": kib, "seconds": seconds, "bytes_sent_rank0": sent, "gb_per_s": gbps}));
        }
    }

    // Attention: this rank's sequence shard of [1, H, S, D].
    let [h, s, d] = [args.heads, args.seq, args.head_dim];
    let (block, group) = (64, 64);
    let shard = s / world;
    let ad = device.clone().autodiff();
    let q = Tensor::<4>::ones([1, h, shard, d], &ad);
    let budget = (((1.0 - args.sparsity) * (s / block) as f64).round() as usize).max(1);
    let dense = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| {
        attention(q, k, v, None, None, AttentionModuleOptions::default())
    };
    let sparse = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| -> Result<Tensor<4>, CommError> {
        let keys = select_critical_keys(
            q.clone().narrow(3, 0, 16).detach(),
            k.clone().narrow(3, 0, 16).detach(),
            SelectionConfig::new(group, budget).with_key_block(block),
        )?;
        Ok(sparse_attention(q, k, v, &keys, None, SparseAttentionOptions::default())?.output)
    };
    let low_rank = Tensor::<4>::random(
        [1, h, s, 16],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device,
    );
    let full_keys = select_critical_keys(
        low_rank.clone(),
        low_rank,
        SelectionConfig::new(group, budget).with_key_block(block),
    )?;
    let my_keys = |heads: Option<&[usize]>, start: usize, len: usize| {
        let mut idx = full_keys.indices().clone();
        if let Some(heads) = heads {
            let ids: Vec<i64> = heads.iter().map(|&x| x as i64).collect();
            idx = idx.select(
                1,
                Tensor::from_data(
                    burn::tensor::TensorData::new(ids.clone(), [ids.len()]),
                    &device,
                ),
            );
        }
        burn_sparse_video::sparse_attn::CriticalKeys::new(
            idx.narrow(2, start / group, len / group),
            IndexShape {
                group_size: group,
                key_block: block,
                query_len: len,
                key_len: s,
            },
        )
    };
    let step = |f: &dyn Fn(
        Tensor<4>,
        Tensor<4>,
        Tensor<4>,
    ) -> Result<Tensor<4>, CommError>|
     -> Result<(), CommError> {
        let [q, k, v] = [0; 3].map(|_| q.clone().detach().require_grad());
        let out = f(q.clone(), k, v)?;
        let _ = out.sum().backward();
        Ok(())
    };
    let hybrid_split = (world >= 4 && world % 2 == 0 && h % 2 == 0).then(|| HybridSplit {
        head_groups: 2,
        seq_groups: world / 2,
        heads: lpt_assign(&vec![1.0; h], 2),
    });
    // The local sparse row keeps the same share of its own shard's key blocks.
    let local_budget = (((1.0 - args.sparsity) * (shard / block) as f64).round() as usize).max(1);
    let local_sparse = |q: Tensor<4>, k: Tensor<4>, v: Tensor<4>| -> Result<Tensor<4>, CommError> {
        let keys = select_critical_keys(
            q.clone().narrow(3, 0, 16).detach(),
            k.clone().narrow(3, 0, 16).detach(),
            SelectionConfig::new(group, local_budget).with_key_block(block),
        )?;
        Ok(sparse_attention(q, k, v, &keys, None, SparseAttentionOptions::default())?.output)
    };
    let mut kinds: Vec<(&str, Attend)> = vec![
        (LOCAL_DENSE, Box::new(|q, k, v| Ok(dense(q, k, v)))),
        (LOCAL_SPARSE, Box::new(local_sparse)),
        (
            "ulysses dense",
            Box::new(|q, k, v| {
                head_parallel_attention(&comm, q, k, v, |q, k, v| {
                    Ok::<_, CommError>(dense(q, k, v))
                })
            }),
        ),
        (
            "ring dense",
            Box::new(|q, k, v| ring_attention(&comm, q, k, v, None)),
        ),
        (
            "ulysses sparse",
            Box::new(|q, k, v| head_parallel_attention(&comm, q, k, v, sparse)),
        ),
        (
            "sparse sequence",
            Box::new(|q, k, v| {
                sparse_sequence_attention(
                    &comm,
                    q,
                    k,
                    v,
                    &my_keys(None, rank * shard, shard)?,
                    None,
                )
            }),
        ),
    ];
    if let Some(split) = hybrid_split.clone() {
        let (comm, my_keys) = (&comm, &my_keys);
        kinds.push((
            "dsv hybrid 2 x N/2",
            Box::new(move |q, k, v| {
                hybrid_attention(comm, &split, q, k, v, |g, sg| {
                    my_keys(Some(&split.heads[g]), sg * 2 * shard, 2 * shard)
                })
            }),
        ));
    }
    if lead {
        println!(
            "\nattention forward+backward over {world} ranks: [1, {h}, {s}, {d}], sparse at {:.0}% ({budget} of {} key blocks)",
            args.sparsity * 100.0,
            s / block
        );
        println!(
            "{:>42} {:>12} {:>12} {:>14} {:>14}",
            "kind", "time (ms)", "model (ms)", "fwd B/rank", "bwd B/rank"
        );
    }
    let mut measured = Vec::new();
    for (name, f) in &kinds {
        comm.reset_stats();
        step(f.as_ref())?;
        let stats = comm.stats();
        let seconds = time(&comm, args.repeats, || step(f.as_ref()))?;
        measured.push((*name, seconds, stats));
    }
    // Calibration: the link from the send/recv sweep, compute from the local rows.
    let link = LinkModel::fit(&point_to_point);
    let local_flops = 3.5 * 4.0 * (shard * shard * d * h) as f64;
    let rate = |name: &str, density: f64| {
        measured
            .iter()
            .find(|m| m.0 == name)
            .map(|m| local_flops * density / m.1)
    };
    let local_density = local_budget as f64 / (shard / block) as f64;
    let (dense_rate, sparse_rate) = (rate(LOCAL_DENSE, 1.0), rate(LOCAL_SPARSE, local_density));
    let density = budget as f64 / (s / block) as f64;
    let model = |name: &str| -> Option<f64> {
        let link = link?;
        let work = |sparsity: f64| AttentionWorkload {
            seq: s,
            head_dim: d,
            head_sparsity: vec![sparsity; h],
            remote_fraction: (world - 1) as f64 / world as f64,
            elem_bytes: 4,
        };
        let cluster = |flops: f64| ClusterSpec::measured(world, link, flops);
        Some(match name {
            LOCAL_DENSE | LOCAL_SPARSE => return None,
            "ulysses dense" => estimate(&cluster(dense_rate?), &work(0.0), world, 1, true).total_s,
            "ulysses sparse" => {
                estimate(&cluster(sparse_rate?), &work(1.0 - density), world, 1, true).total_s
            }
            "sparse sequence" => {
                estimate(&cluster(sparse_rate?), &work(1.0 - density), 1, world, true).total_s
            }
            "dsv hybrid 2 x N/2" => {
                estimate(
                    &cluster(sparse_rate?),
                    &work(1.0 - density),
                    2,
                    world / 2,
                    true,
                )
                .total_s
            }
            _ => return None, // ring attention is not in the planner
        })
    };
    let mut attention_rows = Vec::new();
    for (name, seconds, stats) in &measured {
        let predicted = model(name);
        if lead {
            println!(
                "{name:>42} {:>12.1} {:>12} {:>14} {:>14}",
                seconds * 1e3,
                predicted.map_or("-".into(), |p| format!("{:.1}", p * 1e3)),
                stats.bytes,
                stats.backward_bytes
            );
        }
        attention_rows.push(json!({"kind": name, "seconds": seconds, "model_seconds": predicted, "forward_bytes_rank0": stats.bytes, "backward_bytes_rank0": stats.backward_bytes}));
    }
    let calibration = json!({
        "link_latency_s": link.map(|l| l.latency_s),
        "link_bytes_per_s": link.map(|l| l.bytes_per_s),
        "dense_flops_per_s": dense_rate,
        "sparse_flops_per_s": sparse_rate,
    });
    if lead {
        match link {
            Some(l) => println!(
                "
model calibrated here: link {:.1} µs + bytes / {:.2} GB/s (send/recv sweep); attention {:.2} GFLOP/s dense, {:.2} GFLOP/s sparse (local rows)",
                l.latency_s * 1e6,
                l.bytes_per_s / 1e9,
                dense_rate.unwrap_or(f64::NAN) / 1e9,
                sparse_rate.unwrap_or(f64::NAN) / 1e9
            ),
            None => println!("
no model: the send/recv sweep gave no time rising with size (it needs two or more --kib sizes over two or more ranks)"),
        }
    }
    Ok(
        json!({"transport": format!("{:?}", args.transport), "world": world, "collectives": collectives, "calibration": calibration, "attention": {"heads": h, "seq": s, "head_dim": d, "sparsity": args.sparsity, "rows": attention_rows}}),
    )
}

fn finish(args: &Args, report: serde_json::Value) {
    println!();
    report::write_json(&args.out, &report);
}

use fail::fail;
#[path = "common/fail.rs"]
mod fail;
#[path = "common/limits.rs"]
mod limits;
#[path = "common/ranks.rs"]
mod ranks;
#[path = "common/report.rs"]
mod report;
use burn_sparse_video::sparse_attn::{IndexShape, SparseAttentionOptions};
use ranks::{Transport, on_ranks};

fn main() {
    let args = Args::parse();
    if args.transport == Transport::Threads
        && (args.ranks == 0 || args.heads % args.ranks != 0 || args.seq % (args.ranks * 64) != 0)
    {
        fail("--ranks must be ≥ 1 and divide --heads, and --seq a multiple of 64 × ranks");
    }
    // Dense attention's scores and probabilities (f32, kept for the backward) over all heads,
    // and about ten [heads, S, D] tensors; threads share this machine's memory, processes of
    // an MPI job may each have a machine (so only overflow is refused there).
    let [h, s, d] = [args.heads, args.seq, args.head_dim];
    let need = limits::bytes_of(&[12, h, s, s])
        .zip(limits::bytes_of(&[40, h, s, d]))
        .and_then(|(scores, tensors)| scores.checked_add(tensors));
    let what = format!("dense attention over S = {s} with {h} heads of D = {d}");
    match args.transport {
        Transport::Threads => limits::check_fits("--seq", &what, need),
        Transport::Mpi => {
            limits::check_size("--seq", &what, need);
        }
    }
    // The selection reads 16 columns of each head; the sweep sends at least a KiB.
    for (flag, value, least) in [
        ("--heads", args.heads, 1),
        ("--head-dim", args.head_dim, 16),
        ("--repeats", args.repeats, 1),
        ("--kib", args.kib.iter().copied().min().unwrap_or(0), 1),
    ] {
        if value < least {
            fail(format!("{flag} must be ≥ {least}, got {value}"));
        }
    }
    if !(0.0..1.0).contains(&args.sparsity) {
        fail(format!(
            "--sparsity must be in [0, 1), got {}",
            args.sparsity
        ));
    }
    if args.transport == Transport::Mpi && !cfg!(feature = "mpi") {
        fail("--transport mpi needs a build with `--features mpi`");
    }
    match on_ranks(args.transport, args.ranks, &Device::flex(), |comm| {
        Ok(bench(comm, &args)?)
    }) {
        Ok(Some(report)) => finish(&args, report),
        Ok(None) => {}
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
