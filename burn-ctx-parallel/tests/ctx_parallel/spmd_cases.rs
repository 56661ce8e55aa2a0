//! Per-rank test cases: each rank builds the same full inputs from a seed, runs its shard
//! through the SPMD code and compares outputs and gradients with the unsharded computation,
//! and its byte counters with the formulas. Run by `in_process` (ranks as threads) and, with
//! the `mpi` feature, by `mpi` (ranks as processes under `mpirun`).

use burn::module::Module;
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::{
    Device, Int, Tensor, TensorData, module::attention, ops::AttentionModuleOptions,
};
use burn_ctx_parallel::planner::lpt_assign;
use burn_ctx_parallel::{
    ClipLayout, CommError, Communicator, DualScopeConfig, DualScopePlan, HybridSplit,
    all_reduce_gradients, broadcast_module, clip_halos, head_parallel_attention,
    head_parallel_bytes_per_rank, hybrid_attention, ring_attention, sparse_sequence_attention,
    synced_moments,
};
use burn_sparse_attn::dsv::{DsvAttentionConfig, DsvPolicy, DsvStage, TokenGrid};
use burn_sparse_attn::{CriticalKeys, SelectionConfig, select_critical_keys, sparse_attention};
use burn_sparse_attn::{IndexShape, SparseAttentionOptions};

/// Calls macro `$m` with the name of every case, each a function of this module: the
/// transports' test modules make one test per case from it.
macro_rules! for_each_case {
    ($m:ident) => {
        $m!(
            collectives,
            head_parallel,
            ring,
            sparse_sequence,
            dsv_sharded,
            hybrid,
            clips,
            dual_scope,
            data_parallel
        );
    };
}
pub(crate) use for_each_case;

/// Runs case `name` on this rank; returns the worst relative difference from the unsharded
/// computation, or what went wrong.
pub fn run_case(name: &str, comm: &Communicator) -> Result<f64, String> {
    match name {
        "collectives" => collectives(comm),
        "head_parallel" => head_parallel(comm),
        "ring" => ring(comm),
        "sparse_sequence" => sparse_sequence(comm),
        "dsv_sharded" => dsv_sharded(comm),
        "hybrid" => hybrid(comm),
        "clips" => clips(comm),
        "dual_scope" => dual_scope(comm),
        "data_parallel" => data_parallel(comm),
        other => Err(format!("no case {other}")),
    }
}

/// Deterministic normal-ish numbers (same on every rank and process): a 64-bit LCG fed
/// through Box–Muller.
pub fn normal<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..n)
        .map(|_| {
            ((-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos()) as f32
        })
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// max |a − b| / max |b|.
fn rel<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f64 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1e-12) as f64;
    (a - b).abs().max().into_scalar::<f32>() as f64 / scale
}

/// An error as the text the cases report.
fn e(error: impl std::fmt::Display) -> String {
    error.to_string()
}

/// Fails when `worst` exceeds 1e-5 relative: f32 rounding, not an algorithmic difference.
fn within(what: &str, worst: f64) -> Result<f64, String> {
    if worst <= 1e-5 {
        Ok(worst)
    } else {
        Err(format!("{what}: relative difference {worst:.3e} > 1e-5"))
    }
}

/// Sequence shard bounds of `rank`: `units` aligned units of `align` positions, split as
/// evenly as possible (earlier ranks shorter).
fn shard_range(len: usize, align: usize, world: usize, rank: usize) -> (usize, usize) {
    let units = len.div_ceil(align);
    let start = rank * units / world * align;
    let end = ((rank + 1) * units / world * align).min(len);
    (start, end - start)
}

/// This rank's output shard and q, k, v gradient shards of `Σ w ∘ f`, computed sharded by
/// `sharded`, against the same from `full` on the whole inputs; returns the worst relative
/// difference over the four.
fn compare(
    comm: &Communicator,
    dims: [usize; 4],
    align: usize,
    seed: u64,
    full: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
    sharded: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Result<Tensor<4>, String>,
) -> Result<f64, String> {
    let range = shard_range(dims[2], align, comm.world(), comm.rank());
    compare_shard(comm, dims, range, seed, full, sharded)
}

