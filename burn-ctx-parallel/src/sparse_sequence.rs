//! DSV's sequence-wise context parallelism for sparse attention: each rank holds a shard of
//! the sequence and fetches from the other ranks only the key/value rows that its query
//! groups selected, instead of passing every K/V block round a ring.

use std::collections::BTreeSet;

use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_attn::{
    CriticalKeys, IndexShape, SparseAttentionOptions, SparseAttnError, sparse_attention,
};

use crate::CommError;
use crate::Communicator;

/// What one rank pulls: per source rank the flat row ids of that rank's `[B·H·S_j, D]` K/V,
/// and the map from the pulled pool to the compact `[B, H, M·key_block, D]` keys.
struct FetchPlan {
    rows_from: Vec<Vec<i64>>,
    compact_rows: Vec<i64>,
    compact_units: usize,
    remapped: Vec<i64>,
}

/// Sparse attention over this rank's sequence shard `q, k, v: [B, H, S_r, D]` (shards in
/// rank order) where its queries attend to the critical keys `index`: its query groups' unit
/// ids over the *whole* key sequence (`query_len = S_r`, `key_len = S`). This rank asks every
/// other rank for the rows its index selected there — each row of each (batch, head) once,
/// only what was selected — serves the rows the others ask of it, and runs sparse attention
/// on what it gathered. Gradients flow back through the fetch to the owners of the keys.
///
/// Shards must align with units: every shard but the last a multiple of the key block, and
/// with blocks (`key_block > 1`) the sequence a multiple of the block.
pub fn sparse_sequence_attention(
    comm: &Communicator,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    index: &CriticalKeys,
    scale: Option<f64>,
) -> Result<Tensor<4>, CommError> {
    const F: &str = "sparse_sequence_attention";
    let (world, rank) = (comm.world(), comm.rank());
    let [b, h, len, d] = k.dims();
    SparseAttnError::check(
        v.dims() == k.dims() && q.dims()[..2] == [b, h] && q.dims()[3] == d,
        F,
        "k",
        format!("[{b}, {h}, S_r, {d}] in k and v, [{b}, {h}, S_r, {d}] in q"),
        format!("{:?}, {:?}, {:?}", q.dims(), k.dims(), v.dims()),
    )?;
    let lens = comm.gather_sizes(len)?;
    let total: usize = lens.iter().sum();
    let offsets: Vec<usize> = lens
        .iter()
        .scan(0, |acc, &l| {
            let o = *acc;
            *acc += l;
            Some(o)
        })
        .collect();
    let block = index.key_block();
    SparseAttnError::check(
        index.key_len() == total && index.query_len() == q.dims()[2],
        F,
        "index",
        format!(
            "critical keys over all {total} keys for this rank's {} queries",
            q.dims()[2]
        ),
        format!(
            "key_len {}, query_len {}",
            index.key_len(),
            index.query_len()
        ),
    )?;
    SparseAttnError::check(
        index.indices().dims()[..2] == [b, h],
        F,
        "index",
        format!("an index of [{b}, {h}, G, k]"),
        format!("{:?}", index.indices().dims()),
    )?;
    SparseAttnError::check(
        block == 1 || total.is_multiple_of(block),
        F,
        "index",
        format!("a sequence ({total}) that is a multiple of the key block {block}"),
        total,
    )?;
    SparseAttnError::check(
        lens[..world - 1].iter().all(|l| l % block == 0),
        F,
        "k",
        format!("shards (all but the last) that are multiples of the key block {block}"),
        format!("{lens:?}"),
    )?;

    let plan = fetch_plan(index, &offsets, &lens, [b, h]);
    let device = q.device();
    // Ask every rank for the rows wanted from it (an empty list says "nothing").
    let others = comm.others();
    let asks = others
        .iter()
        .map(|&j| {
            (
                j,
                plan.rows_from[j]
                    .iter()
                    .flat_map(|r| r.to_le_bytes())
                    .collect(),
            )
        })
        .collect();
    let asked: Vec<Vec<i64>> = comm
        .exchange_bytes(F, asks, &others)?
        .into_iter()
        .map(|m| {
            m.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        })
        .collect();
    // K and V rows travel together as [rows, 2D].
    let kv = Tensor::cat(vec![k, v], 3).reshape([b * h * len, 2 * d]);
    let rows = |ids: &[i64]| {
        kv.clone().select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(ids.to_vec(), [ids.len()]), &device),
        )
    };
    let serve = others
        .iter()
        .zip(&asked)
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(&j, ids)| (j, rows(ids)))
        .collect();
    let from: Vec<usize> = others
        .iter()
        .copied()
        .filter(|&j| !plan.rows_from[j].is_empty())
        .collect();
    let agreed = format!(
        "sparse_sequence_attention {:?} [{b}, {h}, *, {d}] block {block}",
        kv.dtype()
    );
    let delivery = comm.exchange(F, "k", &agreed, serve, &from)?;
    // The pool is the sources' rows concatenated in rank order.
    let mut fetched = delivery.received.clone().into_iter();
    let pool: Vec<Tensor<2>> = (0..world)
        .filter(|&j| !plan.rows_from[j].is_empty())
        .map(|j| {
            if j == rank {
                rows(&plan.rows_from[j])
            } else {
                fetched.next().expect("one block of rows per source")
            }
        })
        .collect();
    let map = Tensor::<1, Int>::from_data(
        TensorData::new(plan.compact_rows.clone(), [plan.compact_rows.len()]),
        &device,
    );
    let compact = delivery.tie(Tensor::cat(pool, 0).select(0, map).reshape([
        b,
        h,
        plan.compact_units * block,
        2 * d,
    ]));
    let (kc, vc) = (compact.clone().narrow(3, 0, d), compact.narrow(3, d, d));
    let [_, _, groups, budget] = index.indices().dims();
    let remapped = Tensor::<4, Int>::from_data(
        TensorData::new(plan.remapped, [b, h, groups, budget]),
        &device,
    );
    let shape = IndexShape {
        key_len: plan.compact_units * block,
        ..index.shape()
    };
    let keys = CriticalKeys::new(remapped, shape)?;
    let options = SparseAttentionOptions {
        scale,
        ..SparseAttentionOptions::default()
    };
    Ok(sparse_attention(q, kc, vc, &keys, None, options)?.output)
}

