//! The examples' `--device NAME` (include with `#[path]`).

use burn::tensor::Device;

/// The device called `name` on the command line, or an error naming the choices this build
/// has (each backend is a cargo feature).
pub fn try_device_named(name: &str) -> Result<Device, String> {
    Ok(match name {
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
        other => {
            return Err(format!(
                "device `{other}` is not compiled in; rebuild with its cargo feature (ndarray, wgpu, vulkan, cuda)"
            ));
        }
    })
}

/// [`try_device_named`] for the benches: panics on an unknown name.
#[allow(dead_code)]
pub fn device_named(name: &str) -> Device {
    try_device_named(name).unwrap_or_else(|e| panic!("{e}"))
}
