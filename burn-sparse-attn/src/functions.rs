//! The Tensor-level API: validates every argument, then dispatches to the backend op.

use alloc::format;
use alloc::vec;

use burn::backend::Dispatch;
use burn::tensor::{Int, Tensor};

use crate::{AttnInputs, CriticalKeys, SparseAttnError, SparseAttnOps, error::ensure};

/// How [`select_critical_keys`] groups queries and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelectionConfig {
    /// Consecutive queries that share one selection (DSV: a 3D cube of the token grid,
    /// flattened so its tokens are consecutive).
    pub group_size: usize,
    /// Keys per selected unit: 1 selects single keys (DSV), more selects key blocks.
    pub key_block: usize,
    /// Units kept per group, `1 ≤ budget ≤ ceil(key_len / key_block)`.
    pub budget: usize,
}

impl SelectionConfig {
    /// Single-key selection of `budget` keys for groups of `group_size` queries.
    pub fn new(group_size: usize, budget: usize) -> Self {
        Self {
            group_size,
            key_block: 1,
            budget,
        }
    }

    /// Selects blocks of `key_block` consecutive keys instead of single keys.
    pub fn with_key_block(mut self, key_block: usize) -> Self {
        self.key_block = key_block;
        self
    }
}

impl SelectionConfig {
    /// Checks the fields for `key_len` keys, naming `function` in the error.
    pub(crate) fn check(
        &self,
        function: &'static str,
        key_len: usize,
    ) -> Result<(), SparseAttnError> {
        ensure(
            self.group_size >= 1,
            function,
            "config.group_size",
            "≥ 1",
            self.group_size,
        )?;
        ensure(
            self.key_block >= 1,
            function,
            "config.key_block",
            "≥ 1",
            self.key_block,
        )?;
        let units = key_len.div_ceil(self.key_block);
        ensure(
            (1..=units).contains(&self.budget),
            function,
            "config.budget",
            format!("in 1..={units} (key units of {} keys)", self.key_block),
            self.budget,
        )
    }
}

/// Picks the critical key units of every query group from low-rank projections.
///
/// `q_lr: [B, H, Sq, r]`, `k_lr: [B, H, Sk, r]`. Each group of `config.group_size`
/// consecutive queries (the last one may be shorter) is represented by the mean of its
/// low-rank queries; it scores every key unit (the mean low-rank key of a block, or a single
/// key) and keeps the `config.budget` best, ties going to the lower id. Nothing here is
/// differentiable.
pub fn select_critical_keys(
    q_lr: Tensor<4>,
    k_lr: Tensor<4>,
    config: SelectionConfig,
) -> Result<CriticalKeys, SparseAttnError> {
    const F: &str = "select_critical_keys";
    let [b, h, sq, r] = q_lr.dims();
    let [kb, kh, sk, kr] = k_lr.dims();
    ensure(
        b * h * sq * r > 0,
        F,
        "q_lr",
        "a non-empty [B, H, S, r] tensor",
        format!("{:?}", q_lr.dims()),
    )?;
    ensure(
        (kb, kh, kr) == (b, h, r) && sk > 0,
        F,
        "k_lr",
        format!("[{b}, {h}, S_k ≥ 1, {r}] like q_lr"),
        format!("{:?}", k_lr.dims()),
    )?;
    ensure(
        q_lr.dtype().is_float(),
        F,
        "q_lr",
        "a float tensor",
        format!("{:?}", q_lr.dtype()),
    )?;
    ensure(
        k_lr.dtype() == q_lr.dtype(),
        F,
        "k_lr",
        format!("dtype {:?} like q_lr", q_lr.dtype()),
        format!("{:?}", k_lr.dtype()),
    )?;
    ensure(
        k_lr.device() == q_lr.device(),
        F,
        "k_lr",
        "on q_lr's device",
        "another device",
    )?;
    config.check(F, sk)?;

    let index_dtype = q_lr.device().settings().int_dtype;
    let index = <Dispatch as SparseAttnOps>::select_critical_keys(
        q_lr.dequantize().into_dispatch(),
        k_lr.dequantize().into_dispatch(),
        config,
        index_dtype,
    );
    Ok(CriticalKeys::trusted(
        Tensor::<4, Int>::from_dispatch(index),
        config.group_size,
        config.key_block,
        sq,
        sk,
    ))
}

/// Output of [`sparse_attention_with_lse`].
#[derive(Clone, Debug)]
pub struct SparseAttentionOutput {
    /// Attention output `[B, H, Sq, D]`, differentiable with respect to q, k and v.
    pub output: Tensor<4>,
    /// Log-sum-exp of each query row's scaled scores over its selected keys `[B, H, Sq]`
    /// (f32, no gradient): lets callers merge partial attentions exactly.
    pub lse: Tensor<3>,
}