/// Reads one rank's index back and plans its fetch: the distinct units of every (batch,
/// head), padded to the same count with copies of the first (never selected), their rows by
/// owner, and the index renumbered into the compact keys.
fn fetch_plan(
    keys: &CriticalKeys,
    offsets: &[usize],
    lens: &[usize],
    [b, h]: [usize; 2],
) -> FetchPlan {
    let block = keys.key_block();
    let ids: Vec<i64> = keys
        .indices()
        .to_data()
        .convert::<i64>()
        .try_into_vec()
        .expect("int index");
    let per_head = ids.len() / (b * h);
    let units: Vec<Vec<usize>> = ids
        .chunks_exact(per_head)
        .map(|c| {
            c.iter()
                .map(|&u| u as usize)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        })
        .collect();
    let width = units.iter().map(Vec::len).max().unwrap_or(1);
    let owner = |key: usize| offsets.partition_point(|&o| o <= key) - 1;
    let mut rows_from = vec![Vec::new(); lens.len()];
    let mut compact_rows = Vec::with_capacity(b * h * width * block);
    // Pool position of the first row of each pulled unit, per (batch·head, unit).
    let mut pulled: Vec<Vec<(usize, usize)>> = Vec::with_capacity(units.len());
    for (bh, list) in units.iter().enumerate() {
        let mut here = Vec::with_capacity(list.len());
        for &u in list {
            let j = owner(u * block);
            here.push((j, rows_from[j].len()));
            for key in u * block..u * block + block {
                rows_from[j].push((bh * lens[j] + key - offsets[j]) as i64);
            }
        }
        pulled.push(here);
    }
    // The pool is the sources' rows concatenated in rank order.
    let starts: Vec<usize> = rows_from
        .iter()
        .scan(0, |acc, r| {
            let o = *acc;
            *acc += r.len();
            Some(o)
        })
        .collect();
    for here in &pulled {
        for slot in 0..width {
            let (j, at) = here[if slot < here.len() { slot } else { 0 }];
            compact_rows.extend((0..block).map(|i| (starts[j] + at + i) as i64));
        }
    }
    let remapped = ids
        .chunks_exact(per_head)
        .zip(&units)
        .flat_map(|(chunk, list)| {
            chunk
                .iter()
                .map(move |&u| list.binary_search(&(u as usize)).expect("a listed unit") as i64)
        })
        .collect();
    FetchPlan {
        rows_from,
        compact_rows,
        compact_units: width,
        remapped,
    }
}
