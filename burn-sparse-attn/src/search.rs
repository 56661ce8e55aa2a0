//! Online search of critical keys from the full queries and keys (AdaSpa, Xia et al. 2025,
//! arXiv 2502.21079): for models without a trained predictor.

use alloc::format;
use alloc::vec::Vec;

use burn::tensor::{Bool, Tensor, kind::Basic};

use crate::functions::checks::check_qkv;
use crate::{CriticalKeys, IndexShape, SelectionConfig, SparseAttnError};

/// Output of [`dense_attention_with_search`].
#[derive(Clone, Debug)]
pub struct SearchedAttention {
    /// Dense attention output `[B, H, Sq, D]`.
    pub output: Tensor<4>,
    /// Log-sum-exp of each query row's scaled scores over all keys `[B, H, Sq]`: with
    /// [`sparse_attention`](crate::sparse_attention)'s over the selected
    /// keys it gives the share of each row's weight the selection holds.
    pub lse: Tensor<3>,
    /// The `budget` key units of each query group holding the most attention mass.
    pub keys: CriticalKeys,
    /// Per head `[H]`: the share of the attention mass the selection keeps, averaged over
    /// the batch and the query groups (1 = the sparse attention sees every weight).
    pub recall: Tensor<1>,
}

/// Scores per chunk of query rows: bounds the search's memory at `O(S)` rows of keys.
const CHUNK_SCORES: usize = 1 << 24;

/// Dense attention that also finds each query group's critical keys in the same pass.
///
/// `q: [B, H, Sq, D]`, `k, v: [B, H, Sk, D]`; `config` groups consecutive queries and
/// keys as in [`select_critical_keys`](crate::select_critical_keys). The softmax that gives
/// each row its dense output, normalised by the row's log-sum-exp, also gives the row's
/// exact attention weights; summed over the rows of a group and the keys of a unit they are
/// the unit's attention mass, and the `config.budget` heaviest units become the group's
/// index; the rows' log-sum-exps come back too. Queries run in chunks of whole groups, so
/// memory stays at about 2²⁴ scores whatever the sequence length. Nothing here is
/// differentiable (a sampling-time search).
///
/// `bias: [B or 1, H or 1, Sq, Sk]` is added to the scaled scores, as Burn's
/// `module::attention` adds its `attn_bias`; −∞ hides a key from a row. A group never
/// selects a unit that any of its rows cannot see, so sparse attention on the index needs no
/// mask: the budget is cut to the fewest units some group's rows all see, and every group
/// must share at least one.
pub fn dense_attention_with_search(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<4>>,
    config: SelectionConfig,
    scale: Option<f64>,
) -> Result<SearchedAttention, SparseAttnError> {
    const F: &str = "dense_attention_with_search";
    let scale = check_qkv(F, &q, &k, &v, scale)?;
    let [b, h, sq, _] = q.dims();
    let sk = k.dims()[2];
    config.check(F, sk)?;
    let units = sk.div_ceil(config.key_block);
    let bias = bias
        .map(|bias| check_bias(F, bias, [b, h, sq, sk]))
        .transpose()?;
    // Per group and unit: whether some row of the group cannot see it.
    let blocked = bias
        .as_ref()
        .map(|bias| hidden_units(bias, config.group_size, config.key_block));
    let budget = match &blocked {
        Some(blocked) => {
            let most = blocked.clone().int().sum_dim(3).max().into_scalar::<i64>();
            let open = units as i64 - most;
            SparseAttnError::check(
                open >= 1,
                F,
                "bias",
                "a bias that leaves every query group at least one key unit all its rows see \
                 (−∞ hides a key)",
                "a group whose rows share no visible key",
            )?;
            config.budget.min(open as usize)
        }
        None => config.budget,
    };

    let group = config.group_size;
    let groups = sq.div_ceil(group);
    let chunk_groups = (CHUNK_SCORES / (b * h * sk * group).max(1)).max(1);
    let (q, k, v) = (q.detach(), k.detach(), v.detach());
    let keys_t = k.swap_dims(2, 3);
    let (mut outputs, mut lses, mut indices, mut kept) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for first in (0..groups).step_by(chunk_groups) {
        let chunk = chunk_groups.min(groups - first);
        let start = first * group;
        let rows = (chunk * group).min(sq - start);
        let mut scores = q.clone().narrow(2, start, rows).matmul(keys_t.clone()) * scale;
        if let Some(bias) = &bias {
            scores = scores + bias.clone().narrow(2, start, rows).expand([b, h, rows, sk]);
        }
        let max = scores.clone().max_dim(3);
        let weights = (scores - max.clone()).exp();
        let total = weights.clone().sum_dim(3);
        lses.push(max + total.clone().log());
        let probs = weights / total;
        outputs.push(probs.clone().matmul(v.clone()));
        let mut mass = unit_mass(group_mass(probs, group), config.key_block);
        if let Some(blocked) = &blocked {
            let hide = blocked.clone().narrow(2, first, chunk);
            mass = mass.mask_fill(hide.expand([b, h, chunk, units]), -1.0);
        }
        // A full sort rather than `topk`: Burn's CubeCL top-k returns -1 ids for large k.
        let (sorted, order) = mass.sort_descending_with_indices(3);
        let (top, ids) = (sorted.narrow(3, 0, budget), order.narrow(3, 0, budget));
        // Kernels read each row's units in ascending order.
        indices.push(ids.sort(3));
        kept.push(top.sum_dim(3));
    }
    // Each group's kept mass over its rows (the last group may be short).
    let rows_per_group: Vec<f32> = (0..groups)
        .map(|g| (group.min(sq - g * group)) as f32)
        .collect();
    let rows_per_group = Tensor::<1>::from_floats(rows_per_group.as_slice(), &q.device());
    let recall = (cat(kept, 2).reshape([b, h, groups]) / rows_per_group.reshape([1, 1, groups]))
        .mean_dim(2)
        .mean_dim(0)
        .reshape([h]);
    Ok(SearchedAttention {
        output: cat(outputs, 2),
        lse: cat(lses, 2).reshape([b, h, sq]),
        keys: CriticalKeys::trusted(
            cat(indices, 2),
            IndexShape {
                group_size: group,
                key_block: config.key_block,
                query_len: sq,
                key_len: sk,
            },
        ),
        recall,
    })
}

