//! DSV's hybrid context parallelism: head groups × sequence groups. Inside a sequence group
//! an all-to-all turns sequence shards into head shards (placed by LPT on per-head cost);
//! across sequence groups each rank fetches only the remote keys its index selected.

use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_attn::{CriticalKeys, SparseAttnError};

use crate::group::{DeviceGroup, Transport};
use crate::sparse_sequence::sparse_sequence_attention;

/// How a hybrid run splits `world = head_groups × seq_groups` ranks: rank
/// `r = seq_group · head_groups + head_group`, and head group `g` runs the heads
/// `heads[g]` (e.g. from [`crate::planner::lpt_assign`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HybridSplit {
    /// Ranks per sequence group (the all-to-all width).
    pub head_groups: usize,
    /// Sequence groups.
    pub seq_groups: usize,
    /// The heads of each head group; together every head once.
    pub heads: Vec<Vec<usize>>,
}

/// Sparse attention over sequence-sharded `q, k, v` (rank `r` holds `[B, H, S_r, D]`, shards
/// in sequence order) run as DSV's hybrid `split`. `index(head_group, seq_group)` gives the
/// critical keys of that head group's heads (in `split.heads` order) for the queries of that
/// sequence group, over all keys. Returns the output shards; equals unsharded sparse
/// attention, gradients included.
pub fn hybrid_attention<T: Transport + Clone>(
    group: &DeviceGroup<T>,
    split: &HybridSplit,
    q: Vec<Tensor<4>>,
    k: Vec<Tensor<4>>,
    v: Vec<Tensor<4>>,
    index: impl Fn(usize, usize) -> Result<CriticalKeys, SparseAttnError>,
) -> Result<Vec<Tensor<4>>, SparseAttnError> {
    const F: &str = "hybrid_attention";
    let (hg, sg) = (split.head_groups, split.seq_groups);
    let world = group.world();
    SparseAttnError::check(hg * sg == world && split.heads.len() == hg, F, "split", format!("head_groups × seq_groups = {world} ranks and one head list per head group"), format!("{hg} × {sg}, {} head lists", split.heads.len()))?;
    SparseAttnError::check(q.len() == world && k.len() == world && v.len() == world, F, "q", format!("one shard per rank ({world}) in q, k and v"), format!("{}, {}, {}", q.len(), k.len(), v.len()))?;
    let heads = q[0].dims()[1];
    let order: Vec<usize> = split.heads.concat();
    let mut seen = order.clone();
    seen.sort_unstable();
    SparseAttnError::check(seen == (0..heads).collect::<Vec<_>>() && split.heads.iter().all(|h| !h.is_empty()), F, "split.heads", format!("non-empty head lists that together hold each of the {heads} heads once"), format!("{:?}", split.heads))?;
    let sizes: Vec<usize> = split.heads.iter().map(Vec::len).collect();
    let mut inverse = vec![0; heads];
    for (at, &head) in order.iter().enumerate() {
        inverse[head] = at;
    }
    let select_heads = |x: Tensor<4>, ids: &[usize]| {
        let idx = Tensor::<1, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]), &x.device());
        x.select(1, idx)
    };
    let seq_ranks = |s: usize| (s * hg..(s + 1) * hg).collect::<Vec<_>>();
    let lens: Vec<usize> = q.iter().map(|x| x.dims()[2]).collect();

    // Sequence shards → head shards inside every sequence group.
    let mut by_rank: Vec<Option<[Tensor<4>; 3]>> = vec![None; world];
    let (mut q, mut k, mut v) = (q.into_iter(), k.into_iter(), v.into_iter());
    for s in 0..sg {
        let sub = group.subgroup(seq_ranks(s))?;
        let take = |it: &mut std::vec::IntoIter<Tensor<4>>| -> Result<Vec<Tensor<4>>, SparseAttnError> {
            let parts = it.by_ref().take(hg).map(|x| select_heads(x, &order)).collect();
            sub.all_to_all(parts, 1, &sizes, 2)
        };
        let (qs, ks, vs) = (take(&mut q)?, take(&mut k)?, take(&mut v)?);
        for (g, ((q, k), v)) in qs.into_iter().zip(ks).zip(vs).enumerate() {
            by_rank[s * hg + g] = Some([q, k, v]);
        }
    }
    // Sparse sequence parallelism across the sequence groups of every head group.
    let mut out: Vec<Option<Tensor<4>>> = vec![None; world];
    for g in 0..hg {
        let ranks: Vec<usize> = (0..sg).map(|s| s * hg + g).collect();
        let sub = group.subgroup(ranks.clone())?;
        let [mut qs, mut ks, mut vs] = [Vec::new(), Vec::new(), Vec::new()];
        for &r in &ranks {
            let [q, k, v] = by_rank[r].take().expect("filled above");
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        let keys = (0..sg).map(|s| index(g, s)).collect::<Result<Vec<_>, _>>()?;
        for (&r, o) in ranks.iter().zip(sparse_sequence_attention(&sub, qs, ks, vs, &keys, None)?) {
            out[r] = Some(o);
        }
    }
    // Head shards → sequence shards, heads back in their order.
    let mut result = Vec::with_capacity(world);
    for s in 0..sg {
        let sub = group.subgroup(seq_ranks(s))?;
        let parts = seq_ranks(s).into_iter().map(|r| out[r].take().expect("filled above")).collect();
        for x in sub.all_to_all(parts, 2, &lens[s * hg..(s + 1) * hg], 1)? {
            result.push(select_heads(x, &inverse));
        }
    }
    Ok(result)
}
