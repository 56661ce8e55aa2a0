//! DSV's hybrid context parallelism: head groups × sequence groups. Inside a sequence group
//! an all-to-all turns sequence shards into head shards (placed by LPT on per-head cost);
//! across sequence groups each rank fetches only the remote keys its index selected.

use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_attn::{CriticalKeys, SparseAttnError};

use crate::CommError;
use crate::Communicator;
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

/// Sparse attention over this rank's sequence shard `q, k, v: [B, H, S_r, D]` (shards in
/// rank order) run as DSV's hybrid `split`. This rank is head group
/// `g = rank % head_groups` of sequence group `s = rank / head_groups`; `index` gives the
/// critical keys of head group `g`'s heads (in `split.heads[g]` order) for the queries of
/// sequence group `s`, over all keys. Returns this rank's output shard; equals unsharded
/// sparse attention, gradients included.
pub fn hybrid_attention<E: Into<CommError>>(
    comm: &Communicator,
    split: &HybridSplit,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    index: impl FnOnce(usize, usize) -> Result<CriticalKeys, E>,
) -> Result<Tensor<4>, CommError> {
    const F: &str = "hybrid_attention";
    let (hg, sg) = (split.head_groups, split.seq_groups);
    let world = comm.world();
    SparseAttnError::check(
        hg * sg == world && split.heads.len() == hg,
        F,
        "split",
        format!("head_groups × seq_groups = {world} ranks and one head list per head group"),
        format!("{hg} × {sg}, {} head lists", split.heads.len()),
    )?;
    let heads = q.dims()[1];
    let order: Vec<usize> = split.heads.concat();
    let mut seen = order.clone();
    seen.sort_unstable();
    SparseAttnError::check(
        seen == (0..heads).collect::<Vec<_>>() && split.heads.iter().all(|h| !h.is_empty()),
        F,
        "split.heads",
        format!("non-empty head lists that together hold each of the {heads} heads once"),
        format!("{:?}", split.heads),
    )?;
    let sizes: Vec<usize> = split.heads.iter().map(Vec::len).collect();
    let mut inverse = vec![0; heads];
    for (at, &head) in order.iter().enumerate() {
        inverse[head] = at;
    }
    let select_heads = |x: Tensor<4>, ids: &[usize]| {
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(
                ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [ids.len()],
            ),
            &x.device(),
        );
        x.select(1, idx)
    };
    let (g, s) = (comm.rank() % hg, comm.rank() / hg);
    let seq_group = comm.subgroup(&(s * hg..(s + 1) * hg).collect::<Vec<_>>())?;
    let head_group = comm.subgroup(&(0..sg).map(|s| s * hg + g).collect::<Vec<_>>())?;
    let lens = seq_group.gather_sizes(q.dims()[2])?;
    // Sequence shards → head shards inside the sequence group.
    let to_heads = |x: Tensor<4>| seq_group.all_to_all(select_heads(x, &order), 1, &sizes, 2);
    let (q, k, v) = (to_heads(q)?, to_heads(k)?, to_heads(v)?);
    // Sparse sequence parallelism across the sequence groups of this head group.
    let out = sparse_sequence_attention(
        &head_group,
        q,
        k,
        v,
        &index(g, s).map_err(Into::into)?,
        None,
    )?;
    // Head shards → sequence shards, heads back in their order.
    Ok(select_heads(
        seq_group.all_to_all(out, 2, &lens, 1)?,
        &inverse,
    ))
}
