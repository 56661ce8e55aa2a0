//! The Cube backends (wgpu, Vulkan, CUDA): the CubeCL selection, forward and backward
//! kernels (`kernel::cube`); shapes beyond their limits run the reference bodies.

use burn::backend::{
    TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, IntDType};
use burn_cubecl::CubeBackend;

use crate::kernel::cube::matrix::MatrixPlan;
use crate::kernel::cube::tiles::{has_plane_ops, unrolls};
use crate::kernel::cube::{backward, forward, select};
use crate::{AttnInputs, SelectionConfig, SparseAttnOps, reference};

/// The tile layout of a kernel whose cubes own `rows` rows (a query group; a dK/dV cube's
/// keys) with one score tile (the forward) or two (dQ, dK/dV) for `inputs` on their device;
/// `None` where none fits.
fn matrix_plan(
    inputs: &AttnInputs<CubeBackend>,
    rows: usize,
    score_tiles: usize,
) -> Option<MatrixPlan> {
    MatrixPlan::new(
        inputs.q.client.properties(),
        inputs.q.dtype,
        rows,
        inputs.q.shape().dims::<4>()[3],
        inputs.layout.f32_precision,
        unrolls(&inputs.q.client),
        score_tiles,
    )
}

impl SparseAttnOps for CubeBackend {
    fn select_critical_keys(
        q_lr: FloatTensor<Self>,
        k_lr: FloatTensor<Self>,
        selection: SelectionConfig,
        index_dtype: IntDType,
    ) -> IntTensor<Self> {
        let rank = q_lr.shape().dims::<4>()[3];
        if select::supports(rank) {
            select::select_critical_keys(q_lr, k_lr, selection, DType::from(index_dtype))
        } else {
            reference::select_critical_keys::<Self>(q_lr, k_lr, selection, index_dtype)
        }
    }

    fn sparse_attention_forward(
        inputs: AttnInputs<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match matrix_plan(&inputs, inputs.layout.group_size, 1) {
            Some(plan) => forward::sparse_attention_forward(inputs, plan),
            None => reference::sparse_attention_forward::<Self>(inputs),
        }
    }

    fn sparse_attention_backward(
        inputs: AttnInputs<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // dK/dV on the tiles where a unit holds whole fragments of keys, else a kernel per key.
        // On a GPU without tensor cores for the dtype the per-key kernel stays: scalar tiles
        // hold rows of k and v and two accumulators per unit, which spill there (4–8 KB at
        // D = 96–128, scripts/gpu/compile-cuda.sh); CPU adapters have no plane shuffles for
        // the per-key kernel's lanes and run the tiles.
        let scalar_tiles_fit = !has_plane_ops(&inputs.q.client);
        let key_plan = backward::key_span(inputs.layout.key_block)
            .and_then(|span| Some((span, matrix_plan(&inputs, span, 2)?)))
            .filter(|(_, plan)| plan.tensor_cores || scalar_tiles_fit);
        match matrix_plan(&inputs, inputs.layout.group_size, 2) {
            Some(plan) => {
                backward::sparse_attention_backward(inputs, out, lse, grad_out, plan, key_plan)
            }
            None => reference::sparse_attention_backward::<Self>(inputs, out, lse, grad_out),
        }
    }
}