/// [`compare`] with this rank's sequence shard `(start, len)` given.
fn compare_shard(
    comm: &Communicator,
    dims: [usize; 4],
    (start, len): (usize, usize),
    seed: u64,
    full: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Tensor<4>,
    sharded: impl Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Result<Tensor<4>, String>,
) -> Result<f64, String> {
    let device = comm.device().clone();
    let ad = device.clone().autodiff();
    let data: Vec<Tensor<4>> = (0..4).map(|i| normal(dims, seed + i, &ad)).collect();
    let run = |inputs: [Tensor<4>; 3],
               weight: Tensor<4>,
               f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<4>) -> Result<Tensor<4>, String>|
     -> Result<[Tensor<4>; 4], String> {
        let [q, k, v] = inputs.map(|x| x.detach().require_grad());
        let out = f(q.clone(), k.clone(), v.clone())?;
        let grads = (out.clone() * weight).sum().backward();
        let grad = |x: &Tensor<4>| {
            x.grad(&grads)
                .ok_or("no gradient")
                .map(|g| Tensor::<4>::from_data(g.into_data(), &device))
        };
        Ok([
            Tensor::from_data(out.into_data(), &device),
            grad(&q)?,
            grad(&k)?,
            grad(&v)?,
        ])
    };
    let whole = run(
        [data[0].clone(), data[1].clone(), data[2].clone()],
        data[3].clone(),
        &|q, k, v| Ok(full(q, k, v)),
    )?;
    let part = |x: &Tensor<4>| x.clone().narrow(2, start, len);
    let mine = run(
        [part(&data[0]), part(&data[1]), part(&data[2])],
        part(&data[3]),
        &sharded,
    )?;
    let mut worst = 0.0f64;
    for (i, (got, want)) in mine.into_iter().zip(whole).enumerate() {
        let diff = rel(got, part(&want));
        if diff > 1e-5 {
            return Err(format!(
                "rank {} of {}, {}: relative difference {diff:.3e}",
                comm.rank(),
                comm.world(),
                ["output", "dq", "dk", "dv"][i]
            ));
        }
        worst = worst.max(diff);
    }
    Ok(worst)
}

fn dense(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

fn check_bytes(comm: &Communicator, what: &str, want: u64) -> Result<(), String> {
    let got = comm.stats().bytes;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "rank {}: {what} sent {got} bytes, the formula says {want}",
            comm.rank()
        ))
    }
}

