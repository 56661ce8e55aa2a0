//! Sparse attention backward without atomics, as CubeCL kernels:
//! - `Δ = rowsum(dO ∘ O)`, one unit per row;
//! - dQ by gathering: a cube per query group streams the group's keys through shared memory,
//!   as the forward does, and recomputes `P` from the saved log-sum-exp;
//! - dK and dV by inverting the index: for every key unit, the query groups that selected it
//!   (counted, prefix-summed, then listed in group order), after which every key accumulates
//!   over exactly those groups' rows. Each output element has one writer.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::{TensorMetadata, ops::IntTensorOps};
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::forward::{TILE_ELEMS, load_tile};

/// Threads of the element-wise kernels.
const UNITS: u32 = 64;

#[cube(launch)]
fn row_delta_kernel<F: Float>(d_out: &Tensor<F>, out: &Tensor<F>, delta: &mut Tensor<f32>, heads: u32, query_len: u32, rows: u32, #[comptime] head_dim: usize, #[define(F)] _dtype: ElemType) {
    let r = ABSOLUTE_POS;
    if r >= rows as usize {
        terminate!();
    }
    let s = r % query_len as usize;
    let h = (r / query_len as usize) % heads as usize;
    let b = r / (query_len as usize * heads as usize);
    let do_base = b * d_out.stride(0) + h * d_out.stride(1) + s * d_out.stride(2);
    let o_base = b * out.stride(0) + h * out.stride(1) + s * out.stride(2);
    let mut sum = f32::new(0.0);
    for d in 0..head_dim {
        sum += f32::cast_from(d_out[do_base + d * d_out.stride(3)]) * f32::cast_from(out[o_base + d * out.stride(3)]);
    }
    let at = b * delta.stride(0) + h * delta.stride(1) + s * delta.stride(2);
    delta[at] = sum;
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dq_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    index: &Tensor<I>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    dq: &mut Tensor<F>,
    scale: f32,
    query_len: u32,
    key_len: u32,
    budget: u32,
    #[comptime] group_size: usize,
    #[comptime] key_block: usize,
    #[comptime] head_dim: usize,
    #[comptime] tile: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let g = CUBE_POS_X as usize;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let key_len = key_len as usize;
    let row = g * group_size + unit;
    let active = row < query_len as usize;

    let mut q_row = Array::<f32>::new(head_dim);
    let mut do_row = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let q_base = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    let do_base = b * d_out.stride(0) + h * d_out.stride(1) + row * d_out.stride(2);
    let mut row_lse = f32::new(0.0);
    let mut row_delta = f32::new(0.0);
    if active {
        row_lse = lse[b * lse.stride(0) + h * lse.stride(1) + row * lse.stride(2)];
        row_delta = delta[b * delta.stride(0) + h * delta.stride(1) + row * delta.stride(2)];
    }
    for d in 0..head_dim {
        let mut qv = f32::new(0.0);
        let mut dv = f32::new(0.0);
        if active {
            qv = f32::cast_from(q[q_base + d * q.stride(3)]);
            dv = f32::cast_from(d_out[do_base + d * d_out.stride(3)]);
        }
        q_row[d] = qv;
        do_row[d] = dv;
        acc[d] = 0.0f32;
    }

    let mut k_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut v_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut valid = Shared::<[u32]>::new_slice(tile);
    let k_base = b * k.stride(0) + h * k.stride(1);
    let v_base = b * v.stride(0) + h * v.stride(1);
    let index_base = b * index.stride(0) + h * index.stride(1) + g * index.stride(2);
    let total = budget as usize * key_block;
    let mut start = 0usize;
    while start < total {
        load_tile::<F, I>(k, v, index, &mut k_tile, &mut v_tile, &mut valid, k_base, v_base, index_base, start, total, key_len, key_block, head_dim, tile);
        sync_cube();
        if active {
            for j in 0..tile {
                if valid[j] == 1u32 {
                    let mut score = f32::new(0.0);
                    let mut dp = f32::new(0.0);
                    for d in 0..head_dim {
                        score += q_row[d] * k_tile[j * head_dim + d];
                        dp += do_row[d] * v_tile[j * head_dim + d];
                    }
                    let p = (score * scale - row_lse).exp();
                    let ds = p * (dp - row_delta) * scale;
                    for d in 0..head_dim {
                        acc[d] += ds * k_tile[j * head_dim + d];
                    }
                }
            }
        }
        sync_cube();
        start += tile;
    }
    if active {
        let base = b * dq.stride(0) + h * dq.stride(1) + row * dq.stride(2);
        let step = dq.stride(3);
        for d in 0..head_dim {
            dq[base + d * step] = F::cast_from(acc[d]);
        }
    }
}

