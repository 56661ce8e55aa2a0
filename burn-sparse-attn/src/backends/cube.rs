//! The Cube backends (wgpu, Vulkan, CUDA): the CubeCL forward kernel (`kernel::cube`);
//! selection and backward run the reference bodies, made of Burn's own CubeCL kernels.

use burn::backend::{
    TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn_cubecl::CubeBackend;

use crate::SparseAttnOps;
use crate::kernel::cube::forward;
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
}