fn collectives(comm: &Communicator) -> Result<f64, String> {
    let (world, rank) = (comm.world(), comm.rank());
    let device = comm.device().clone();
    let ad = device.clone().autodiff();
    // Rank r holds r + 2 rows of 3: the full tensor is every rank's rows, in rank order.
    let rows = |r: usize| r + 2;
    let total: usize = (0..world).map(rows).sum();
    let start: usize = (0..rank).map(rows).sum();
    let full = normal([total, 3], 11, &device);
    let x = full.clone().narrow(0, start, rows(rank));
    let mut worst = 0.0f64;

    // All-gather: every rank gets the full tensor; the gradient of Σ_j w_j ∘ gathered at
    // x_r is Σ_j w_j's rows of r.
    comm.reset_stats();
    let xg = Tensor::<2>::from_data(x.clone().into_data(), &ad).require_grad();
    let gathered = comm.all_gather(xg.clone(), 0).map_err(e)?;
    worst = worst.max(within(
        "all_gather",
        rel(
            Tensor::from_data(gathered.clone().into_data(), &device),
            full.clone(),
        ),
    )?);
    let weights: Vec<Tensor<2>> = (0..world)
        .map(|j| normal([total, 3], 100 + j as u64, &device))
        .collect();
    let grads = (gathered * Tensor::from_data(weights[rank].clone().into_data(), &ad))
        .sum()
        .backward();
    let want = weights
        .iter()
        .cloned()
        .reduce(|a, b| a + b)
        .expect("world ≥ 1")
        .narrow(0, start, rows(rank));
    worst = worst.max(within(
        "all_gather gradient",
        rel(
            Tensor::from_data(xg.grad(&grads).ok_or("no grad")?.into_data(), &device),
            want,
        ),
    )?);
    check_bytes(
        comm,
        "all_gather",
        (rows(rank) * 3 * 4 * (world - 1)) as u64,
    )?;

    // Uneven all-to-all: rank r splits its rows' columns... split along dim 0 of a fixed
    // [Σ sizes, 2] block per rank into sizes[j] = j + 1 rows for rank j; concat along dim 1.
    let sizes: Vec<usize> = (0..world).map(|j| j + 1).collect();
    let n: usize = sizes.iter().sum();
    let blocks: Vec<Tensor<2>> = (0..world)
        .map(|r| normal([n, 2], 200 + r as u64, &device))
        .collect();
    comm.reset_stats();
    let xa = Tensor::<2>::from_data(blocks[rank].clone().into_data(), &ad).require_grad();
    let got = comm.all_to_all(xa.clone(), 0, &sizes, 1).map_err(e)?;
    let offset: usize = sizes[..rank].iter().sum();
    let want = Tensor::cat(
        blocks
            .iter()
            .map(|b| b.clone().narrow(0, offset, sizes[rank]))
            .collect(),
        1,
    );
    worst = worst.max(within(
        "all_to_all",
        rel(Tensor::from_data(got.clone().into_data(), &device), want),
    )?);
    // Gradient of Σ_j w_j ∘ out_j at rank r's block: row piece j comes from w_j's columns r.
    let w: Vec<Tensor<2>> = (0..world)
        .map(|j| normal([sizes[j], 2 * world], 300 + j as u64, &device))
        .collect();
    let grads = (got * Tensor::from_data(w[rank].clone().into_data(), &ad))
        .sum()
        .backward();
    let want = Tensor::cat(
        (0..world)
            .map(|j| w[j].clone().narrow(1, 2 * rank, 2))
            .collect(),
        0,
    );
    worst = worst.max(within(
        "all_to_all gradient",
        rel(
            Tensor::from_data(xa.grad(&grads).ok_or("no grad")?.into_data(), &device),
            want,
        ),
    )?);
    let sent: usize = (0..world)
        .filter(|&j| j != rank)
        .map(|j| sizes[j] * 2 * 4)
        .sum();
    check_bytes(comm, "all_to_all", sent as u64)?;

    // All-reduce and reduce-scatter of [2·world, 5] blocks, one per rank.
    let parts: Vec<Tensor<2>> = (0..world)
        .map(|r| normal([2 * world, 5], 400 + r as u64, &device))
        .collect();
    let sum = parts
        .iter()
        .cloned()
        .reduce(|a, b| a + b)
        .expect("world ≥ 1");
    comm.reset_stats();
    let xr = Tensor::<2>::from_data(parts[rank].clone().into_data(), &ad).require_grad();
    let reduced = comm.all_reduce(xr.clone()).map_err(e)?;
    worst = worst.max(within(
        "all_reduce",
        rel(
            Tensor::from_data(reduced.clone().into_data(), &device),
            sum.clone(),
        ),
    )?);
    let w: Vec<Tensor<2>> = (0..world)
        .map(|j| normal([2 * world, 5], 500 + j as u64, &device))
        .collect();
    let grads = (reduced * Tensor::from_data(w[rank].clone().into_data(), &ad))
        .sum()
        .backward();
    let want = w.iter().cloned().reduce(|a, b| a + b).expect("world ≥ 1");
    worst = worst.max(within(
        "all_reduce gradient",
        rel(
            Tensor::from_data(xr.grad(&grads).ok_or("no grad")?.into_data(), &device),
            want,
        ),
    )?);
    // Reduce-scatter then all-gather: each rank sends all but its slice, then its slice to all.
    let elems = 2 * world * 5;
    let slice = |r: usize| (r + 1) * elems / world - r * elems / world;
    check_bytes(
        comm,
        "all_reduce",
        if world == 1 {
            0
        } else {
            ((elems - slice(rank)) * 4 + slice(rank) * 4 * (world - 1)) as u64
        },
    )?;
    comm.reset_stats();
    let scattered = comm
        .reduce_scatter(
            Tensor::<2>::from_data(parts[rank].clone().into_data(), &device),
            0,
        )
        .map_err(e)?;
    worst = worst.max(within(
        "reduce_scatter",
        rel(scattered, sum.narrow(0, 2 * rank, 2)),
    )?);
    check_bytes(comm, "reduce_scatter", (2 * 5 * 4 * (world - 1)) as u64)?;

    // Halo exchange of 2 rows, and one ring step.
    comm.reset_stats();
    let xh = Tensor::<2>::from_data(x.clone().into_data(), &ad).require_grad();
    let (before, after) = comm.halo_exchange(xh.clone(), 0, 2).map_err(e)?;
    if let Some(before) = &before {
        worst = worst.max(within(
            "halo before",
            rel(
                Tensor::from_data(before.clone().into_data(), &device),
                full.clone().narrow(0, start - 2, 2),
            ),
        )?);
    }
    if let Some(after) = &after {
        worst = worst.max(within(
            "halo after",
            rel(
                Tensor::from_data(after.clone().into_data(), &device),
                full.clone().narrow(0, start + rows(rank), 2),
            ),
        )?);
    }
    if (before.is_some(), after.is_some()) != (rank > 0, rank + 1 < world) {
        return Err(format!(
            "rank {rank}: halo sides {:?}",
            (before.is_some(), after.is_some())
        ));
    }
    let halo_sends = usize::from(rank > 0) + usize::from(rank + 1 < world);
    check_bytes(comm, "halo_exchange", (halo_sends * 2 * 3 * 4) as u64)?;
    // Backward of the halo: Σ of the halos' sums; rank r's first rows get 1 from the left
    // neighbour's `after`, its last rows 1 from the right neighbour's `before`.
    let loss = [before, after]
        .into_iter()
        .flatten()
        .map(|t| t.sum())
        .reduce(|a, b| a + b);
    if let Some(loss) = loss {
        let grads = loss.backward();
        let mut want = vec![0.0f32; rows(rank) * 3];
        if rank > 0 {
            want[..6].iter_mut().for_each(|g| *g += 1.0);
        }
        if rank + 1 < world {
            let n = want.len();
            want[n - 6..].iter_mut().for_each(|g| *g += 1.0);
        }
        let got = xh.grad(&grads).ok_or("no halo gradient")?;
        worst = worst.max(within(
            "halo gradient",
            rel(
                Tensor::from_data(got.into_data(), &device),
                Tensor::<2>::from_data(TensorData::new(want, [rows(rank), 3]), &device),
            ),
        )?);
    }
    let next = comm
        .send_recv(x, (rank + 1) % world, (rank + world - 1) % world, 0)
        .map_err(e)?;
    let prev = (rank + world - 1) % world;
    let prev_start: usize = (0..prev).map(rows).sum();
    worst = worst.max(within(
        "send_recv",
        rel(next, full.narrow(0, prev_start, rows(prev))),
    )?);

    // Bad arguments are named before anything is sent.
    let bad = comm
        .all_to_all(Tensor::<2>::zeros([n + 1, 2], &device), 0, &sizes, 1)
        .unwrap_err();
    if bad.argument() != "x" {
        return Err(format!(
            "all_to_all with a wrong split size named `{}`",
            bad.argument()
        ));
    }
    Ok(worst)
}

