//! The argument checks the public functions share.

use alloc::format;

use burn::tensor::Tensor;

use crate::{CriticalKeys, SparseAttnError};

/// Checks the arguments of [`sparse_attention`](crate::sparse_attention); returns the scale
/// to use.
pub(crate) fn check_attention(
    function: &'static str,
    q: &Tensor<4>,
    k: &Tensor<4>,
    v: &Tensor<4>,
    keys: &CriticalKeys,
    scale: Option<f64>,
) -> Result<f64, SparseAttnError> {
    let scale = check_qkv(function, q, k, v, scale)?;
    let [b, h, sq, _] = q.dims();
    let sk = k.dims()[2];
    SparseAttnError::check(
        keys.query_len() == sq,
        function,
        "keys",
        format!("an index made for {sq} queries"),
        keys.query_len(),
    )?;
    SparseAttnError::check(
        keys.key_len() == sk,
        function,
        "keys",
        format!("an index made for {sk} keys"),
        keys.key_len(),
    )?;
    let [ib, ih, _, _] = keys.indices().dims();
    SparseAttnError::check(
        (ib, ih) == (b, h),
        function,
        "keys",
        format!("an index for batch {b} and {h} heads"),
        format!("batch {ib}, {ih} heads"),
    )?;
    SparseAttnError::check(
        keys.indices().device() == q.device(),
        function,
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
    SparseAttnError::check(
        b * h * sq * d > 0,
        function,
        "q",
        "a non-empty [B, H, S, D] tensor",
        format!("{:?}", q.dims()),
    )?;
    SparseAttnError::check(
        k.dims() == [b, h, sk, d] && sk > 0,
        function,
        "k",
        format!("[{b}, {h}, S_k ≥ 1, {d}] (batch, heads and head dim of q)"),
        format!("{:?}", k.dims()),
    )?;
    SparseAttnError::check(
        v.dims() == k.dims(),
        function,
        "v",
        format!("{:?} like k", k.dims()),
        format!("{:?}", v.dims()),
    )?;
    SparseAttnError::check(
        q.dtype().is_float(),
        function,
        "q",
        "a float tensor",
        format!("{:?}", q.dtype()),
    )?;
    for (name, t) in [("k", &k), ("v", &v)] {
        SparseAttnError::check(
            t.dtype() == q.dtype(),
            function,
            name,
            format!("dtype {:?} like q", q.dtype()),
            format!("{:?}", t.dtype()),
        )?;
        SparseAttnError::check(
            t.device() == q.device(),
            function,
            name,
            "on q's device",
            "another device",
        )?;
    }
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    SparseAttnError::check(
        scale.is_finite() && scale > 0.0,
        function,
        "scale",
        "finite and > 0",
        scale,
    )?;
    Ok(scale)
}
