//! dQ by gathering, laid out as the forward (a cube per query group, a plane per 16 rows, the
//! group's selected keys through shared K/V tiles): per tile the planes form `q·kᵀ` and
//! `dO·vᵀ`, the unit that owns a row turns them into `dS = P∘(dP − Δ)·scale` with `P`
//! recomputed from the saved log-sum-exp, and the planes accumulate `dS·k`. The matrix steps
//! run on tensor cores or scalar tiles, as in the forward ([`MatrixPlan`]).

use burn_cubecl::cubecl;
use cubecl::cmma;
use cubecl::prelude::*;

use crate::kernel::cube::matrix::{
    FRAG, MatrixPlan, PLANE, accumulate_output, init_output, is_row, load_key_tile, load_rows,
    score_tile, write_output,
};
use crate::kernel::cube::tiles::{head_offset, row_offset};

#[cube(launch, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dq_kernel<F: Float, FM: Float, I: Numeric>(
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
    #[comptime] plan: MatrixPlan,
    #[define(F, FM, I)] _dtypes: [ElemType; 3],
) {
    let g = CUBE_POS_X as usize;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let plane = unit / PLANE;
    let lane = unit % PLANE;
    let query_len = query_len as usize;
    let key_len = key_len as usize;
    let group_start = g * group_size;
    let tile = comptime!(plan.tile);
    let padded_dim = comptime!(plan.padded_dim);
    let rows = comptime!(plan.planes * FRAG);

    let mut k_tile = Shared::<[FM]>::new_slice(tile * padded_dim);
    let mut v_tile = Shared::<[FM]>::new_slice(tile * padded_dim);
    let mut valid = Shared::<[u32]>::new_slice(tile);
    let mut scores = Shared::<[f32]>::new_slice(rows * tile);
    let mut dp = Shared::<[f32]>::new_slice(rows * tile);
    let mut ds = Shared::<[FM]>::new_slice(rows * tile);
    let mut row_scale = Shared::<[f32]>::new_slice(rows);

    let q_base = head_offset(q, b, h);
    let do_base = head_offset(d_out, b, h);
    let k_base = head_offset(k, b, h);
    let v_base = head_offset(v, b, h);
    let index_base = row_offset(index, b, h, g);
    let total = budget as usize * key_block;

    // q and dO as the score steps' left operands, and the dQ accumulators.
    let mut q_frags = Sequence::<cmma::Matrix<FM>>::new();
    let mut do_frags = Sequence::<cmma::Matrix<FM>>::new();
    let mut o_frags = Sequence::<cmma::Matrix<f32>>::new();
    let mut q_row = Array::<f32>::new(comptime!(plan.row_regs(head_dim)));
    let mut do_row = Array::<f32>::new(comptime!(plan.row_regs(head_dim)));
    let mut o_regs = Array::<f32>::new(comptime!(plan.output_regs()));
    load_rows::<F, FM>(
        q,
        &mut k_tile,
        &mut q_frags,
        &mut q_row,
        q_base,
        group_start,
        query_len,
        plane,
        lane,
        group_size,
        head_dim,
        plan,
    );
    load_rows::<F, FM>(
        d_out,
        &mut k_tile,
        &mut do_frags,
        &mut do_row,
        do_base,
        group_start,
        query_len,
        plane,
        lane,
        group_size,
        head_dim,
        plan,
    );
    init_output(&mut o_frags, &mut o_regs, plan);

    // The row this unit owns (`lane < FRAG`): its log-sum-exp and Δ = rowsum(dO∘O).
    let local = plane * FRAG + lane;
    let row = group_start + local;
    let mut row_lse = f32::new(0.0);
    let mut row_delta = f32::new(0.0);
    if lane < FRAG {
        if is_row(local, row, query_len, group_size) {
            row_lse = lse[row_offset(lse, b, h, row)];
            row_delta = delta[row_offset(delta, b, h, row)];
        }
        row_scale[local] = 1.0f32;
    }

    let mut start = 0usize;
    while start < total {
        load_key_tile::<F, FM, I>(
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
            padded_dim,
            tile,
        );
        sync_cube();
        score_tile::<FM>(
            &q_frags,
            &q_row,
            &k_tile,
            &mut scores,
            plane,
            lane,
            head_dim,
            plan,
        );
        score_tile::<FM>(
            &do_frags, &do_row, &v_tile, &mut dp, plane, lane, head_dim, plan,
        );
        sync_cube();
        score_gradients::<FM>(
            &scores, &dp, &mut ds, &valid, row_lse, row_delta, scale, plane, lane, tile,
        );
        sync_cube();
        accumulate_output::<FM>(
            &mut o_frags,
            &mut o_regs,
            &ds,
            &k_tile,
            &mut scores,
            &row_scale,
            plane,
            lane,
            plan,
            false,
        );
        sync_cube();
        start += tile;
    }

    let o_base = b * dq.stride(0) + h * dq.stride(1);
    write_output::<F>(
        dq,
        &mut o_frags,
        &o_regs,
        &mut scores,
        &row_scale,
        o_base,
        group_start,
        query_len,
        plane,
        lane,
        group_size,
        head_dim,
        plan,
    );
}

/// `dS = P∘(dP − Δ)·scale` for the tile's keys of the row this unit owns (`lane < FRAG`), with
/// `P = exp(s·scale − lse)`; zero for slots past the selection's end.
#[cube]
#[allow(clippy::too_many_arguments)]
fn score_gradients<FM: Float>(
    scores: &Shared<[f32]>,
    dp: &Shared<[f32]>,
    ds: &mut Shared<[FM]>,
    valid: &Shared<[u32]>,
    row_lse: f32,
    row_delta: f32,
    scale: f32,
    plane: usize,
    lane: usize,
    #[comptime] tile: usize,
) {
    if lane < FRAG {
        let base = (plane * FRAG + lane) * tile;
        for j in 0..tile {
            let mut value = f32::new(0.0);
            if valid[j] == 1u32 {
                let p = (scores[base + j] * scale - row_lse).exp();
                value = p * (dp[base + j] - row_delta) * scale;
            }
            ds[base + j] = FM::cast_from(value);
        }
    }
}