fn head_parallel(comm: &Communicator) -> Result<f64, String> {
    let world = comm.world();
    let heads = 12 / world * world;
    let dims = [1, heads, 29, 16];
    let worst = compare(comm, dims, 1, 1, dense, |q, k, v| {
        head_parallel_attention(comm, q, k, v, |q, k, v| Ok::<_, CommError>(dense(q, k, v)))
            .map_err(|e| e.to_string())
    })?;
    // Sparse attention per head shard: the index of this rank's heads.
    let (g, budget) = (8, 9);
    let sparse = |q: Tensor<4>,
                  k: Tensor<4>,
                  v: Tensor<4>|
     -> Result<Tensor<4>, burn_sparse_attn::SparseAttnError> {
        let keys = select_critical_keys(
            q.clone().narrow(3, 0, 8).detach(),
            k.clone().narrow(3, 0, 8).detach(),
            SelectionConfig::new(g, budget),
        )?;
        sparse_attention(q, k, v, &keys, None, SparseAttentionOptions::default())
            .map(|out| out.output)
    };
    let worst = worst.max(compare(
        comm,
        [2, 4 / world.min(4) * world.min(4), 40, 16],
        1,
        5,
        |q, k, v| sparse(q, k, v).expect("valid"),
        |q, k, v| head_parallel_attention(comm, q, k, v, sparse).map_err(|e| e.to_string()),
    )?);
    // Bytes: q, k, v and the output, DSV's formula (equal shards).
    let [b, h, s, d] = [1, 4 * world, 8 * world, 8];
    comm.reset_stats();
    let x = normal([b, h, s / world, d], 9, comm.device());
    head_parallel_attention(comm, x.clone(), x.clone(), x, |q, k, v| {
        Ok::<_, CommError>(dense(q, k, v))
    })
    .map_err(|e| e.to_string())?;
    // gather_sizes adds world − 1 lengths of 8 bytes.
    check_bytes(
        comm,
        "head_parallel_attention",
        head_parallel_bytes_per_rank(b, h, s, d, world) + 8 * (world as u64 - 1),
    )?;
    if world > 1 {
        // Heads that don't divide are named on every rank.
        let x = normal([1, world + 1, 4, 4], 3, comm.device());
        let err = head_parallel_attention(comm, x.clone(), x.clone(), x, |q, k, v| {
            Ok::<_, CommError>(dense(q, k, v))
        })
        .unwrap_err();
        if !err.to_string().contains("divisible by the world size") {
            return Err(format!("heads that don't divide: {err}"));
        }
    }
    Ok(worst)
}

fn ring(comm: &Communicator) -> Result<f64, String> {
    let world = comm.world();
    let worst = compare(comm, [1, 3, 29, 16], 1, 21, dense, |q, k, v| {
        ring_attention(comm, q, k, v, None).map_err(|e| e.to_string())
    })?;
    let [b, h, s, d] = [1, 2, 8 * world, 8];
    comm.reset_stats();
    let x = normal([b, h, s / world, d], 9, comm.device());
    ring_attention(comm, x.clone(), x.clone(), x, None).map_err(|e| e.to_string())?;
    // K and V of one shard travel world − 1 hops.
    check_bytes(
        comm,
        "ring_attention",
        (2 * (world - 1) * b * h * (s / world) * d * 4) as u64,
    )?;
    Ok(worst)
}

