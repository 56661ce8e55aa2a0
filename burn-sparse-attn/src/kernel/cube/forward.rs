//! Sparse attention forward as one CubeCL kernel: a cube per (query group, head, batch),
//! `lanes` units per query row. The group's selected keys stream through shared memory in
//! tiles that every row reuses; per tile the row's units add up their partial scores, then
//! update one online softmax (one rescale per tile) and their share of the f32 output.

use crate::AttnInputs;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::tiles::{TilePlan, lane_partials, load_tile, row_score};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn sparse_forward_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    index: &Tensor<I>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
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

    // This unit's dims of the row's scaled query and of its running output, in f32.
    let mut q_part = Array::<f32>::new(per_lane);
    let mut acc = Array::<f32>::new(per_lane);
    let q_base = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    #[unroll(unroll)]
    for i in 0..per_lane {
        let mut value = f32::new(0.0);
        if active {
            value = f32::cast_from(q[q_base + (lane + lanes * i) * q.stride(3)]) * scale;
        }
        q_part[i] = value;
        acc[i] = 0.0f32;
    }

    let mut k_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut v_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut valid = Shared::<[u32]>::new_slice(tile);
    let mut partial = Shared::<[f32]>::new_slice(group_size * row_stride);
    let mut scores = Array::<f32>::new(tile);
    let k_base = b * k.stride(0) + h * k.stride(1);
    let v_base = b * v.stride(0) + h * v.stride(1);
    let index_base = b * index.stride(0) + h * index.stride(1) + g * index.stride(2);
    let total = budget as usize * key_block;

    let mut running_max = f32::new(-1.0e30);
    let mut running_sum = f32::new(0.0);
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
            &mut partial,
            local,
            lane,
            tile,
            head_dim,
            lanes,
            row_stride,
            unroll,
        );
        sync_cube();

        let mut tile_max = f32::new(-1.0e30);
        #[unroll(unroll)]
        for j in 0..tile {
            let score = row_score(&partial, local, j, lanes, row_stride, unroll);
            scores[j] = score;
            if valid[j] == 1u32 && score > tile_max {
                tile_max = score;
            }
        }
        let new_max = if tile_max > running_max {
            tile_max
        } else {
            running_max
        };
        let correction = (running_max - new_max).exp();
        running_sum *= correction;
        #[unroll(unroll)]
        for i in 0..per_lane {
            acc[i] *= correction;
        }
        #[unroll(unroll)]
        for j in 0..tile {
            // Slots past the selection's end are skipped, not weighted by exp(0).
            let mut weight = f32::new(0.0);
            if valid[j] == 1u32 {
                weight = (scores[j] - new_max).exp();
            }
            running_sum += weight;
            #[unroll(unroll)]
            for i in 0..per_lane {
                acc[i] += weight * v_tile[j * head_dim + lane + lanes * i];
            }
        }
        running_max = new_max;
        sync_cube();
        start += tile;
    }

    if active {
        let inv = 1.0f32 / running_sum;
        let o_base = b * out.stride(0) + h * out.stride(1) + row * out.stride(2);
        let o_step = out.stride(3);
        #[unroll(unroll)]
        for i in 0..per_lane {
            out[o_base + (lane + lanes * i) * o_step] = F::cast_from(acc[i] * inv);
        }
        if lane == 0 {
            let at = b * lse.stride(0) + h * lse.stride(1) + row * lse.stride(2);
            lse[at] = running_max + running_sum.ln();
        }
    }
}

/// Launches the forward kernel: `q, k, v: [B, H, S, D]`, `index: [B, H, G, k]` →
/// (output like `q`, f32 log-sum-exp `[B, H, S_q]`), laid out by `plan`
/// ([`TilePlan::new`] with one score array).
pub(crate) fn sparse_attention_forward(
    inputs: AttnInputs<CubeBackend>,
    plan: TilePlan,
) -> (CubeTensor, CubeTensor) {
    let shape = inputs.shape();
    let groups = shape.groups();
    let scale = inputs.layout.scale;
    let [q, k, v, index] = [inputs.q, inputs.k, inputs.v, inputs.index].map(into_contiguous);
    let client = q.client.clone();
    let out = empty_device_dtype(client.clone(), q.device.clone(), q.shape(), q.dtype);
    let lse = empty_device_dtype(
        client.clone(),
        q.device.clone(),
        Shape::new([shape.batch, shape.heads, shape.query_len]),
        DType::F32,
    );
    let dtypes = [
        dtype_to_storage_type(q.dtype),
        dtype_to_storage_type(index.dtype),
    ];
    sparse_forward_kernel::launch(
        &client,
        CubeCount::Static(groups as u32, shape.heads as u32, shape.batch as u32),
        CubeDim::new_1d(plan.units(shape.group_size)),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        index.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        scale as f32,
        shape.query_len as u32,
        shape.key_len as u32,
        shape.budget as u32,
        shape.group_size,
        shape.key_block,
        shape.head_dim,
        plan.tile,
        plan.lanes,
        plan.row_stride(),
        plan.unroll,
        dtypes,
    );
    (out, lse)
}
