//! The reference maths at the Tensor level, on any device: the oracle that kernels are
//! tested against. Built from Burn's own differentiable ops, so on an autodiff device its
//! gradients come from Burn's autodiff, independent of the hand-written backward.

use burn::backend::Dispatch;
use burn::tensor::{Int, Tensor};

use crate::functions::run_forward;
use crate::{CriticalKeys, F32Precision, SelectionConfig, SparseAttentionOutput, reference};

/// [`select_critical_keys`](crate::select_critical_keys) computed by the reference body.
/// Arguments are trusted: validate them with the public function first.
pub fn reference_selection(
    q_lr: Tensor<4>,
    k_lr: Tensor<4>,
    config: SelectionConfig,
) -> CriticalKeys {
    let (sq, sk) = (q_lr.dims()[2], k_lr.dims()[2]);
    let index_dtype = q_lr.device().settings().int_dtype;
    let index = reference::select_critical_keys::<Dispatch>(
        q_lr.into_dispatch(),
        k_lr.into_dispatch(),
        config,
        index_dtype,
    );
    CriticalKeys::trusted(
        Tensor::<4, Int>::from_dispatch(index),
        config.index_shape(sq, sk),
    )
}

/// [`sparse_attention`](crate::sparse_attention) without a bias computed by the reference
/// body at score scale `scale`. Arguments are trusted.
pub fn reference_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    scale: f64,
) -> SparseAttentionOutput {
    run_forward(
        q,
        k,
        v,
        keys,
        keys.layout(scale, F32Precision::Exact),
        reference::sparse_attention_forward::<Dispatch>,
    )
}