/// The critical keys of `q_lr, k_lr` for the queries of `[start, start + len)`.
fn shard_keys(keys: &CriticalKeys, group: usize, start: usize, len: usize) -> CriticalKeys {
    let idx = keys
        .indices()
        .clone()
        .narrow(2, start / group, len.div_ceil(group));
    CriticalKeys::new(
        idx,
        IndexShape {
            group_size: group,
            key_block: keys.key_block(),
            query_len: len,
            key_len: keys.key_len(),
        },
    )
    .expect("a valid shard of a valid index")
}

fn sparse_sequence(comm: &Communicator) -> Result<f64, String> {
    let (world, rank) = (comm.world(), comm.rank());
    let device = comm.device().clone();
    let (b, h, s, d, g) = (2, 3, 40, 16, 4);
    let low_rank = [0, 1].map(|i| normal([b, h, s, 4], 30 + i, &device));
    let mut worst = 0.0f64;
    for (block, budget) in [(1, 7), (4, 3), (1, 40)] {
        let keys = select_critical_keys(
            low_rank[0].clone(),
            low_rank[1].clone(),
            SelectionConfig::new(g, budget).with_key_block(block),
        )
        .map_err(|e| e.to_string())?;
        let (start, len) = shard_range(s, 4, world, rank);
        let mine = shard_keys(&keys, g, start, len);
        let full = |q, k, v| {
            sparse_attention(q, k, v, &keys, None, SparseAttentionOptions::default())
                .map(|out| out.output)
                .expect("valid")
        };
        worst = worst.max(compare(comm, [b, h, s, d], 4, 40, full, |q, k, v| {
            sparse_sequence_attention(comm, q, k, v, &mine, None).map_err(|e| e.to_string())
        })?);
        // Bytes: every row this rank serves, once per (batch, head), K and V together, plus
        // the row lists asked of it (8 bytes a row) and the shard lengths.
        comm.reset_stats();
        let x = normal([b, h, len, d], 41, &device);
        sparse_sequence_attention(comm, x.clone(), x.clone(), x, &mine, None)
            .map_err(|e| e.to_string())?;
        let mut served = 0;
        let mut asked = 0;
        for peer in 0..world {
            let (p_start, p_len) = shard_range(s, 4, world, peer);
            let ids: Vec<i64> = shard_keys(&keys, g, p_start, p_len)
                .indices()
                .to_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .map_err(|e| format!("{e:?}"))?;
            let rows_in = |lo: usize, hi: usize| -> usize {
                ids.chunks_exact(ids.len() / (b * h))
                    .map(|head| {
                        head.iter()
                            .map(|&u| u as usize)
                            .collect::<std::collections::BTreeSet<_>>()
                            .into_iter()
                            .map(|u| {
                                (u * block..(u + 1) * block)
                                    .filter(|&key| key >= lo && key < hi)
                                    .count()
                            })
                            .sum::<usize>()
                    })
                    .sum()
            };
            if peer != rank {
                served += rows_in(start, start + len);
            } else {
                asked = (0..world)
                    .filter(|&j| j != rank)
                    .map(|j| {
                        let (lo, n) = shard_range(s, 4, world, j);
                        rows_in(lo, lo + n)
                    })
                    .sum::<usize>();
            }
        }
        check_bytes(
            comm,
            &format!("sparse_sequence_attention (block {block})"),
            (served * 2 * d * 4 + asked * 8 + 8 * (world - 1)) as u64,
        )?;
    }
    Ok(worst)
}

/// A DSV layer in its sparse stage over this rank's frames (`DsvAttention::forward_sharded`,
/// the communicator as its `SequenceShards`) against the same layer on the whole video:
/// query cubes of 2 frames, shards of whole cubes (uneven at 3 ranks).
fn dsv_sharded(comm: &Communicator) -> Result<f64, String> {
    let (world, rank) = (comm.world(), comm.rank());
    let device = comm.device().clone().autodiff();
    let (b, heads, head_dim, frames, side) = (2, 2, 8, 8, 4);
    let plane = side * side;
    let policy = DsvPolicy::new()
        .with_min_sparse_len(0)
        .with_query_cube([2, 2, 2])
        .with_sparsity_threshold(0.0)
        .with_min_budget_fraction(0.2)
        .with_max_budget_fraction(0.2);
    let layer = DsvAttentionConfig::new(heads * head_dim, heads, head_dim, policy).init(&device);
    // Threads of one process draw their inits from one generator: rank 0's weights for all.
    let mut layer = broadcast_module(comm, layer, 0).map_err(|e| e.to_string())?;
    layer.set_stage(DsvStage::Sparse);
    let x = normal([b, frames * plane, heads * head_dim], 90, &device);
    let (first, count) = shard_range(frames, 2, world, rank);
    let worst = compare_shard(
        comm,
        [b, heads, frames * plane, head_dim],
        (first * plane, count * plane),
        91,
        |q, k, v| {
            layer
                .forward(x.clone(), q, k, v, TokenGrid::new(frames, side, side))
                .expect("valid")
        },
        |q, k, v| {
            layer
                .forward_sharded(
                    x.clone().narrow(1, first * plane, count * plane),
                    q,
                    k,
                    v,
                    TokenGrid::new(count, side, side),
                    None,
                    comm,
                )
                .map_err(|e| e.to_string())
        },
    )?;
    within("DsvAttention::forward_sharded", worst)
}

