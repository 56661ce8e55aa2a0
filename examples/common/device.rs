//! The examples' `--device NAME` (include with `#[path]`; each example uses what it needs).
#![allow(dead_code)]

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

/// Makes the device called `name` Burn's default device for this process, unless
/// `BURN_DEVICE` already says otherwise: what Burn creates on its default device (a loaded
/// optimiser's state) then lands where the run is, instead of starting the highest-priority
/// backend compiled in (a Vulkan instance, with its warnings, in a CPU run). Call it first in
/// `main`, before any thread exists.
pub fn make_default(name: &str) {
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: the process has no other thread yet (see above), so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("BURN_DEVICE", name) };
    }
}

/// [`try_device_named`] for the benches: panics on an unknown name.
pub fn device_named(name: &str) -> Device {
    try_device_named(name).unwrap_or_else(|e| panic!("{e}"))
}
