//! The Cube backends (wgpu, Vulkan, CUDA): the CubeCL selection, forward and backward
//! kernels (`kernel::cube`); shapes beyond their limits run the reference bodies.

use burn::backend::{
    TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, IntDType};
use burn_cubecl::CubeBackend;

use crate::SparseAttnOps;
use crate::kernel::cube::tiles::TilePlan;
use crate::kernel::cube::{backward, forward, select};
use crate::reference;

impl SparseAttnOps for CubeBackend {
    fn select_critical_keys(
        q_lr: FloatTensor<Self>,
        k_lr: FloatTensor<Self>,
        group_size: usize,
        key_block: usize,
        budget: usize,
        index_dtype: IntDType,
    ) -> IntTensor<Self> {
        let rank = q_lr.shape().dims::<4>()[3];
        if select::supports(rank) {
            select::select_critical_keys(
                q_lr,
                k_lr,
                group_size,
                key_block,
                budget,
                DType::from(index_dtype),
            )
        } else {
            reference::select_critical_keys::<Self>(
                q_lr,
                k_lr,
                group_size,
                key_block,
                budget,
                index_dtype,
            )
        }
    }

    fn sparse_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        index: IntTensor<Self>,
        group_size: usize,
        key_block: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if let Some(plan) = TilePlan::new(&q, group_size, 1) {
            forward::sparse_attention_forward(q, k, v, index, group_size, key_block, scale, plan)
        } else {
            reference::sparse_attention_forward::<Self>(
                q, k, v, index, group_size, key_block, scale,
            )
        }
    }

    fn sparse_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        index: IntTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad_out: FloatTensor<Self>,
        group_size: usize,
        key_block: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if let Some(plan) = TilePlan::new(&q, group_size, 2) {
            backward::sparse_attention_backward(
                q, k, v, index, out, lse, grad_out, group_size, key_block, scale, plan,
            )
        } else {
            reference::sparse_attention_backward::<Self>(
                q, k, v, index, out, lse, grad_out, group_size, key_block, scale,
            )
        }
    }
}
