//! dK and dV over the inverted index on the tiled structure, for key units of whole fragments
//! (`key_block` a multiple of 16: block-sparse selections and the flash path): a cube per
//! `span` keys of one unit, a plane per 16 of them. The cube walks the query groups that
//! selected its unit, a tile of their rows at a time through shared memory; per tile the
//! planes form `k·qᵀ` and `v·dOᵀ` (the transposed scores), the unit that owns a key turns its
//! row into `Pᵀ` (from each query row's saved log-sum-exp) and then `dSᵀ`, and the planes
//! accumulate `Pᵀ·dO` into dV and `dSᵀ·q` into dK. The same matrix steps as the forward and
//! dQ ([`MatrixPlan`]), so tensor cores where the device has them; each output element has
//! one writer.

use burn_cubecl::cubecl;
use cubecl::cmma;
use cubecl::prelude::*;

use crate::kernel::cube::matrix::{
    FRAG, MatrixPlan, PLANE, accumulate_output, init_output, load_rows, score_tile, write_output,
};
use crate::kernel::cube::tiles::{head_offset, row_offset};

/// Keys per cube for units of `key_block` keys: the widest of 64, 32 and 16 that divides it,
/// so a cube's keys lie in one unit; `None` for units the tiles cannot cover.
pub(crate) fn key_span(key_block: usize) -> Option<usize> {
    [64, 32, 16]
        .into_iter()
        .find(|&span| key_block.is_multiple_of(span))
}

#[cube(launch, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn dkdv_tiled_kernel<F: Float, FM: Float, I: Numeric>(
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
    query_len: u32,
    key_len: u32,
    #[comptime] group_size: usize,
    #[comptime] key_block: usize,
    #[comptime] span: usize,
    #[comptime] head_dim: usize,
    #[comptime] plan: MatrixPlan,
    #[define(F, FM, I)] _dtypes: [ElemType; 3],
) {
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let plane = unit / PLANE;
    let lane = unit % PLANE;
    let query_len = query_len as usize;
    let key_len = key_len as usize;
    let key_start = CUBE_POS_X as usize * span;
    let tile = comptime!(plan.tile);
    let padded_dim = comptime!(plan.padded_dim);
    let rows = comptime!(plan.planes * FRAG);

    let mut q_tile = Shared::<[FM]>::new_slice(tile * padded_dim);
    let mut do_tile = Shared::<[FM]>::new_slice(tile * padded_dim);
    let mut valid = Shared::<[u32]>::new_slice(tile);
    let mut column_lse = Shared::<[f32]>::new_slice(tile);
    let mut column_delta = Shared::<[f32]>::new_slice(tile);
    let mut scores = Shared::<[f32]>::new_slice(rows * tile);
    let mut dp = Shared::<[f32]>::new_slice(rows * tile);
    let mut weights = Shared::<[FM]>::new_slice(rows * tile);
    let mut row_scale = Shared::<[f32]>::new_slice(rows);

    // k and v as the score steps' left operands, and the dK/dV accumulators.
    let mut k_frags = Sequence::<cmma::Matrix<FM>>::new();
    let mut v_frags = Sequence::<cmma::Matrix<FM>>::new();
    let mut dk_frags = Sequence::<cmma::Matrix<f32>>::new();
    let mut dv_frags = Sequence::<cmma::Matrix<f32>>::new();
    let mut k_row = Array::<f32>::new(comptime!(plan.row_regs(head_dim)));
    let mut v_row = Array::<f32>::new(comptime!(plan.row_regs(head_dim)));
    let mut dk_regs = Array::<f32>::new(comptime!(plan.output_regs()));
    let mut dv_regs = Array::<f32>::new(comptime!(plan.output_regs()));
    load_rows::<F, FM>(
        k,
        &mut q_tile,
        &mut k_frags,
        &mut k_row,
        head_offset(k, b, h),
        key_start,
        key_len,
        plane,
        lane,
        span,
        head_dim,
        plan,
    );
    load_rows::<F, FM>(
        v,
        &mut q_tile,
        &mut v_frags,
        &mut v_row,
        head_offset(v, b, h),
        key_start,
        key_len,
        plane,
        lane,
        span,
        head_dim,
        plan,
    );
    init_output(&mut dk_frags, &mut dk_regs, plan);
    init_output(&mut dv_frags, &mut dv_regs, plan);
    if lane < FRAG {
        row_scale[plane * FRAG + lane] = 1.0f32;
    }
    sync_cube();

    let u = key_start / key_block;
    let count = u32::cast_from(counts[row_offset(counts, b, h, u)]) as usize;
    let first = u32::cast_from(offsets[row_offset(offsets, b, h, u)]) as usize;
    let list_base = head_offset(lists, b, h);
    for n in 0..count {
        let g = u32::cast_from(lists[list_base + (first + n) * lists.stride(2)]) as usize;
        let group_start = g * group_size;
        let group_end = if group_start + group_size < query_len {
            group_start + group_size
        } else {
            query_len
        };
        let mut start = group_start;
        while start < group_end {
            load_query_tile::<F, FM>(
                q,
                d_out,
                lse,
                delta,
                &mut q_tile,
                &mut do_tile,
                &mut valid,
                &mut column_lse,
                &mut column_delta,
                b,
                h,
                start,
                group_end,
                head_dim,
                padded_dim,
                tile,
            );
            sync_cube();
            score_tile::<FM>(
                &k_frags,
                &k_row,
                &q_tile,
                &mut scores,
                plane,
                lane,
                head_dim,
                plan,
            );
            score_tile::<FM>(
                &v_frags, &v_row, &do_tile, &mut dp, plane, lane, head_dim, plan,
            );
            sync_cube();
            key_probabilities::<FM>(
                &mut scores,
                &mut weights,
                &valid,
                &column_lse,
                scale,
                plane,
                lane,
                tile,
            );
            sync_cube();
            accumulate_output::<FM>(
                &mut dv_frags,
                &mut dv_regs,
                &weights,
                &do_tile,
                &mut dp,
                &row_scale,
                plane,
                lane,
                plan,
                false,
            );
            sync_cube();
            key_score_gradients::<FM>(
                &scores,
                &dp,
                &mut weights,
                &column_delta,
                scale,
                plane,
                lane,
                tile,
            );
            sync_cube();
            accumulate_output::<FM>(
                &mut dk_frags,
                &mut dk_regs,
                &weights,
                &q_tile,
                &mut dp,
                &row_scale,
                plane,
                lane,
                plan,
                false,
            );
            sync_cube();
            start += tile;
        }
    }

    let dk_base = b * dk.stride(0) + h * dk.stride(1);
    let dv_base = b * dv.stride(0) + h * dv.stride(1);
    write_output::<F>(
        dk,
        &mut dk_frags,
        &dk_regs,
        &mut scores,
        &row_scale,
        dk_base,
        key_start,
        key_len,
        plane,
        lane,
        span,
        head_dim,
        plan,
    );
    write_output::<F>(
        dv,
        &mut dv_frags,
        &dv_regs,
        &mut scores,
        &row_scale,
        dv_base,
        key_start,
        key_len,
        plane,
        lane,
        span,
        head_dim,
        plan,
    );
}

