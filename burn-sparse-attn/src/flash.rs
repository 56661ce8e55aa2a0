//! Dense attention in `O(S)` memory, forward and backward: the sparse attention op with every
//! key selected. Burn's own `module::attention` materialises the `[S_q, S_k]` scores under
//! autodiff; this keeps only the output and a log-sum-exp per row.

use alloc::format;

use burn::tensor::Tensor;

use crate::{
    CriticalKeys, IndexShape, SparseAttentionOptions, SparseAttentionOutput, SparseAttnError,
    sparse_attention,
};

/// Query rows per group and keys per block of the all-keys index: the index then holds
/// `ceil(S_q/64) · ceil(S_k/64)` ids per head (64 Ki at 16k tokens).
const TILE: usize = 64;

/// Dense attention `softmax(q·kᵀ·scale)·v` without a score matrix, differentiable in q, k and
/// v, with the per-row log-sum-exp (its `lse` is always `Some`).
///
/// `q: [B, H, Sq, D]`, `k, v: [B, H, Sk, D]`; `scale` defaults to `1/√D`. The same result as
/// Burn's `module::attention` (to rounding), in memory linear in the sequence, also in
/// training: this is the memory-efficient attention for a Burn model's dense layers.
pub fn flash_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: Option<f64>,
) -> Result<SparseAttentionOutput, SparseAttnError> {
    let [batch, heads, query_len, _] = q.dims();
    let key_len = k.dims()[2];
    SparseAttnError::check(
        key_len >= 1,
        "flash_attention",
        "k",
        "[B, H, Sk ≥ 1, D]",
        format!("{:?}", k.dims()),
    )?;
    SparseAttnError::check(
        query_len >= 1,
        "flash_attention",
        "q",
        "[B, H, Sq ≥ 1, D]",
        format!("{:?}", q.dims()),
    )?;
    let shape = IndexShape {
        group_size: TILE,
        key_block: TILE,
        query_len,
        key_len,
    };
    let keys = CriticalKeys::all_keys([batch, heads], shape, &q.device())?;
    let options = SparseAttentionOptions {
        scale,
        ..SparseAttentionOptions::default()
    };
    sparse_attention(q, k, v, &keys, None, options)
}