fn hybrid(comm: &Communicator) -> Result<f64, String> {
    let (world, rank) = (comm.world(), comm.rank());
    let device = comm.device().clone();
    let (b, h, s, d, g) = (1, 6, 48, 8, 4);
    let low_rank = [0, 1].map(|i| normal([b, h, s, 4], 50 + i, &device));
    let keys = select_critical_keys(
        low_rank[0].clone(),
        low_rank[1].clone(),
        SelectionConfig::new(g, 2).with_key_block(4),
    )
    .map_err(|e| e.to_string())?;
    let costs = [0.9, 0.1, 0.5, 0.3, 0.8, 0.2];
    let mut worst = 0.0f64;
    for head_groups in (1..=world).filter(|hg| world % hg == 0) {
        let seq_groups = world / head_groups;
        let split = HybridSplit {
            head_groups,
            seq_groups,
            heads: lpt_assign(&costs, head_groups),
        };
        // The queries of sequence group sg: its ranks' shards.
        let group_range = |sg: usize| {
            let (lo, _) = shard_range(s, 4, world, sg * head_groups);
            let (hi_start, hi_len) = shard_range(s, 4, world, (sg + 1) * head_groups - 1);
            (lo, hi_start + hi_len - lo)
        };
        let index = |hg: usize, sg: usize| {
            let heads: Vec<i64> = split.heads[hg].iter().map(|&x| x as i64).collect();
            let idx = keys.indices().clone().select(
                1,
                Tensor::<1, Int>::from_data(TensorData::new(heads.clone(), [heads.len()]), &device),
            );
            let (lo, len) = group_range(sg);
            CriticalKeys::new(
                idx.narrow(2, lo / g, len / g),
                IndexShape {
                    group_size: g,
                    key_block: 4,
                    query_len: len,
                    key_len: s,
                },
            )
        };
        let full = |q, k, v| {
            sparse_attention(q, k, v, &keys, None, SparseAttentionOptions::default())
                .map(|out| out.output)
                .expect("valid")
        };
        let diff = compare(comm, [b, h, s, d], 4, 60, full, |q, k, v| {
            hybrid_attention(comm, &split, q, k, v, index).map_err(|e| e.to_string())
        })
        .map_err(|e| format!("{head_groups} head groups × {seq_groups} sequence groups: {e}"))?;
        worst = worst.max(diff);
    }
    let _ = rank;
    let bad = HybridSplit {
        head_groups: world + 1,
        seq_groups: 1,
        heads: lpt_assign(&costs, world + 1),
    };
    let x = normal([b, h, 4, d], 1, &device);
    let err =
        hybrid_attention::<CommError>(comm, &bad, x.clone(), x.clone(), x, |_, _| unreachable!())
            .unwrap_err();
    if err.argument() != "split" {
        return Err(format!(
            "a split that does not fit the world named `{}`",
            err.argument()
        ));
    }
    Ok(worst)
}

/// Clips of unequal length, at least four per rank for worlds up to 4 (8 clips, 22 frames).
const CLIP_FRAMES: [usize; 8] = [3, 2, 3, 2, 4, 3, 2, 3];

/// This rank's clips of `full` (cut along `dim` in frames of `unit` slices) under `layout`.
fn my_clips<const D: usize>(
    full: &Tensor<D>,
    layout: &ClipLayout,
    rank: usize,
    dim: usize,
    unit: usize,
) -> Vec<Tensor<D>> {
    layout
        .clips_of(rank)
        .map(|c| {
            full.clone()
                .narrow(dim, layout.frame_offset(c) * unit, layout.frames(c) * unit)
        })
        .collect()
}

