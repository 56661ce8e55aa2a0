//! CubeCL kernels for the Cube backends (CUDA, wgpu/Vulkan; on CPU through lavapipe).

pub(crate) mod backward;
pub(crate) mod forward;
pub(crate) mod matrix;
pub(crate) mod select;
pub(crate) mod tiles;
