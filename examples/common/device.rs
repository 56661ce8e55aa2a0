//! The bench examples' `--device NAME` (include with `#[path]`).

use burn::tensor::Device;

/// The device called `name` on the command line; panics with the compiled-in choices.
pub fn device_named(name: &str) -> Device {
    match name {
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        other => panic!("device `{other}` is not compiled in (features: flex, ndarray, wgpu, vulkan, cuda)"),
    }
}
