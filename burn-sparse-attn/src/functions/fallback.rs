//! [`DenseFallback`]: when sparse attention runs Burn's dense attention instead.

use crate::CriticalKeys;

/// When [`sparse_attention`](crate::sparse_attention) runs Burn's dense attention (masked to
/// the same keys) instead of the sparse kernels: where sparse cannot win
/// ([`SparseAttentionOptions::fallback`](crate::SparseAttentionOptions::fallback)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseFallback {
    /// Key sequences shorter than this run dense.
    pub min_sparse_len: usize,
    /// Selections that keep more than this share of the keys run dense.
    pub max_density: f64,
}

impl DenseFallback {
    /// The policy for `device`'s backend. CPU backends (Flex, NdArray): sparse from 128 keys
    /// and at most 60% density — measured, the sparse kernels win there (docs/benchmarks.md). Cube
    /// backends: sparse from 2048 keys and at most 40% density — from an NVIDIA H200
    /// (docs/benchmarks.md): at 1024 keys Vulkan's dense forward wins below 95% sparsity; at
    /// 4096 sparse wins the forward from 50% sparsity through CUDA and Vulkan, and
    /// forward+backward from 80% through Vulkan and 90% through CUDA. Set the fields from
    /// your own benchmark.
    pub fn for_device(device: &burn::tensor::Device) -> Self {
        if is_cpu_backend(device) {
            Self {
                min_sparse_len: 128,
                max_density: 0.6,
            }
        } else {
            Self {
                min_sparse_len: 2048,
                max_density: 0.4,
            }
        }
    }

    /// Whether `keys` should run dense under this policy.
    pub fn prefers_dense(&self, keys: &CriticalKeys) -> bool {
        keys.key_len() < self.min_sparse_len || 1.0 - keys.sparsity() > self.max_density
    }
}

/// Whether `device` is one of the CPU backends (Flex, NdArray).
fn is_cpu_backend(device: &burn::tensor::Device) -> bool {
    let plain = device.clone().inner();
    #[cfg(feature = "flex")]
    if plain == burn::tensor::Device::flex() {
        return true;
    }
    #[cfg(feature = "ndarray")]
    if plain == burn::tensor::Device::ndarray() {
        return true;
    }
    let _ = plain;
    false
}
