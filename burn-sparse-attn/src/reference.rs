//! Reference maths of the three ops, written with Burn tensor primitives.
//!
//! This is the correctness oracle, so it favours plain steps over speed, but it is still
//! sparse: it gathers each query group's selected keys instead of masking an `[S, S]` score
//! matrix, so memory stays `O(S·k·D / group_size)`. Work happens in f32 whatever the input
//! dtype; results are cast back.

use alloc::vec::Vec;

use crate::layout::ProblemShape;
use crate::{AttnInputs, SelectionConfig};

use burn::backend::{
    Backend, Scalar, TensorMetadata,
    tensor::{BoolTensor, FloatTensor, IntTensor},
};
use burn::tensor::{DType, FloatDType, IndexingUpdateOp, IntDType, Shape, TensorData};

/// A masked score: far below any real score, yet finite (WGSL has no -inf literal).
const MASKED_SCORE: f64 = -1.0e30;

fn to_f32<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    if x.dtype() == DType::F32 {
        x
    } else {
        B::float_cast(x, FloatDType::F32)
    }
}

fn to_dtype<B: Backend>(x: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    if x.dtype() == dtype {
        x
    } else {
        B::float_cast(x, dtype.into())
    }
}

/// `[B, H, S, C]` → `[B·H, rows, C]`, zero-padded (or cut) to `rows` rows.
fn rows_padded<B: Backend>(x: FloatTensor<B>, rows: usize) -> FloatTensor<B> {
    let shape = x.shape();
    let (bh, seq, cols) = (shape[0] * shape[1], shape[2], shape[3]);
    let x = B::float_reshape(x, Shape::new([bh, seq, cols]));
    if rows == seq {
        return x;
    }
    if rows < seq {
        return B::float_slice(x, &[(0..bh).into(), (0..rows).into(), (0..cols).into()]);
    }
    let zeros = B::float_zeros(
        Shape::new([bh, rows - seq, cols]),
        &x.device(),
        x.dtype().into(),
    );
    B::float_cat(alloc::vec![x, zeros], 1)
}

/// `[B, H, S, C]` → `[B·H, G, group_size, C]` with zero rows past `S`.
fn grouped<B: Backend>(x: FloatTensor<B>, dims: ProblemShape) -> FloatTensor<B> {
    let cols = x.shape()[3];
    let x = rows_padded::<B>(x, dims.padded_queries());
    B::float_reshape(
        x,
        Shape::new([dims.bh(), dims.groups(), dims.group_size, cols]),
    )
}

/// `[B·H, G, group_size, C]` → `[B, H, S, C]`, dropping the padding rows.
fn ungrouped<B: Backend>(x: FloatTensor<B>, dims: ProblemShape) -> FloatTensor<B> {
    let cols = x.shape()[3];
    let x = B::float_reshape(x, Shape::new([dims.bh(), dims.padded_queries(), cols]));
    let x = B::float_slice(
        x,
        &[
            (0..dims.bh()).into(),
            (0..dims.query_len).into(),
            (0..cols).into(),
        ],
    );
    B::float_reshape(
        x,
        Shape::new([dims.batch, dims.heads, dims.query_len, cols]),
    )
}

fn expand_as<B: Backend>(x: FloatTensor<B>, shape: &Shape) -> FloatTensor<B> {
    if &x.shape() == shape {
        x
    } else {
        B::float_expand(x, shape.clone())
    }
}

