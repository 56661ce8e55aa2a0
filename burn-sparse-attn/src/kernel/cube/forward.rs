//! Sparse attention forward as one CubeCL kernel: a cube per (query group, head, batch), a
//! plane per 16 of the group's rows. The group's selected keys are gathered into shared
//! tiles; per tile the planes score their rows against it (`q·kᵀ`), one online-softmax step
//! turns the scores into probabilities and a rescale per row, and the planes accumulate
//! `p·v` into their output. The matrix steps run on tensor cores or on scalar tiles
//! ([`MatrixPlan`]); everything else is the same code on both.

use crate::AttnInputs;
use burn::backend::TensorMetadata;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::cmma;
use cubecl::prelude::*;

use super::matrix::{
    FRAG, MatrixPlan, PLANE, accumulate_output, init_output, is_row, load_key_tile, load_rows,
    score_tile, softmax_step, write_output,
};
use super::tiles::{group_grid, head_offset, row_offset};

#[cube(launch, create_dummy_kernel)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sparse_forward_kernel<F: Float, FM: Float, I: Numeric>(
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
    let mut probs = Shared::<[FM]>::new_slice(rows * tile);
    let mut row_scale = Shared::<[f32]>::new_slice(rows);

    let q_base = head_offset(q, b, h);
    let k_base = head_offset(k, b, h);
    let v_base = head_offset(v, b, h);
    let index_base = row_offset(index, b, h, g);
    let total = budget as usize * key_block;

    // q as the score step's left operand, and the output accumulators.
    let mut q_frags = Sequence::<cmma::Matrix<FM>>::new();
    let mut o_frags = Sequence::<cmma::Matrix<f32>>::new();
    let mut o_regs = Array::<f32>::new(comptime!(plan.output_regs()));
    let mut q_row = Array::<f32>::new(comptime!(plan.row_regs(head_dim)));
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
    init_output(&mut o_frags, &mut o_regs, plan);

    // Row statistics, kept by the unit that owns the row (`lane < FRAG`).
    let mut running_max = f32::new(-1.0e30);
    let mut running_sum = f32::new(0.0);
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
        sync_cube();
        softmax_step::<FM>(
            &scores,
            &mut probs,
            &mut row_scale,
            &valid,
            &mut running_max,
            &mut running_sum,
            scale,
            plane,
            lane,
            tile,
        );
        sync_cube();
        accumulate_output::<FM>(
            &mut o_frags,
            &mut o_regs,
            &probs,
            &v_tile,
            &mut scores,
            &row_scale,
            plane,
            lane,
            plan,
            true,
        );
        sync_cube();
        start += tile;
    }

    let local = plane * FRAG + lane;
    let row = group_start + local;
    if lane < FRAG {
        row_scale[local] = 1.0f32 / running_sum;
        if is_row(local, row, query_len, group_size) {
            let at = b * lse.stride(0) + h * lse.stride(1) + row * lse.stride(2);
            lse[at] = running_max + running_sum.ln();
        }
    }
    sync_cube();
    let o_base = b * out.stride(0) + h * out.stride(1);
    write_output::<F>(
        out,
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

/// Launches the forward kernel: `q, k, v: [B, H, S, D]`, `index: [B, H, G, k]` →
/// (output like `q`, f32 log-sum-exp `[B, H, S_q]`), laid out by `plan`.
pub(crate) fn sparse_attention_forward(
    inputs: AttnInputs<CubeBackend>,
    plan: MatrixPlan,
) -> (CubeTensor, CubeTensor) {
    let shape = inputs.shape();
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
    let dtypes = plan.kernel_dtypes(q.dtype, index.dtype);
    let (cubes, cube_dim) = group_grid(&shape, plan);
    sparse_forward_kernel::launch(
        &client,
        cubes,
        cube_dim,
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
        plan,
        dtypes,
    );
    (out, lse)
}
