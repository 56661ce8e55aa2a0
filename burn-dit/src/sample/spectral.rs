//! Frequency-domain filtering of videos with burn-signal's FFT (FasterCache's CFG-Cache and
//! FreeInit).

use crate::DitError;
use burn::tensor::{Tensor, TensorData};
use burn_sparse_attn::SparseAttnError;

/// The axes a filter transforms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Axes {
    /// Each frame's 2D spectrum (H, W).
    Spatial,
    /// The 3D spectrum over (T, H, W).
    SpatioTemporal,
}

/// `x: [B, C, T, H, W]` filtered by `gain(f_t, f_h, f_w)` on its spectrum, with signed
/// integer frequencies (`f_t` always 0 for [`Axes::Spatial`]); the gain must be even in each
/// frequency, so the result stays real. burn-signal's FFT takes power-of-two sizes only and
/// does not serve NdArray: other inputs are refused by name (`function`, `x`).
pub(crate) fn filter_frequencies(
    function: &'static str,
    x: Tensor<5>,
    axes: Axes,
    gain: impl Fn(isize, isize, isize) -> f64,
) -> Result<Tensor<5>, DitError> {
    let [_, _, t, h, w] = x.dims();
    let temporal = axes == Axes::SpatioTemporal;
    SparseAttnError::check(
        h.is_power_of_two() && w.is_power_of_two() && (!temporal || t.is_power_of_two()),
        function,
        "x",
        if temporal {
            "[B, C, T, H, W] with T, H and W powers of two (burn-signal's FFT)"
        } else {
            "[B, C, T, H, W] with H and W powers of two (burn-signal's FFT)"
        },
        format!("{:?}", x.dims()),
    )?;
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)]
    SparseAttnError::check(
        x.device().without_autodiff() != burn::tensor::Device::ndarray(),
        function,
        "x",
        "a tensor on Flex or a CubeCL device (burn-signal's FFT does not serve NdArray)",
        "a tensor on NdArray",
    )?;
    let signed = |k: usize, n: usize| {
        if k <= n / 2 {
            k as isize
        } else {
            k as isize - n as isize
        }
    };
    let half = w / 2 + 1;
    let frames = if temporal { t } else { 1 };
    let gains: Vec<f32> = (0..frames)
        .flat_map(|kt| (0..h).map(move |kh| (kt, kh)))
        .flat_map(|(kt, kh)| (0..half).map(move |kw| (kt, kh, kw)))
        .map(|(kt, kh, kw)| gain(signed(kt, t), signed(kh, h), kw as isize) as f32)
        .collect();
    let gains = Tensor::<3>::from_data(TensorData::new(gains, [frames, h, half]), &x.device())
        .unsqueeze::<5>();
    // rfft keeps the non-negative W frequencies; H (and T) are full complex transforms.
    let (mut re, mut im) = burn_signal::rfft(x, 4, None);
    let dims: &[usize] = if temporal { &[3, 2] } else { &[3] };
    for &dim in dims {
        (re, im) = burn_signal::cfft(re, im, dim, None);
    }
    (re, im) = (re * gains.clone(), im * gains);
    // burn-signal has no inverse complex FFT: ifft(X) = conj(fft(conj(X))) / n.
    for &dim in dims {
        let n = [t, h][dim - 2] as f64;
        let (r, i) = burn_signal::cfft(re, im.neg(), dim, None);
        (re, im) = (r / n, i.neg() / n);
    }
    Ok(burn_signal::irfft(re, im, 4, Some(w)))
}