/// Mean of consecutive blocks of `block` rows: `[B·H, N, C]` → `[B·H, ceil(N / block), C]`;
/// the last block averages only the rows it really has.
fn block_means<B: Backend>(x: FloatTensor<B>, block: usize) -> FloatTensor<B> {
    if block == 1 {
        return x;
    }
    let shape = x.shape();
    let (bh, n, cols) = (shape[0], shape[1], shape[2]);
    let blocks = n.div_ceil(block);
    let x = {
        let padded = B::float_reshape(x, Shape::new([bh, 1, n, cols]));
        let padded = rows_padded::<B>(padded, blocks * block);
        B::float_reshape(padded, Shape::new([bh, blocks, block, cols]))
    };
    let sums = B::float_reshape(B::float_sum_dim(x, 2), Shape::new([bh, blocks, cols]));
    let counts: Vec<f32> = (0..blocks)
        .map(|j| (n.min((j + 1) * block) - j * block) as f32)
        .collect();
    let counts = B::float_from_data(TensorData::new(counts, [1, blocks, 1]), &sums.device());
    let counts = expand_as::<B>(counts, &sums.shape());
    B::float_div(sums, counts)
}

/// Reference body of [`SparseAttnOps::select_critical_keys`](crate::SparseAttnOps::select_critical_keys).
pub(crate) fn select_critical_keys<B: Backend>(
    q_lr: FloatTensor<B>,
    k_lr: FloatTensor<B>,
    selection: SelectionConfig,
    index_dtype: IntDType,
) -> IntTensor<B> {
    let dims = ProblemShape::of_selection(&q_lr.shape(), &k_lr.shape(), &selection);
    let device = q_lr.device();
    let rank = dims.head_dim;

    // Proxy query of a group = mean of its rows; scaling a row of scores by a positive
    // constant does not change its top-k, so the sum (over zero-padded rows) serves.
    let proxies = B::float_sum_dim(grouped::<B>(to_f32::<B>(q_lr), dims), 2);
    let proxies = B::float_reshape(proxies, Shape::new([dims.bh(), dims.groups(), rank]));

    let keys = B::float_reshape(
        to_f32::<B>(k_lr),
        Shape::new([dims.bh(), dims.key_len, rank]),
    );
    let units = block_means::<B>(keys, dims.key_block);

    let scores = B::float_matmul(proxies, B::float_swap_dims(units, 1, 2));
    let scores = burn::tensor::read_sync(B::float_into_data(scores))
        .expect("select_critical_keys: reading the scores back failed");
    let scores = scores.convert::<f32>();
    let scores = scores
        .as_slice::<f32>()
        .expect("select_critical_keys: scores are f32 after convert");

    // Exact top-k on the host by a plain sort (Burn's sorts are unstable, and the oracle must
    // be exact); deliberately not the kernels' selection code.
    let ids: Vec<i64> = scores
        .chunks_exact(dims.units())
        .flat_map(|row| best_units(row, dims.budget))
        .collect();
    let ids = TensorData::new(ids, [dims.batch, dims.heads, dims.groups(), dims.budget]);
    B::int_cast(B::int_from_data(ids, &device), index_dtype)
}

/// The `budget` best ids of `row`, ascending: higher score first, ties to the lower id, NaN
/// below every number.
fn best_units(row: &[f32], budget: usize) -> Vec<i64> {
    let rank = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| rank(row[b]).total_cmp(&rank(row[a])).then(a.cmp(&b)));
    let mut best: Vec<i64> = order[..budget].iter().map(|&id| id as i64).collect();
    best.sort_unstable();
    best
}

/// The selected keys of every group, ready to gather rows of `[B·H, S, D]` tensors.
struct GatherPlan<B: Backend> {
    /// Key ids clamped into range: `[B·H, G·kk]` where `kk = units · key_block`.
    ids: IntTensor<B>,
    /// Ids past the sequence end (the tail of a last partial block): `[B·H, G, 1, kk]`.
    invalid: BoolTensor<B>,
    keys_per_group: usize,
}

