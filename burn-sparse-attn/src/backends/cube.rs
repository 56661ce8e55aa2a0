use burn_cubecl::CubeBackend;

use crate::SparseAttnOps;

/// The Cube backends (wgpu, Vulkan, CUDA) run the reference bodies, composed of Burn's own
/// CubeCL kernels, until the fused sparse kernels land.
impl SparseAttnOps for CubeBackend {}