/// Clip halos, whole-video moments and the rooted collectives.
fn clips(comm: &Communicator) -> Result<f64, String> {
    let (world, rank) = (comm.world(), comm.rank());
    let device = comm.device().clone();
    let layout = ClipLayout::new(CLIP_FRAMES.to_vec(), world).map_err(e)?;
    let frames = layout.total_frames();
    let full = normal([frames, 4], 31, &device);
    let mine = my_clips(&full, &layout, rank, 0, 1);
    let mut worst = 0.0f64;
    comm.reset_stats();
    let halos = clip_halos(comm, &layout, &mine, 0, 2).map_err(e)?;
    for (c, (before, after)) in layout.clips_of(rank).zip(halos) {
        if before.is_some() != (c > 0) || after.is_some() != (c + 1 < layout.clips()) {
            return Err(format!(
                "clip {c}: halos present {:?}",
                (before.is_some(), after.is_some())
            ));
        }
        if let Some(b) = before {
            worst = worst.max(rel(
                b,
                full.clone().narrow(0, layout.frame_offset(c) - 2, 2),
            ));
        }
        if let Some(a) = after {
            worst = worst.max(rel(
                a,
                full.clone()
                    .narrow(0, layout.frame_offset(c) + layout.frames(c), 2),
            ));
        }
    }
    // Only boundaries between ranks move data: two rows of 4 f32 to each neighbour.
    let neighbours = usize::from(rank > 0) + usize::from(rank + 1 < world);
    check_bytes(comm, "clip_halos", (neighbours * 2 * 4 * 4) as u64)?;
    if worst != 0.0 {
        return Err(format!(
            "clip_halos: halos differ from the neighbours' edges by {worst}"
        ));
    }

    // Moments over (T, C) of a [B, T, C] video, each rank holding its clips' frames.
    let video = normal([2, frames, 3], 32, &device);
    let (mean, var) = synced_moments(
        comm,
        &layout,
        my_clips(&video, &layout, rank, 1, 1),
        &[1, 2],
    )
    .map_err(e)?;
    let want_mean = video.clone().mean_dim(1).mean_dim(2);
    let want_var = (video - want_mean.clone()).square().mean_dim(1).mean_dim(2);
    worst = worst.max(within("synced_moments mean", rel(mean, want_mean))?);
    worst = worst.max(within("synced_moments var", rel(var, want_var))?);

    // Rooted collectives: the last rank broadcasts, the odd ranks gather, rank 0 collects.
    let root = world - 1;
    let b = comm
        .broadcast(normal([2, 3], 40 + rank as u64, &device), root)
        .map_err(e)?;
    worst = worst.max(within(
        "broadcast",
        rel(b, normal([2, 3], 40 + root as u64, &device)),
    )?);
    let senders: Vec<usize> = (0..world).filter(|r| r % 2 == 1).collect();
    if !senders.is_empty() {
        let own = (rank % 2 == 1).then(|| normal([rank, 2], 50 + rank as u64, &device));
        let got = comm.gather_from(own, &senders, 0).map_err(e)?;
        let want = Tensor::cat(
            senders
                .iter()
                .map(|&r| normal([r, 2], 50 + r as u64, &device))
                .collect(),
            0,
        );
        worst = worst.max(within("gather_from", rel(got, want))?);
    }
    let got = comm
        .gather_to(normal([rank + 1, 2], 60 + rank as u64, &device), 0, 0)
        .map_err(e)?;
    match (rank, got) {
        (0, Some(got)) => {
            let want = Tensor::cat(
                (0..world)
                    .map(|r| normal([r + 1, 2], 60 + r as u64, &device))
                    .collect(),
                0,
            );
            worst = worst.max(within("gather_to", rel(got, want))?);
        }
        (0, None) | (_, Some(_)) => {
            return Err(format!("gather_to: rank {rank} got the wrong side"));
        }
        _ => {}
    }
    Ok(worst)
}

/// Dual-scope attention with the clips spread over the ranks equals the same clips on one
/// rank, outputs and q, k, v gradients, and sends the bytes of the formula.
fn dual_scope(comm: &Communicator) -> Result<f64, String> {
    const N: usize = 3;
    let (world, rank) = (comm.world(), comm.rank());
    let layout = ClipLayout::new(CLIP_FRAMES.to_vec(), world).map_err(e)?;
    let alone = ClipLayout::new(CLIP_FRAMES.to_vec(), 1).map_err(e)?;
    let config = DualScopeConfig::new()
        .with_window(2)
        .with_global_frames(4)
        .with_scope_bias(1.5);
    let sigmas = [0.8, 0.2];
    let (b, h, d) = (2, 2, 8);
    let dims = [b, h, layout.total_frames() * N, d];
    let single = Communicator::single(comm.device().clone());
    let clips = layout.clips_of(rank);
    let start = layout.frame_offset(clips.start) * N;
    let len = (layout.frame_offset(clips.end - 1) + layout.frames(clips.end - 1)) * N - start;
    comm.reset_stats();
    let worst = compare_shard(
        comm,
        dims,
        (start, len),
        70,
        |q, k, v| {
            let plan =
                DualScopePlan::new(&single, &alone, N, &config, &sigmas).expect("one rank plans");
            let cut = |x: Tensor<4>| my_clips(&x, &alone, 0, 2, N);
            Tensor::cat(
                plan.attend(cut(q), cut(k), cut(v))
                    .expect("one rank attends"),
                2,
            )
        },
        |q, k, v| {
            let plan = DualScopePlan::new(comm, &layout, N, &config, &sigmas).map_err(e)?;
            // This rank's tokens, cut into its clips.
            let cut = |x: Tensor<4>| -> Vec<Tensor<4>> {
                clips
                    .clone()
                    .map(|c| {
                        x.clone().narrow(
                            2,
                            layout.frame_offset(c) * N - start,
                            layout.frames(c) * N,
                        )
                    })
                    .collect()
            };
            Ok(Tensor::cat(
                plan.attend(cut(q), cut(k), cut(v)).map_err(e)?,
                2,
            ))
        },
    )?;
    // K and V of `window` frames to each neighbour, and this rank's global frames to every
    // other rank.
    let frame_bytes = (2 * b * h * d * N * 4) as u64;
    let neighbours = u64::from(rank > 0) + u64::from(rank + 1 < world);
    let own_global = config
        .global_frame_ids(layout.total_frames())
        .into_iter()
        .filter(|&f| layout.owner(layout.clip_of(f)) == rank)
        .count() as u64;
    check_bytes(
        comm,
        "dual_scope",
        (neighbours * config.window as u64 + own_global * (world as u64 - 1)) * frame_bytes,
    )?;
    Ok(worst)
}