impl<B: Backend> GatherPlan<B> {
    fn new(index: IntTensor<B>, dims: ProblemShape) -> Self {
        let key_block = dims.key_block;
        let shape = index.shape();
        let units = shape[3];
        let device = index.device();
        let int_dtype: IntDType = index.dtype().into();
        let kk = units * key_block;
        let ids = B::int_reshape(index, Shape::new([dims.bh(), dims.groups(), units, 1]));
        let ids = if key_block == 1 {
            ids
        } else {
            let full = Shape::new([dims.bh(), dims.groups(), units, key_block]);
            let starts = B::int_expand(
                B::int_mul_scalar(ids, Scalar::from(key_block as i64)),
                full.clone(),
            );
            let offsets = B::int_arange(0..key_block as i64, &device, int_dtype);
            let offsets = B::int_reshape(offsets, Shape::new([1, 1, 1, key_block]));
            B::int_add(starts, B::int_expand(offsets, full))
        };
        let ids = B::int_reshape(ids, Shape::new([dims.bh(), dims.groups(), 1, kk]));
        let bool_dtype = burn::backend::get_or_init_device_settings::<B>(&device).bool_dtype;
        let invalid =
            B::int_greater_equal_elem(ids.clone(), Scalar::from(dims.key_len as i64), bool_dtype);
        let ids = B::int_clamp_max(ids, Scalar::from(dims.key_len as i64 - 1));
        let ids = B::int_reshape(ids, Shape::new([dims.bh(), dims.groups() * kk]));
        Self {
            ids,
            invalid,
            keys_per_group: kk,
        }
    }

    /// `[B, H, S, D]` → the selected rows `[B·H, G, kk, D]`.
    fn gather(&self, x: FloatTensor<B>, dims: ProblemShape) -> FloatTensor<B> {
        let d = x.shape()[3];
        let x = B::float_reshape(x, Shape::new([dims.bh(), dims.key_len, d]));
        let n = dims.groups() * self.keys_per_group;
        let ids = B::int_reshape(self.ids.clone(), Shape::new([dims.bh(), n, 1]));
        let ids = B::int_expand(ids, Shape::new([dims.bh(), n, d]));
        let rows = B::float_gather(1, x, ids);
        B::float_reshape(
            rows,
            Shape::new([dims.bh(), dims.groups(), self.keys_per_group, d]),
        )
    }

    /// Adds the rows `[B·H, G, kk, D]` back into a zero `[B, H, S, D]` tensor.
    fn scatter_add(&self, rows: FloatTensor<B>, dims: ProblemShape) -> FloatTensor<B> {
        let d = rows.shape()[3];
        let n = dims.groups() * self.keys_per_group;
        let rows = B::float_reshape(rows, Shape::new([dims.bh(), n, d]));
        let ids = B::int_reshape(self.ids.clone(), Shape::new([dims.bh(), n, 1]));
        let ids = B::int_expand(ids, Shape::new([dims.bh(), n, d]));
        let zeros = B::float_zeros(
            Shape::new([dims.bh(), dims.key_len, d]),
            &rows.device(),
            rows.dtype().into(),
        );
        let sums = B::float_scatter(1, zeros, ids, rows, IndexingUpdateOp::Add);
        B::float_reshape(sums, Shape::new([dims.batch, dims.heads, dims.key_len, d]))
    }

    /// Scaled scores of each group's queries against its keys, `[B·H, G, g, kk]`, with
    /// out-of-range keys masked.
    fn scores(
        &self,
        q_grouped: FloatTensor<B>,
        k_sel: FloatTensor<B>,
        scale: f64,
    ) -> FloatTensor<B> {
        let scores = B::float_matmul(q_grouped, B::float_swap_dims(k_sel, 2, 3));
        let scores = B::float_mul_scalar(scores, Scalar::from(scale));
        let shape = scores.shape();
        let invalid = B::bool_expand(self.invalid.clone(), shape);
        B::float_mask_fill(scores, invalid, Scalar::from(MASKED_SCORE))
    }
}