/// Sparse attention: each query attends only to the critical keys of its group.
///
/// `q: [B, H, Sq, D]`, `k, v: [B, H, Sk, D]`; `scale` defaults to `1/√D`. Gradients flow to
/// q, k and v through a hand-written backward; none flows to the index.
pub fn sparse_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    scale: Option<f64>,
) -> Result<Tensor<4>, SparseAttnError> {
    sparse_attention_with_lse(q, k, v, keys, scale).map(|out| out.output)
}

/// [`sparse_attention`] that also returns the per-row log-sum-exp.
pub fn sparse_attention_with_lse(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    scale: Option<f64>,
) -> Result<SparseAttentionOutput, SparseAttnError> {
    let scale = sparse_attention_shapes(&q, &k, &v, keys, scale)?;
    let (out, lse) = <Dispatch as SparseAttnOps>::sparse_attention_forward(AttnInputs {
        q: q.dequantize().into_dispatch(),
        k: k.dequantize().into_dispatch(),
        v: v.dequantize().into_dispatch(),
        index: keys.indices().clone().into_dispatch(),
        layout: keys.layout(scale),
    });
    Ok(SparseAttentionOutput {
        output: Tensor::from_dispatch(out),
        lse: Tensor::from_dispatch(lse),
    })
}

/// [`sparse_attention_with_lse`] whose scores carry a bias per key, `key_bias: [B, 1, 1, Sk]`
/// (or `None`: no bias), added to every query's scaled score of the key, as a scope or
/// distance bias that depends only on the key. Exact, through one more column:
/// `[q, 1]·[k, b/scale]ᵀ·scale = q·kᵀ·scale + b`, with a zero column of values; gradients flow
/// to q, k and v. The scale is `1/√D` of the given head dim.
pub fn sparse_attention_with_key_bias(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    key_bias: Option<Tensor<4>>,
    keys: &CriticalKeys,
) -> Result<SparseAttentionOutput, SparseAttnError> {
    let Some(bias) = key_bias else {
        return sparse_attention_with_lse(q, k, v, keys, None);
    };
    const F: &str = "sparse_attention_with_key_bias";
    let [b, h, _, d] = q.dims();
    let sk = k.dims()[2];
    ensure(
        bias.dims() == [b, 1, 1, sk],
        F,
        "key_bias",
        format!("[{b}, 1, 1, {sk}] (batch, one row of keys)"),
        format!("{:?}", bias.dims()),
    )?;
    let scale = check_qkv(F, &q, &k, &v, None)?;
    let column = (bias.swap_dims(2, 3).expand([b, h, sk, 1]) / scale).cast(k.dtype());
    let ones = q.clone().narrow(3, 0, 1).ones_like();
    let zeros = v.clone().narrow(3, 0, 1).zeros_like();
    let q = Tensor::cat(vec![q, ones], 3);
    let k = Tensor::cat(vec![k, column], 3);
    let v = Tensor::cat(vec![v, zeros], 3);
    let out = sparse_attention_with_lse(q, k, v, keys, Some(scale))?;
    Ok(SparseAttentionOutput {
        output: out.output.narrow(3, 0, d),
        lse: out.lse,
    })
}

/// Checks the arguments of the attention functions; returns the scale to use.
fn sparse_attention_shapes(
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    keys: &CriticalKeys,
    scale: Option<f64>,
) -> Result<f64, SparseAttnError> {
    const F: &str = "sparse_attention";
    let scale = check_qkv(F, q, k, v, scale)?;
    let [b, h, sq, _] = q.dims();
    let sk = k.dims()[2];
    ensure(
        keys.query_len() == sq,
        F,
        "keys",
        format!("an index made for {sq} queries"),
        keys.query_len(),
    )?;
    ensure(
        keys.key_len() == sk,
        F,
        "keys",
        format!("an index made for {sk} keys"),
        keys.key_len(),
    )?;
    let [ib, ih, _, _] = keys.indices().dims();
    ensure(
        (ib, ih) == (b, h),
        F,
        "keys",
        format!("an index for batch {b} and {h} heads"),
        format!("batch {ib}, {ih} heads"),
    )?;
    ensure(
        keys.indices().device() == q.device(),
        F,
        "keys",
        "on q's device",
        "another device",
    )?;
    Ok(scale)
}

