//! [`sparse_attention`]: each query attends to the critical keys of its group.

use alloc::format;
use alloc::vec;

use burn::backend::Dispatch;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::checks::check_attention;
use crate::{
    AttnInputs, AttnLayout, CriticalKeys, DenseFallback, F32Precision, SparseAttnError,
    SparseAttnOps,
};

/// Options of [`sparse_attention`], as `AttentionModuleOptions` are of Burn's
/// `module::attention`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SparseAttentionOptions {
    /// Scale of the scores; `None` is `1/√D`.
    pub scale: Option<f64>,
    /// Where this policy says sparse cannot win (short sequences, dense selections), Burn's
    /// dense attention runs instead, masked to the same keys: the same output, without the
    /// log-sum-exp.
    pub fallback: Option<DenseFallback>,
    /// How f32 inputs are multiplied: exactly (the default) or on TF32 tensor cores where the
    /// device has them.
    pub f32_precision: F32Precision,
}

impl SparseAttentionOptions {
    /// The options with the scores scaled by `scale`.
    pub fn with_scale(self, scale: f64) -> Self {
        Self {
            scale: Some(scale),
            ..self
        }
    }

    /// The options with a dense fallback under `fallback`.
    pub fn with_fallback(self, fallback: DenseFallback) -> Self {
        Self {
            fallback: Some(fallback),
            ..self
        }
    }

    /// The options with f32 inputs multiplied at `f32_precision`.
    pub fn with_f32_precision(self, f32_precision: F32Precision) -> Self {
        Self {
            f32_precision,
            ..self
        }
    }
}

/// Output of [`sparse_attention`].
#[derive(Clone, Debug)]
pub struct SparseAttentionOutput {
    /// Attention output `[B, H, Sq, D]`, differentiable with respect to q, k and v.
    pub output: Tensor<4>,
    /// Log-sum-exp of each query row's scaled (and biased) scores over its selected keys
    /// `[B, H, Sq]` (f32, no gradient): lets callers merge partial attentions exactly.
    /// `None` only where [`SparseAttentionOptions::fallback`] ran dense attention.
    pub lse: Option<Tensor<3>>,
}

/// Sparse attention: each query attends only to the critical keys of its group, the
/// counterpart of Burn's `module::attention(q, k, v, mask, attn_bias, options)` with the
/// index `keys` in place of a mask.
///
/// `q: [B, H, Sq, D]`, `k, v: [B, H, Sk, D]`. `attn_bias: [B, 1, 1, Sk]` adds a bias per key
/// to every query's scaled score of it (a scope or distance bias that depends only on the
/// key), exactly, through one more column: `[q, 1]·[k, b/scale]ᵀ·scale = q·kᵀ·scale + b`,
/// with a zero column of values. Gradients flow to q, k and v through a hand-written
/// backward; none flows to the index or the bias.
pub fn sparse_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    attn_bias: Option<Tensor<4>>,
    options: SparseAttentionOptions,
) -> Result<SparseAttentionOutput, SparseAttnError> {
    const F: &str = "sparse_attention";
    let scale = check_attention(F, &q, &k, &v, keys, options.scale)?;
    let [b, h, sq, d] = q.dims();
    let sk = k.dims()[2];
    if let Some(bias) = &attn_bias {
        SparseAttnError::check(
            bias.dims() == [b, 1, 1, sk],
            F,
            "attn_bias",
            format!("[{b}, 1, 1, {sk}] (batch, one row of keys)"),
            format!("{:?}", bias.dims()),
        )?;
        SparseAttnError::check(
            bias.device() == q.device(),
            F,
            "attn_bias",
            "on q's device",
            "another device",
        )?;
    }
    if options.fallback.is_some_and(|f| f.prefers_dense(keys)) {
        let bias = attn_bias.map(|bias| bias.expand([b, h, sq, sk]));
        return Ok(SparseAttentionOutput {
            output: masked_dense(q, k, v, keys, bias, scale),
            lse: None,
        });
    }
    let precision = options.f32_precision;
    let Some(bias) = attn_bias else {
        return Ok(sparse_forward(q, k, v, keys, scale, precision));
    };
    let column = (bias.swap_dims(2, 3).expand([b, h, sk, 1]) / scale).cast(k.dtype());
    let ones = q.clone().narrow(3, 0, 1).ones_like();
    let zeros = v.clone().narrow(3, 0, 1).zeros_like();
    let q = Tensor::cat(vec![q, ones], 3);
    let k = Tensor::cat(vec![k, column], 3);
    let v = Tensor::cat(vec![v, zeros], 3);
    let out = sparse_forward(q, k, v, keys, scale, precision);
    Ok(SparseAttentionOutput {
        output: out.output.narrow(3, 0, d),
        lse: out.lse,
    })
}

/// The backend's sparse forward on checked arguments.
fn sparse_forward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    scale: f64,
    f32_precision: F32Precision,
) -> SparseAttentionOutput {
    run_forward(
        q,
        k,
        v,
        keys,
        keys.layout(scale, f32_precision),
        <Dispatch as SparseAttnOps>::sparse_attention_forward,
    )
}

/// The forward `op` (the backend's, or the reference body for the oracle) on checked
/// arguments, reading `keys` with `layout`.
pub(crate) fn run_forward(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    layout: AttnLayout,
    op: impl FnOnce(AttnInputs<Dispatch>) -> (FloatTensor<Dispatch>, FloatTensor<Dispatch>),
) -> SparseAttentionOutput {
    let (out, lse) = op(AttnInputs {
        q: q.dequantize().into_dispatch(),
        k: k.dequantize().into_dispatch(),
        v: v.dequantize().into_dispatch(),
        index: keys.indices().clone().into_dispatch(),
        layout,
    });
    SparseAttentionOutput {
        output: Tensor::from_dispatch(out),
        lse: Some(Tensor::from_dispatch(lse)),
    }
}

/// Burn's dense attention masked to `keys` (no mask where they are all keys), with the
/// scores scaled by `scale`.
fn masked_dense(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    bias: Option<Tensor<4>>,
    scale: f64,
) -> Tensor<4> {
    let default_scale = 1.0 / (q.dims()[3] as f64).sqrt();
    // Fused dense kernels want the default scale: fold a custom one into q.
    let q = if (scale - default_scale).abs() > f64::EPSILON * default_scale {
        q * (scale / default_scale)
    } else {
        q
    };
    let mask = (keys.sparsity() > 0.0).then(|| keys.dense_mask());
    attention(q, k, v, mask, bias, AttentionModuleOptions::default())
}