/// Reference body of [`SparseAttnOps::sparse_attention_forward`](crate::SparseAttnOps::sparse_attention_forward).
pub(crate) fn sparse_attention_forward<B: Backend>(
    inputs: AttnInputs<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (dims, scale) = (inputs.shape(), inputs.layout.scale);
    let (q, k, v, index) = (inputs.q, inputs.k, inputs.v, inputs.index);
    let dtype = q.dtype();
    let plan = GatherPlan::<B>::new(index, dims);
    let k_sel = plan.gather(to_f32::<B>(k), dims);
    let v_sel = plan.gather(to_f32::<B>(v), dims);
    let scores = plan.scores(grouped::<B>(to_f32::<B>(q), dims), k_sel, scale);

    let shape = scores.shape();
    let max = B::float_max_dim(scores.clone(), 3);
    let probs = B::float_exp(B::float_sub(scores, expand_as::<B>(max.clone(), &shape)));
    let denom = B::float_sum_dim(probs.clone(), 3);
    let out = B::float_matmul(probs, v_sel);
    let out = B::float_div(out.clone(), expand_as::<B>(denom.clone(), &out.shape()));
    let lse = B::float_add(max, B::float_log(denom));

    let out = to_dtype::<B>(ungrouped::<B>(out, dims), dtype);
    let lse = ungrouped::<B>(lse, dims);
    let lse = B::float_reshape(lse, Shape::new([dims.batch, dims.heads, dims.query_len]));
    (out, lse)
}

/// Reference body of [`SparseAttnOps::sparse_attention_backward`](crate::SparseAttnOps::sparse_attention_backward).
pub(crate) fn sparse_attention_backward<B: Backend>(
    inputs: AttnInputs<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad_out: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (dims, scale) = (inputs.shape(), inputs.layout.scale);
    let (q, k, v, index) = (inputs.q, inputs.k, inputs.v, inputs.index);
    let (q_dtype, k_dtype, v_dtype) = (q.dtype(), k.dtype(), v.dtype());
    let plan = GatherPlan::<B>::new(index, dims);
    let k_sel = plan.gather(to_f32::<B>(k), dims);
    let v_sel = plan.gather(to_f32::<B>(v), dims);
    let q_grouped = grouped::<B>(to_f32::<B>(q), dims);
    let scores = plan.scores(q_grouped.clone(), k_sel.clone(), scale);
    let shape = scores.shape();

    // P recomputed from the saved log-sum-exp (padding rows get lse 0: their dO is zero).
    let lse = B::float_reshape(
        to_f32::<B>(lse),
        Shape::new([dims.batch, dims.heads, dims.query_len, 1]),
    );
    let lse = grouped::<B>(lse, dims);
    let probs = B::float_exp(B::float_sub(scores, expand_as::<B>(lse, &shape)));

    let d_out = grouped::<B>(to_f32::<B>(grad_out), dims);
    let out = grouped::<B>(to_f32::<B>(out), dims);
    // Δ_i = Σ_d dO_id·O_id = Σ_j P_ij·dP_ij.
    let delta = B::float_sum_dim(B::float_mul(d_out.clone(), out), 3);

    let dv_sel = B::float_matmul(B::float_swap_dims(probs.clone(), 2, 3), d_out.clone());
    let dp = B::float_matmul(d_out, B::float_swap_dims(v_sel, 2, 3));
    let ds = B::float_mul(probs, B::float_sub(dp, expand_as::<B>(delta, &shape)));
    let ds = B::float_mul_scalar(ds, Scalar::from(scale));

    let dq = B::float_matmul(ds.clone(), k_sel);
    let dk_sel = B::float_matmul(B::float_swap_dims(ds, 2, 3), q_grouped);

    let dq = to_dtype::<B>(ungrouped::<B>(dq, dims), q_dtype);
    let dk = to_dtype::<B>(plan.scatter_add(dk_sel, dims), k_dtype);
    let dv = to_dtype::<B>(plan.scatter_add(dv_sel, dims), v_dtype);
    (dq, dk, dv)
}