/// Checks `q: [B, H, Sq, D]` and `k, v: [B, H, Sk, D]` (float, one dtype and device) and
/// the scale; returns the scale to use (`1/√D` by default).
pub(crate) fn check_qkv(
    function: &'static str,
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    scale: Option<f64>,
) -> Result<f64, SparseAttnError> {
    let [b, h, sq, d] = q.dims();
    let sk = k.dims()[2];
    ensure(
        b * h * sq * d > 0,
        function,
        "q",
        "a non-empty [B, H, S, D] tensor",
        format!("{:?}", q.dims()),
    )?;
    ensure(
        k.dims() == [b, h, sk, d] && sk > 0,
        function,
        "k",
        format!("[{b}, {h}, S_k ≥ 1, {d}] (batch, heads and head dim of q)"),
        format!("{:?}", k.dims()),
    )?;
    ensure(
        v.dims() == k.dims(),
        function,
        "v",
        format!("{:?} like k", k.dims()),
        format!("{:?}", v.dims()),
    )?;
    ensure(
        q.dtype().is_float(),
        function,
        "q",
        "a float tensor",
        format!("{:?}", q.dtype()),
    )?;
    for (name, t) in [("k", &k), ("v", &v)] {
        ensure(
            t.dtype() == q.dtype(),
            function,
            name,
            format!("dtype {:?} like q", q.dtype()),
            format!("{:?}", t.dtype()),
        )?;
        ensure(
            t.device() == q.device(),
            function,
            name,
            "on q's device",
            "another device",
        )?;
    }
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    ensure(
        scale.is_finite() && scale > 0.0,
        function,
        "scale",
        "finite and > 0",
        scale,
    )?;
    Ok(scale)
}

/// When [`sparse_attention_auto`] runs Burn's dense attention (masked to the same keys)
/// instead of the sparse kernels: where sparse cannot win.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseFallback {
    /// Key sequences shorter than this run dense.
    pub min_sparse_len: usize,
    /// Selections that keep more than this share of the keys run dense.
    pub max_density: f64,
}

impl DenseFallback {
    /// The policy for `device`'s backend. CPU backends (Flex, NdArray): sparse from 128 keys
    /// and at most 60% density — measured, the sparse kernels win there (README). Cube
    /// backends: sparse from 2048 keys and at most 40% density — from an NVIDIA H200
    /// (docs/benchmarks.md): at 1024 keys Vulkan's dense forward wins below 95% sparsity; at
    /// 4096 sparse wins the forward from 50% sparsity through CUDA and Vulkan, and
    /// forward+backward from 80% through Vulkan and 90% through CUDA. Set the fields from
    /// your own benchmark.
    pub fn for_device(device: &burn::tensor::Device) -> Self {
        if is_cpu_backend(device) {
            Self {
                min_sparse_len: 128,
                max_density: 0.6,
            }
        } else {
            Self {
                min_sparse_len: 2048,
                max_density: 0.4,
            }
        }
    }

    /// Whether `keys` should run dense under this policy.
    pub fn prefers_dense(&self, keys: &CriticalKeys) -> bool {
        keys.key_len() < self.min_sparse_len || 1.0 - keys.sparsity() > self.max_density
    }
}

/// Whether `device` is one of the CPU backends (Flex, NdArray).
fn is_cpu_backend(device: &burn::tensor::Device) -> bool {
    let plain = device.clone().inner();
    #[cfg(feature = "flex")]
    if plain == burn::tensor::Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    if plain == burn::tensor::Device::ndarray() {
        return true;
    }
    let _ = plain;
    false
}

/// [`sparse_attention`] that runs Burn's dense `module::attention` with the equivalent mask
/// when `fallback` says sparse cannot win (short sequences, dense selections); the result is
/// the same either way. With `k` = all keys no mask is built.
pub fn sparse_attention_auto(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    keys: &CriticalKeys,
    scale: Option<f64>,
    fallback: DenseFallback,
) -> Result<Tensor<4>, SparseAttnError> {
    if !fallback.prefers_dense(keys) {
        return sparse_attention(q, k, v, keys, scale);
    }
    // The same checks as the sparse path, so both fail alike on bad input.
    let d = q.dims()[3];
    let checked = sparse_attention_shapes(&q, &k, &v, keys, scale)?;
    let default_scale = 1.0 / (d as f64).sqrt();
    // Fused dense kernels want the default scale: fold a custom one into q.
    let q = if (checked - default_scale).abs() > f64::EPSILON * default_scale {
        q * (checked / default_scale)
    } else {
        q
    };
    let mask = (keys.sparsity() > 0.0).then(|| keys.dense_mask());
    Ok(burn::tensor::module::attention(
        q,
        k,
        v,
        mask,
        None,
        burn::tensor::ops::AttentionModuleOptions::default(),
    ))
}
