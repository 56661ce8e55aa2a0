//! The Cube backends (wgpu, Vulkan, CUDA): the CubeCL forward and backward kernels
//! (`kernel::cube`); selection runs the reference body, made of Burn's own CubeCL kernels.

use burn::backend::{
    TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn_cubecl::CubeBackend;

use crate::SparseAttnOps;
use crate::kernel::cube::{backward, forward};
use crate::reference;

impl SparseAttnOps for CubeBackend {
    fn sparse_attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        index: IntTensor<Self>,
        group_size: usize,
        key_block: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let head_dim = q.shape().dims::<4>()[3];
        if forward::supports(group_size, head_dim) {
            forward::sparse_attention_forward(q, k, v, index, group_size, key_block, scale)
        } else {
            reference::sparse_attention_forward::<Self>(q, k, v, index, group_size, key_block, scale)
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
        let head_dim = q.shape().dims::<4>()[3];
        if forward::supports(group_size, head_dim) {
            backward::sparse_attention_backward(q, k, v, index, out, lse, grad_out, group_size, key_block, scale)
        } else {
            reference::sparse_attention_backward::<Self>(q, k, v, index, out, lse, grad_out, group_size, key_block, scale)
        }
    }
}
