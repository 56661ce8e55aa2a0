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
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::tiles::{TilePlan, has_plane_ops, lane_partials, load_tile, row_score, unrolls};

/// Threads of the element-wise kernels.
const UNITS: u32 = 128;

#[cube(launch)]
fn row_delta_kernel<F: Float>(
    d_out: &Tensor<F>,
    out: &Tensor<F>,
    delta: &mut Tensor<f32>,
    heads: u32,
    query_len: u32,
    rows: u32,
    #[comptime] head_dim: usize,
    #[define(F)] _dtype: ElemType,
) {
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
        sum += f32::cast_from(d_out[do_base + d * d_out.stride(3)])
            * f32::cast_from(out[o_base + d * out.stride(3)]);
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
    #[comptime] lanes: usize,
    #[comptime] row_stride: usize,
    #[comptime] unroll: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let g = CUBE_POS_X as usize;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let local = unit / lanes;
    let lane = unit % lanes;
    let key_len = key_len as usize;
    let row = g * group_size + local;
    let active = row < query_len as usize;
    let per_lane = comptime!(head_dim / lanes);

    // This unit's dims of the row's q, dO and dQ accumulator.
    let mut q_part = Array::<f32>::new(per_lane);
    let mut do_part = Array::<f32>::new(per_lane);
    let mut acc = Array::<f32>::new(per_lane);
    let q_base = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    let do_base = b * d_out.stride(0) + h * d_out.stride(1) + row * d_out.stride(2);
    let mut row_lse = f32::new(0.0);
    let mut row_delta = f32::new(0.0);
    if active {
        row_lse = lse[b * lse.stride(0) + h * lse.stride(1) + row * lse.stride(2)];
        row_delta = delta[b * delta.stride(0) + h * delta.stride(1) + row * delta.stride(2)];
    }
    #[unroll(unroll)]
    for i in 0..per_lane {
        let d = lane + lanes * i;
        let mut qv = f32::new(0.0);
        let mut dv = f32::new(0.0);
        if active {
            qv = f32::cast_from(q[q_base + d * q.stride(3)]);
            dv = f32::cast_from(d_out[do_base + d * d_out.stride(3)]);
        }
        q_part[i] = qv;
        do_part[i] = dv;
        acc[i] = 0.0f32;
    }

    let mut k_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut v_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut valid = Shared::<[u32]>::new_slice(tile);
    let mut score_partial = Shared::<[f32]>::new_slice(group_size * row_stride);
    let mut dp_partial = Shared::<[f32]>::new_slice(group_size * row_stride);
    let k_base = b * k.stride(0) + h * k.stride(1);
    let v_base = b * v.stride(0) + h * v.stride(1);
    let index_base = b * index.stride(0) + h * index.stride(1) + g * index.stride(2);
    let total = budget as usize * key_block;
    let mut start = 0usize;
    while start < total {
        load_tile::<F, I>(
            k,
            v,
            index,
            &mut k_tile,
            &mut v_tile,
            &mut valid,
            k_base,
            v_base,
            index_base,
            start,
            total,
            key_len,
            key_block,
            head_dim,
            tile,
        );
        sync_cube();
        lane_partials(
            &q_part,
            &k_tile,
            &mut score_partial,
            local,
            lane,
            tile,
            head_dim,
            lanes,
            row_stride,
            unroll,
        );
        lane_partials(
            &do_part,
            &v_tile,
            &mut dp_partial,
            local,
            lane,
            tile,
            head_dim,
            lanes,
            row_stride,
            unroll,
        );
        sync_cube();
        #[unroll(unroll)]
        for j in 0..tile {
            let mut ds = f32::new(0.0);
            if valid[j] == 1u32 {
                let p = (row_score(&score_partial, local, j, lanes, row_stride, unroll) * scale
                    - row_lse)
                    .exp();
                ds = p
                    * (row_score(&dp_partial, local, j, lanes, row_stride, unroll) - row_delta)
                    * scale;
            }
            #[unroll(unroll)]
            for i in 0..per_lane {
                acc[i] += ds * k_tile[j * head_dim + lane + lanes * i];
            }
        }
        sync_cube();
        start += tile;
    }
    if active {
        let base = b * dq.stride(0) + h * dq.stride(1) + row * dq.stride(2);
        let step = dq.stride(3);
        #[unroll(unroll)]
        for i in 0..per_lane {
            dq[base + (lane + lanes * i) * step] = F::cast_from(acc[i]);
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
fn invert_kernel<I: Numeric>(
    index: &Tensor<I>,
    offsets: &Tensor<I>,
    counts: &mut Tensor<I>,
    lists: &mut Tensor<I>,
    heads: u32,
    groups: u32,
    budget: u32,
    units: u32,
    #[comptime] fill: bool,
    #[define(I)] _dtype: ElemType,
) {
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
        first = u32::cast_from(
            offsets[b * offsets.stride(0) + h * offsets.stride(1) + u * offsets.stride(2)],
        ) as usize;
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
    #[comptime] lanes: usize,
    #[comptime] unroll: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    // `lanes` neighbouring units of one plane share a key, each owning dims `lane + lanes·i`.
    let slot = ABSOLUTE_POS / lanes;
    let lane = ABSOLUTE_POS % lanes;
    let key_len = key_len as usize;
    let query_len = query_len as usize;
    if slot >= key_len * heads as usize * k.shape(0) {
        terminate!();
    }
    let key = slot % key_len;
    let h = (slot / key_len) % heads as usize;
    let b = slot / (key_len * heads as usize);
    let u = key / key_block;
    let per_lane = comptime!(head_dim / lanes);

    let mut k_part = Array::<f32>::new(per_lane);
    let mut v_part = Array::<f32>::new(per_lane);
    let mut dk_acc = Array::<f32>::new(per_lane);
    let mut dv_acc = Array::<f32>::new(per_lane);
    let mut q_part = Array::<f32>::new(per_lane);
    let mut do_part = Array::<f32>::new(per_lane);
    let k_base = b * k.stride(0) + h * k.stride(1) + key * k.stride(2);
    let v_base = b * v.stride(0) + h * v.stride(1) + key * v.stride(2);
    #[unroll(unroll)]
    for i in 0..per_lane {
        let d = lane + lanes * i;
        k_part[i] = f32::cast_from(k[k_base + d * k.stride(3)]);
        v_part[i] = f32::cast_from(v[v_base + d * v.stride(3)]);
        dk_acc[i] = 0.0f32;
        dv_acc[i] = 0.0f32;
    }
    let unit_at = b * counts.stride(0) + h * counts.stride(1) + u * counts.stride(2);
    let count = u32::cast_from(counts[unit_at]) as usize;
    let first = u32::cast_from(
        offsets[b * offsets.stride(0) + h * offsets.stride(1) + u * offsets.stride(2)],
    ) as usize;
    let list_base = b * lists.stride(0) + h * lists.stride(1);
    for n in 0..count {
        let g = u32::cast_from(lists[list_base + (first + n) * lists.stride(2)]) as usize;
        let mut row = g * group_size;
        let end = if row + group_size < query_len {
            row + group_size
        } else {
            query_len
        };
        while row < end {
            let q_base = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
            let do_base = b * d_out.stride(0) + h * d_out.stride(1) + row * d_out.stride(2);
            let mut score = f32::new(0.0);
            let mut dp = f32::new(0.0);
            #[unroll(unroll)]
            for i in 0..per_lane {
                let d = lane + lanes * i;
                q_part[i] = f32::cast_from(q[q_base + d * q.stride(3)]);
                do_part[i] = f32::cast_from(d_out[do_base + d * d_out.stride(3)]);
                score += q_part[i] * k_part[i];
                dp += do_part[i] * v_part[i];
            }
            let score = lane_sum(score, lanes);
            let dp = lane_sum(dp, lanes);
            let row_lse = lse[b * lse.stride(0) + h * lse.stride(1) + row * lse.stride(2)];
            let row_delta =
                delta[b * delta.stride(0) + h * delta.stride(1) + row * delta.stride(2)];
            let p = (score * scale - row_lse).exp();
            let ds = p * (dp - row_delta) * scale;
            #[unroll(unroll)]
            for i in 0..per_lane {
                dk_acc[i] += ds * q_part[i];
                dv_acc[i] += p * do_part[i];
            }
            row += 1;
        }
    }
    let dk_base = b * dk.stride(0) + h * dk.stride(1) + key * dk.stride(2);
    let dv_base = b * dv.stride(0) + h * dv.stride(1) + key * dv.stride(2);
    let (dk_step, dv_step) = (dk.stride(3), dv.stride(3));
    #[unroll(unroll)]
    for i in 0..per_lane {
        let d = lane + lanes * i;
        dk[dk_base + d * dk_step] = F::cast_from(dk_acc[i]);
        dv[dv_base + d * dv_step] = F::cast_from(dv_acc[i]);
    }
}

/// Sum over the `lanes` neighbouring units that share a key (a butterfly of plane shuffles;
/// nothing to do for one lane).
#[cube]
fn lane_sum(value: f32, #[comptime] lanes: usize) -> f32 {
    let mut sum = value;
    let steps = comptime!(lanes.trailing_zeros());
    #[unroll]
    for step in 0..steps {
        sum += plane_shuffle_xor(sum, 1u32 << step);
    }
    sum
}

/// Units sharing one key in the dK/dV kernel: as many as the plane is wide (at most 32) and
/// divide the head dim, where the device has plane shuffles; else one.
fn dkdv_lanes(client: &cubecl::client::Client, head_dim: usize) -> usize {
    if !has_plane_ops(client) {
        return 1;
    }
    let width = (client.properties().hardware.plane_size_min as usize).clamp(1, 32);
    [32, 16, 8, 4, 2]
        .into_iter()
        .find(|&l| l <= width && head_dim % l == 0 && UNITS as usize % l == 0)
        .unwrap_or(1)
}

/// A unit per element, in cubes of [`UNITS`] spread over as many grid dims as the device's
/// per-dim cube limit needs (`ABSOLUTE_POS` is linear over them).
fn elementwise(client: &cubecl::client::Client, n: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new_1d(UNITS);
    (cubecl::calculate_cube_count_elemwise(client, n, dim), dim)
}

/// Launches the backward kernels → `(dq, dk, dv)` typed like `q, k, v`; dQ laid out by
/// `plan` ([`TilePlan::new`] with two score arrays).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sparse_attention_backward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    index: CubeTensor,
    out: CubeTensor,
    lse: CubeTensor,
    grad_out: CubeTensor,
    group_size: usize,
    key_block: usize,
    scale: f64,
    plan: TilePlan,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [q, k, v, index, out, lse, grad_out] =
        [q, k, v, index, out, lse, grad_out].map(into_contiguous);
    let [batch, heads, query_len, head_dim] = q.shape().dims::<4>();
    let key_len = k.shape().dims::<4>()[2];
    let [_, _, groups, budget] = index.shape().dims::<4>();
    let units = key_len.div_ceil(key_block);
    let client = q.client.clone();
    let device = q.device.clone();
    let (fdt, idt) = (q.dtype, index.dtype);
    let empty = |shape: Shape, dtype: DType| {
        empty_device_dtype(client.clone(), device.clone(), shape, dtype)
    };

    let rows = batch * heads * query_len;
    let delta = empty(Shape::new([batch, heads, query_len]), DType::F32);
    let (count, dim) = elementwise(&client, rows);
    row_delta_kernel::launch(
        &client,
        count,
        dim,
        grad_out.clone().into_tensor_arg(),
        out.into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        heads as u32,
        query_len as u32,
        rows as u32,
        head_dim,
        dtype_to_storage_type(fdt),
    );

    let dq = empty(q.shape(), fdt);
    dq_kernel::launch(
        &client,
        CubeCount::Static(groups as u32, heads as u32, batch as u32),
        CubeDim::new_1d(plan.units(group_size)),
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
        plan.tile,
        plan.lanes,
        plan.row_stride(),
        plan.unroll,
        [dtype_to_storage_type(fdt), dtype_to_storage_type(idt)],
    );

    // Invert the index: counts per unit, exclusive prefix sums, then the lists.
    let per_unit = Shape::new([batch, heads, units]);
    let counts = empty(per_unit.clone(), idt);
    let lists = empty(Shape::new([batch, heads, groups * budget]), idt);
    // Unused arguments get their own scratch tensors: a writable binding must not alias.
    let scratch = || empty(Shape::new([1, 1, 1]), idt);
    let launch_invert = |offsets: CubeTensor, counts: CubeTensor, lists: CubeTensor, fill: bool| {
        let (count, dim) = elementwise(&client, batch * heads * units);
        invert_kernel::launch(
            &client,
            count,
            dim,
            index.clone().into_tensor_arg(),
            offsets.into_tensor_arg(),
            counts.into_tensor_arg(),
            lists.into_tensor_arg(),
            heads as u32,
            groups as u32,
            budget as u32,
            units as u32,
            fill,
            dtype_to_storage_type(idt),
        );
    };
    launch_invert(scratch(), counts.clone(), scratch(), false);
    let inclusive = CubeBackend::int_cumsum(counts.clone(), 2);
    let offsets = CubeBackend::int_sub(inclusive, counts.clone());
    launch_invert(offsets.clone(), scratch(), lists.clone(), true);

    let dk = empty(k.shape(), k.dtype);
    let dv = empty(v.shape(), v.dtype);
    let lanes = dkdv_lanes(&client, head_dim);
    let (count, dim) = elementwise(&client, batch * heads * key_len * lanes);
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
        lanes,
        unrolls(&client),
        [dtype_to_storage_type(fdt), dtype_to_storage_type(idt)],
    );
    (dq, dk, dv)
}
