//! DSV's sequence-wise context parallelism for sparse attention: each rank holds a shard of
//! the sequence and fetches from the other ranks only the key/value rows that its query
//! groups selected, instead of passing every K/V block round a ring.

use std::collections::BTreeSet;

use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_attn::{CriticalKeys, SparseAttnError, sparse_attention};

use crate::group::{DeviceGroup, Transport};

/// What one rank pulls: per source rank the flat row ids of that rank's `[B·H·S_j, D]` K/V,
/// and the map from the pulled pool to the compact `[B, H, M·key_block, D]` keys.
struct FetchPlan {
    rows_from: Vec<Vec<i64>>,
    compact_rows: Vec<i64>,
    compact_units: usize,
    remapped: Vec<i64>,
}

/// Sparse attention over sequence-sharded `q, k, v` (rank `r` holds `[B, H, S_r, D]`, shards
/// in sequence order) where rank `r`'s queries attend to the critical keys `index[r]`: its
/// query groups' unit ids over the *whole* key sequence (`query_len = S_r`, `key_len = S`).
/// Every rank gathers the selected rows from their owners — each row of each (batch, head)
/// once, only what was selected — and runs sparse attention on them. Outputs stay sharded;
/// gradients flow back through the gathers to the owners of the keys.
///
/// Shards must align with units: every shard but the last a multiple of the key block, and
/// with blocks (`key_block > 1`) the sequence a multiple of the block.
pub fn sparse_sequence_attention<T: Transport>(group: &DeviceGroup<T>, q: Vec<Tensor<4>>, k: Vec<Tensor<4>>, v: Vec<Tensor<4>>, index: &[CriticalKeys], scale: Option<f64>) -> Result<Vec<Tensor<4>>, SparseAttnError> {
    const F: &str = "sparse_sequence_attention";
    let world = group.world();
    SparseAttnError::check(q.len() == world && k.len() == world && v.len() == world && index.len() == world, F, "q", format!("one shard per rank ({world}) in q, k, v and index"), format!("{}, {}, {}, {}", q.len(), k.len(), v.len(), index.len()))?;
    let [b, h, _, d] = k[0].dims();
    let lens: Vec<usize> = k.iter().map(|x| x.dims()[2]).collect();
    let total: usize = lens.iter().sum();
    let offsets: Vec<usize> = lens.iter().scan(0, |acc, &l| { let o = *acc; *acc += l; Some(o) }).collect();
    let block = index[0].key_block();
    for (r, keys) in index.iter().enumerate() {
        SparseAttnError::check(keys.key_len() == total && keys.query_len() == q[r].dims()[2] && keys.key_block() == block, F, "index", format!("rank {r}: critical keys over all {total} keys for its {} queries, key block {block}", q[r].dims()[2]), format!("key_len {}, query_len {}, key block {}", keys.key_len(), keys.query_len(), keys.key_block()))?;
        SparseAttnError::check(k[r].dims() == [b, h, lens[r], d] && v[r].dims() == [b, h, lens[r], d] && q[r].dims()[..2] == [b, h], F, "k", format!("rank {r}: [{b}, {h}, S_r, {d}] in k and v, [{b}, {h}, S_r, D] in q"), format!("{:?}, {:?}, {:?}", q[r].dims(), k[r].dims(), v[r].dims()))?;
    }
    SparseAttnError::check(block == 1 || total % block == 0, F, "index", format!("a sequence ({total}) that is a multiple of the key block {block}"), total)?;
    SparseAttnError::check(lens[..world - 1].iter().all(|l| l % block == 0), F, "k", format!("shards (all but the last) that are multiples of the key block {block}"), format!("{lens:?}"))?;

    let flat = |x: &Tensor<4>, len: usize| x.clone().reshape([b * h * len, d]);
    let mut out = Vec::with_capacity(world);
    for (r, q_r) in q.into_iter().enumerate() {
        let plan = fetch_plan(&index[r], &offsets, &lens, [b, h]);
        let device = q_r.device();
        let gather = |x: &[Tensor<4>]| {
            let pool: Vec<Tensor<2>> = plan
                .rows_from
                .iter()
                .enumerate()
                .filter(|(_, rows)| !rows.is_empty())
                .map(|(j, rows)| {
                    let ids = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &x[j].device());
                    group.send(flat(&x[j], lens[j]).select(0, ids), j, r)
                })
                .collect();
            let map = Tensor::<1, Int>::from_data(TensorData::new(plan.compact_rows.clone(), [plan.compact_rows.len()]), &device);
            Tensor::cat(pool, 0).select(0, map).reshape([b, h, plan.compact_units * block, d])
        };
        let (kc, vc) = (gather(&k), gather(&v));
        let [_, _, groups, budget] = index[r].indices().dims();
        let remapped = Tensor::<4, Int>::from_data(TensorData::new(plan.remapped, [b, h, groups, budget]), &device);
        let keys = CriticalKeys::new(remapped, index[r].group_size(), block, index[r].query_len(), plan.compact_units * block)?;
        out.push(sparse_attention(q_r, kc, vc, &keys, scale)?);
    }
    Ok(out)
}

/// Reads one rank's index back and plans its fetch: the distinct units of every (batch,
/// head), padded to the same count with copies of the first (never selected), their rows by
/// owner, and the index renumbered into the compact keys.
fn fetch_plan(keys: &CriticalKeys, offsets: &[usize], lens: &[usize], [b, h]: [usize; 2]) -> FetchPlan {
    let block = keys.key_block();
    let ids: Vec<i64> = keys.indices().to_data().convert::<i64>().try_into_vec().expect("int index");
    let per_head = ids.len() / (b * h);
    let units: Vec<Vec<usize>> = ids.chunks_exact(per_head).map(|c| c.iter().map(|&u| u as usize).collect::<BTreeSet<_>>().into_iter().collect()).collect();
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
    let starts: Vec<usize> = rows_from.iter().scan(0, |acc, r| { let o = *acc; *acc += r.len(); Some(o) }).collect();
    for here in &pulled {
        for slot in 0..width {
            let (j, at) = here[if slot < here.len() { slot } else { 0 }];
            compact_rows.extend((0..block).map(|i| (starts[j] + at + i) as i64));
        }
    }
    let remapped = ids
        .chunks_exact(per_head)
        .zip(&units)
        .flat_map(|(chunk, list)| chunk.iter().map(move |&u| list.binary_search(&(u as usize)).expect("a listed unit") as i64))
        .collect();
    FetchPlan { rows_from, compact_rows, compact_units: width, remapped }
}
