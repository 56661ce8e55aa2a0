//! dQ by gathering: a cube per query group streams the group's keys through shared memory,
//! as the forward does, and recomputes `P` from the saved log-sum-exp.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

use crate::kernel::cube::matrix::load_key_tile;
use crate::kernel::cube::tiles::{lane_partials, row_score};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn dq_kernel<F: Float, I: Numeric>(
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
        load_key_tile::<F, f32, I>(
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