/// Checks `bias` against the scores' `[b, h, sq, sk]`.
fn check_bias(
    function: &'static str,
    bias: Tensor<4>,
    [b, h, sq, sk]: [usize; 4],
) -> Result<Tensor<4>, SparseAttnError> {
    let [bb, bh, bq, bk] = bias.dims();
    SparseAttnError::check(
        (bb == 1 || bb == b) && (bh == 1 || bh == h) && bq == sq && bk == sk,
        function,
        "bias",
        format!("[{b} or 1, {h} or 1, {sq}, {sk}] (batch, heads, queries, keys)"),
        format!("{:?}", bias.dims()),
    )?;
    Ok(bias.detach())
}

/// Per group of `group` rows and unit of `key_block` keys: whether `bias` hides a key of the
/// unit from a row of the group. `[B', H', G, units]` for a `[B', H', Sq, Sk]` bias.
fn hidden_units(bias: &Tensor<4>, group: usize, key_block: usize) -> Tensor<4, Bool> {
    let hidden = bias.clone().equal_elem(f32::NEG_INFINITY).float();
    unit_mass(group_mass(hidden, group), key_block).greater_elem(0.0)
}

/// `probs: [B, H, rows, Sk]` summed over each group of `group` consecutive rows (the last
/// may be short): `[B, H, ceil(rows / group), Sk]`.
fn group_mass(probs: Tensor<4>, group: usize) -> Tensor<4> {
    let [b, h, rows, sk] = probs.dims();
    let full = rows / group;
    let whole = (full > 0).then(|| {
        probs
            .clone()
            .narrow(2, 0, full * group)
            .reshape([b * h * full, group, sk])
            .sum_dim(1)
            .reshape([b, h, full, sk])
    });
    let rest = (rows % group > 0).then(|| probs.narrow(2, full * group, rows % group).sum_dim(2));
    cat(whole.into_iter().chain(rest).collect(), 2)
}

/// `mass: [B, H, G, Sk]` summed over units of `key_block` consecutive keys (the last may be
/// short): `[B, H, G, ceil(Sk / key_block)]`.
fn unit_mass(mass: Tensor<4>, key_block: usize) -> Tensor<4> {
    if key_block == 1 {
        return mass;
    }
    let [b, h, g, sk] = mass.dims();
    let units = sk.div_ceil(key_block);
    let padded = match units * key_block - sk {
        0 => mass,
        pad => {
            let zeros = Tensor::zeros([b, h, g, pad], &mass.device());
            Tensor::cat(alloc::vec![mass, zeros], 3)
        }
    };
    padded
        .reshape([b * h * g * units, key_block])
        .sum_dim(1)
        .reshape([b, h, g, units])
}

/// Concatenates `parts` along `dim` (one part is returned as it is).
fn cat<K: Basic>(mut parts: Vec<Tensor<4, K>>, dim: usize) -> Tensor<4, K> {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Tensor::cat(parts, dim)
    }
}