/// Query rows `start .. start + tile` (those before `end`) of q and dO into the shared tiles
/// (in the stage dtype, zero past the head dim and past `end`), with each row's log-sum-exp
/// and Δ, and which slots hold a row; every unit of the cube loads a share.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_query_tile<F: Float, FM: Float>(
    q: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    q_tile: &mut Shared<[FM]>,
    do_tile: &mut Shared<[FM]>,
    valid: &mut Shared<[u32]>,
    column_lse: &mut Shared<[f32]>,
    column_delta: &mut Shared<[f32]>,
    b: usize,
    h: usize,
    start: usize,
    end: usize,
    #[comptime] head_dim: usize,
    #[comptime] padded_dim: usize,
    #[comptime] tile: usize,
) {
    let unit = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let mut e = unit;
    while e < tile * padded_dim {
        let row = start + e / padded_dim;
        let d = e % padded_dim;
        let mut qv = f32::new(0.0);
        let mut dov = f32::new(0.0);
        if row < end && d < head_dim {
            qv = f32::cast_from(q[row_offset(q, b, h, row) + d * q.stride(3)]);
            dov = f32::cast_from(d_out[row_offset(d_out, b, h, row) + d * d_out.stride(3)]);
        }
        q_tile[e] = FM::cast_from(qv);
        do_tile[e] = FM::cast_from(dov);
        e += threads;
    }
    let mut j = unit;
    while j < tile {
        let row = start + j;
        let mut ok = u32::new(0);
        let mut row_lse = f32::new(0.0);
        let mut row_delta = f32::new(0.0);
        if row < end {
            ok = 1u32;
            row_lse = lse[row_offset(lse, b, h, row)];
            row_delta = delta[row_offset(delta, b, h, row)];
        }
        valid[j] = ok;
        column_lse[j] = row_lse;
        column_delta[j] = row_delta;
        j += threads;
    }
}

/// `Pᵀ = exp(s·scale − lse)` for the tile's query rows of the key this unit owns
/// (`lane < FRAG`): kept in f32 in place of the scores (for `dSᵀ`) and in the stage dtype in
/// `weights`; zero for slots past the group's end.
#[cube]
#[allow(clippy::too_many_arguments)]
fn key_probabilities<FM: Float>(
    scores: &mut Shared<[f32]>,
    weights: &mut Shared<[FM]>,
    valid: &Shared<[u32]>,
    column_lse: &Shared<[f32]>,
    scale: f32,
    plane: usize,
    lane: usize,
    #[comptime] tile: usize,
) {
    if lane < FRAG {
        let base = (plane * FRAG + lane) * tile;
        for j in 0..tile {
            let mut p = f32::new(0.0);
            if valid[j] == 1u32 {
                p = (scores[base + j] * scale - column_lse[j]).exp();
            }
            scores[base + j] = p;
            weights[base + j] = FM::cast_from(p);
        }
    }
}

/// `dSᵀ = Pᵀ∘(dPᵀ − Δ)·scale` for the key this unit owns (`lane < FRAG`), into `weights`
/// (`Pᵀ` is zero where a slot holds no row, so is `dSᵀ`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn key_score_gradients<FM: Float>(
    probabilities: &Shared<[f32]>,
    dp: &Shared<[f32]>,
    weights: &mut Shared<[FM]>,
    column_delta: &Shared<[f32]>,
    scale: f32,
    plane: usize,
    lane: usize,
    #[comptime] tile: usize,
) {
    if lane < FRAG {
        let base = (plane * FRAG + lane) * tile;
        for j in 0..tile {
            let ds = probabilities[base + j] * (dp[base + j] - column_delta[j]) * scale;
            weights[base + j] = FM::cast_from(ds);
        }
    }
}