/// A two-layer model for the data-parallel case; only rank 0 uses `head`, as only the first
/// share trains DSV's predictors.
#[derive(Module, Debug)]
struct Net {
    body: Linear,
    head: Linear,
}

/// Gradients of shares of a batch all-reduced over the ranks equal the gradients of the whole
/// batch on one rank, including a parameter only one rank has a gradient for.
fn data_parallel(comm: &Communicator) -> Result<f64, String> {
    let (world, rank) = (comm.world(), comm.rank());
    let device = comm.device().clone();
    let ad = device.clone().autodiff();
    let linear = |i: usize, o: usize, seed: u64| Linear {
        weight: burn::module::Param::from_tensor(normal([i, o], seed, &ad)),
        bias: Some(burn::module::Param::from_tensor(normal([o], seed + 1, &ad))),
    };
    let net = Net {
        body: linear(5, 3, 80),
        head: linear(3, 2, 82),
    };
    let batch = 7;
    let x = normal([batch, 5], 84, &ad);
    let y = normal([batch, 3], 85, &ad);
    let first = shard_range(batch, 1, world, 0);
    // The loss of rows `(start, len)`, normalised by the whole batch, plus the head's term
    // on the first share's rows.
    let loss = |(start, len): (usize, usize), with_head: bool| {
        let out = net.body.forward(x.clone().narrow(0, start, len));
        let fit = (out.clone() - y.clone().narrow(0, start, len))
            .square()
            .sum()
            / batch as f64;
        if with_head {
            let head_rows = out.narrow(0, 0, first.1.min(len));
            fit + net.head.forward(head_rows).square().sum() * 0.1
        } else {
            fit
        }
    };
    let whole = GradientsParams::from_grads(
        (loss((0, batch), false) + loss(first, true) - loss(first, false)).backward(),
        &net,
    );
    let mine = shard_range(batch, 1, world, rank);
    let local = GradientsParams::from_grads(loss(mine, rank == 0).backward(), &net);
    comm.reset_stats();
    let summed = all_reduce_gradients(comm, &net, local).map_err(e)?;
    let mut worst = 0.0f64;
    for (name, linear) in [("body", &net.body), ("head", &net.head)] {
        let got = summed
            .get::<2>(linear.weight.id)
            .ok_or(format!("{name}.weight: no gradient"))?;
        let want = whole
            .get::<2>(linear.weight.id)
            .ok_or(format!("{name}.weight: none on one rank"))?;
        worst = worst.max(within(&format!("{name}.weight gradient"), rel(got, want))?);
        let bias = linear.bias.as_ref().expect("bias").id;
        let got = summed
            .get::<1>(bias)
            .ok_or(format!("{name}.bias: no gradient"))?;
        let want = whole
            .get::<1>(bias)
            .ok_or(format!("{name}.bias: none on one rank"))?;
        worst = worst.max(within(&format!("{name}.bias gradient"), rel(got, want))?);
    }
    // One flat vector (26 parameters and 4 presence flags) through a reduce-scatter and an
    // all-gather.
    let n = 26 + 4;
    let slice = |r: usize| (r + 1) * n / world - r * n / world;
    let sent: usize =
        (0..world).filter(|&r| r != rank).map(slice).sum::<usize>() + (world - 1) * slice(rank);
    check_bytes(
        comm,
        "all_reduce_gradients",
        if world == 1 { 0 } else { 4 * sent as u64 },
    )?;
    Ok(worst)
}