/// Whether the ascending row of `budget` unit ids at `base` holds `unit` (binary search).
#[cube]
fn row_holds<I: Numeric>(index: &Tensor<I>, base: usize, budget: usize, unit: usize) -> bool {
    let step = index.stride(3);
    let mut lo = 0usize;
    let mut hi = budget;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if (u32::cast_from(index[base + mid * step]) as usize) < unit {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut found = false;
    if lo < budget {
        found = u32::cast_from(index[base + lo * step]) as usize == unit;
    }
    found
}

/// Per key unit: how many query groups selected it (`fill = false`), or the list of those
/// groups written from `offsets` on (`fill = true`).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn invert_kernel<I: Numeric>(index: &Tensor<I>, offsets: &Tensor<I>, counts: &mut Tensor<I>, lists: &mut Tensor<I>, heads: u32, groups: u32, budget: u32, units: u32, #[comptime] fill: bool, #[define(I)] _dtype: ElemType) {
    let pos = ABSOLUTE_POS;
    if pos >= (units * heads) as usize * (index.shape(0)) {
        terminate!();
    }
    let u = pos % units as usize;
    let h = (pos / units as usize) % heads as usize;
    let b = pos / (units as usize * heads as usize);
    let mut n = 0usize;
    let list_base = b * lists.stride(0) + h * lists.stride(1);
    let list_step = lists.stride(2);
    let mut first = 0usize;
    if fill {
        first = u32::cast_from(offsets[b * offsets.stride(0) + h * offsets.stride(1) + u * offsets.stride(2)]) as usize;
    }
    for g in 0..groups as usize {
        let base = b * index.stride(0) + h * index.stride(1) + g * index.stride(2);
        if row_holds::<I>(index, base, budget as usize, u) {
            if fill {
                lists[list_base + (first + n) * list_step] = I::cast_from(g as u32);
            }
            n += 1;
        }
    }
    if !fill {
        let at = b * counts.stride(0) + h * counts.stride(1) + u * counts.stride(2);
        counts[at] = I::cast_from(n as u32);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dkdv_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    counts: &Tensor<I>,
    offsets: &Tensor<I>,
    lists: &Tensor<I>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    heads: u32,
    query_len: u32,
    key_len: u32,
    #[comptime] group_size: usize,
    #[comptime] key_block: usize,
    #[comptime] head_dim: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let pos = ABSOLUTE_POS;
    let key_len = key_len as usize;
    let query_len = query_len as usize;
    if pos >= key_len * heads as usize * k.shape(0) {
        terminate!();
    }
    let key = pos % key_len;
    let h = (pos / key_len) % heads as usize;
    let b = pos / (key_len * heads as usize);
    let u = key / key_block;

    let mut k_row = Array::<f32>::new(head_dim);
    let mut v_row = Array::<f32>::new(head_dim);
    let mut dk_acc = Array::<f32>::new(head_dim);
    let mut dv_acc = Array::<f32>::new(head_dim);
    let k_base = b * k.stride(0) + h * k.stride(1) + key * k.stride(2);
    let v_base = b * v.stride(0) + h * v.stride(1) + key * v.stride(2);
    for d in 0..head_dim {
        k_row[d] = f32::cast_from(k[k_base + d * k.stride(3)]);
        v_row[d] = f32::cast_from(v[v_base + d * v.stride(3)]);
        dk_acc[d] = 0.0f32;
        dv_acc[d] = 0.0f32;
    }
    let unit_at = b * counts.stride(0) + h * counts.stride(1) + u * counts.stride(2);
    let count = u32::cast_from(counts[unit_at]) as usize;
    let first = u32::cast_from(offsets[b * offsets.stride(0) + h * offsets.stride(1) + u * offsets.stride(2)]) as usize;
    let list_base = b * lists.stride(0) + h * lists.stride(1);
    for n in 0..count {
        let g = u32::cast_from(lists[list_base + (first + n) * lists.stride(2)]) as usize;
        let mut row = g * group_size;
        let end = if row + group_size < query_len { row + group_size } else { query_len };
        while row < end {
            let q_base = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
            let do_base = b * d_out.stride(0) + h * d_out.stride(1) + row * d_out.stride(2);
            let mut score = f32::new(0.0);
            let mut dp = f32::new(0.0);
            for d in 0..head_dim {
                score += f32::cast_from(q[q_base + d * q.stride(3)]) * k_row[d];
                dp += f32::cast_from(d_out[do_base + d * d_out.stride(3)]) * v_row[d];
            }
            let row_lse = lse[b * lse.stride(0) + h * lse.stride(1) + row * lse.stride(2)];
            let row_delta = delta[b * delta.stride(0) + h * delta.stride(1) + row * delta.stride(2)];
            let p = (score * scale - row_lse).exp();
            let ds = p * (dp - row_delta) * scale;
            for d in 0..head_dim {
                dk_acc[d] += ds * f32::cast_from(q[q_base + d * q.stride(3)]);
                dv_acc[d] += p * f32::cast_from(d_out[do_base + d * d_out.stride(3)]);
            }
            row += 1;
        }
    }
    let dk_base = b * dk.stride(0) + h * dk.stride(1) + key * dk.stride(2);
    let dk_step = dk.stride(3);
    let dv_base = b * dv.stride(0) + h * dv.stride(1) + key * dv.stride(2);
    let dv_step = dv.stride(3);
    for d in 0..head_dim {
        dk[dk_base + d * dk_step] = F::cast_from(dk_acc[d]);
        dv[dv_base + d * dv_step] = F::cast_from(dv_acc[d]);
    }
}

/// A unit per element, in cubes of [`UNITS`].
fn elementwise(n: usize) -> (CubeCount, CubeDim) {
    (CubeCount::Static(n.div_ceil(UNITS as usize) as u32, 1, 1), CubeDim::new_1d(UNITS))
}

/// Launches the backward kernels → `(dq, dk, dv)` typed like `q, k, v`. Shapes must pass
/// [`super::forward::supports`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn sparse_attention_backward(q: CubeTensor, k: CubeTensor, v: CubeTensor, index: CubeTensor, out: CubeTensor, lse: CubeTensor, grad_out: CubeTensor, group_size: usize, key_block: usize, scale: f64) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [q, k, v, index, out, lse, grad_out] = [q, k, v, index, out, lse, grad_out].map(into_contiguous);
    let [batch, heads, query_len, head_dim] = q.shape().dims::<4>();
    let key_len = k.shape().dims::<4>()[2];
    let [_, _, groups, budget] = index.shape().dims::<4>();
    let units = key_len.div_ceil(key_block);
    let client = q.client.clone();
    let device = q.device.clone();
    let (fdt, idt) = (q.dtype, index.dtype);
    let empty = |shape: Shape, dtype: DType| empty_device_dtype(client.clone(), device.clone(), shape, dtype);

    let rows = batch * heads * query_len;
    let delta = empty(Shape::new([batch, heads, query_len]), DType::F32);
    let (count, dim) = elementwise(rows);
    row_delta_kernel::launch(&client, count, dim, grad_out.clone().into_tensor_arg(), out.into_tensor_arg(), delta.clone().into_tensor_arg(), heads as u32, query_len as u32, rows as u32, head_dim, dtype_to_storage_type(fdt));

    let dq = empty(q.shape(), fdt);
    let tile = (TILE_ELEMS / head_dim).max(1);
    dq_kernel::launch(
        &client,
        CubeCount::Static(groups as u32, heads as u32, batch as u32),
        CubeDim::new_1d(group_size as u32),
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        index.clone().into_tensor_arg(),
        grad_out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        scale as f32,
        query_len as u32,
        key_len as u32,
        budget as u32,
        group_size,
        key_block,
        head_dim,
        tile,
        [dtype_to_storage_type(fdt), dtype_to_storage_type(idt)],
    );

    // Invert the index: counts per unit, exclusive prefix sums, then the lists.
    let per_unit = Shape::new([batch, heads, units]);
    let counts = empty(per_unit.clone(), idt);
    let lists = empty(Shape::new([batch, heads, groups * budget]), idt);
    // Unused arguments get their own scratch tensors: a writable binding must not alias.
    let scratch = || empty(Shape::new([1, 1, 1]), idt);
    let launch_invert = |offsets: CubeTensor, counts: CubeTensor, lists: CubeTensor, fill: bool| {
        let (count, dim) = elementwise(batch * heads * units);
        invert_kernel::launch(&client, count, dim, index.clone().into_tensor_arg(), offsets.into_tensor_arg(), counts.into_tensor_arg(), lists.into_tensor_arg(), heads as u32, groups as u32, budget as u32, units as u32, fill, dtype_to_storage_type(idt));
    };
    launch_invert(scratch(), counts.clone(), scratch(), false);
    let inclusive = CubeBackend::int_cumsum(counts.clone(), 2);
    let offsets = CubeBackend::int_sub(inclusive, counts.clone());
    launch_invert(offsets.clone(), scratch(), lists.clone(), true);

    let dk = empty(k.shape(), k.dtype);
    let dv = empty(v.shape(), v.dtype);
    let (count, dim) = elementwise(batch * heads * key_len);
    dkdv_kernel::launch(
        &client,
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        grad_out.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta.into_tensor_arg(),
        counts.into_tensor_arg(),
        offsets.into_tensor_arg(),
        lists.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        scale as f32,
        heads as u32,
        query_len as u32,
        key_len as u32,
        group_size,
        key_block,
        head_dim,
        [dtype_to_storage_type(fdt), dtype_to_storage_type(idt)],
    );
    (dq, dk, dv)
}
