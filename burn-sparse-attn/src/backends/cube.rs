//! The Cube backends (wgpu, Vulkan, CUDA): the CubeCL selection, forward and backward
//! kernels (`kernel::cube`); shapes beyond their limits run the reference bodies.

use burn::backend::{
    TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, IntDType};
use burn_cubecl::CubeBackend;

use crate::kernel::cube::matrix::{F32Products, MatrixPlan};
use crate::kernel::cube::tiles::unrolls;
use crate::kernel::cube::{backward, forward, select};
use crate::{AttnInputs, SelectionConfig, SparseAttnOps, reference};

/// The tile layout of the forward (one score tile) or dQ (two) kernel for `inputs` on their
/// device; `None` where none fits (the reference body runs).
fn matrix_plan(inputs: &AttnInputs<CubeBackend>, score_tiles: usize) -> Option<MatrixPlan> {
    MatrixPlan::new(
        inputs.q.client.properties(),
        inputs.q.dtype,
        inputs.layout.group_size,
        inputs.q.shape().dims::<4>()[3],
        F32Products::Exact,
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
        match matrix_plan(&inputs, 1) {
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
        match matrix_plan(&inputs, 2) {
            Some(plan) => backward::sparse_attention_backward(inputs, out, lse, grad_out, plan),
            None => reference::sparse_attention_backward::<Self>(inputs, out, lse, grad_out),
        }
    }
}
