//! FreeInit (Wu et al. 2023, arXiv 2312.07537): sample, re-noise the result with the same
//! initial noise, keep its low spatio-temporal frequencies and draw the high ones afresh,
//! sample again.

use burn::config::Config;
use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;
use serde::{Deserialize, Serialize};

use crate::DitError;
use crate::sample::spectral::{Axes, filter_frequencies};

/// The low-pass filter over the 3D spectrum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum FrequencyFilter {
    /// `1 / (1 + (d/d_s)^(2n))`.
    Butterworth {
        /// The order `n`.
        order: u32,
    },
    /// `exp(−d² / (2·d_s²))`.
    Gaussian,
    /// 1 within `d ≤ d_s`, 0 beyond.
    Ideal,
}

/// FreeInit settings ([`SamplerConfig::free_init`](crate::sample::SamplerConfig::free_init)).
#[derive(Config, Copy, Debug, PartialEq)]
pub struct FreeInitConfig {
    /// Sampling passes in all (1 = the plain sampler).
    #[config(default = 3)]
    pub iterations: usize,
    /// The low-pass filter.
    #[config(default = "FrequencyFilter::Butterworth { order: 4 }")]
    pub filter: FrequencyFilter,
    /// Spatial cut-off `d_s` in normalised frequency (1 = the Nyquist frequency).
    #[config(default = 0.25)]
    pub spatial_cutoff: f64,
    /// Temporal cut-off `d_t` in normalised frequency.
    #[config(default = 0.25)]
    pub temporal_cutoff: f64,
    /// The noise level the result is re-noised to, and where the next pass starts. FreeInit
    /// diffuses back to pure noise, but under flow matching `x_1 = ε` carries nothing of the
    /// sample (DDPM's `√ᾱ_T > 0` is what carries it there), so the re-noising stops short of
    /// 1.
    #[config(default = 0.8)]
    pub renoise_sigma: f64,
    /// Early passes take fewer steps: pass `i` of `N` takes `⌈steps·(i + 1)/N⌉`.
    #[config(default = false)]
    pub coarse_to_fine: bool,
}

impl Default for FreeInitConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// The most passes FreeInit takes (its paper tries up to 5).
pub const MAX_FREE_INIT_ITERATIONS: usize = 8;

impl FreeInitConfig {
    /// Checks every field's range, naming `function` in the error.
    pub fn check(&self, function: &'static str) -> Result<(), SparseAttnError> {
        SparseAttnError::check(
            (1..=MAX_FREE_INIT_ITERATIONS).contains(&self.iterations),
            function,
            "free_init.iterations",
            format!("in 1..={MAX_FREE_INIT_ITERATIONS}"),
            self.iterations,
        )?;
        for (name, cutoff) in [
            ("free_init.spatial_cutoff", self.spatial_cutoff),
            ("free_init.temporal_cutoff", self.temporal_cutoff),
        ] {
            SparseAttnError::check(
                cutoff > 0.0 && cutoff <= 1.0,
                function,
                name,
                "in (0, 1]",
                cutoff,
            )?;
        }
        if let FrequencyFilter::Butterworth { order } = self.filter {
            SparseAttnError::check(
                order >= 1,
                function,
                "free_init.filter",
                "a Butterworth order ≥ 1",
                order,
            )?;
        }
        SparseAttnError::check(
            self.renoise_sigma > 0.0 && self.renoise_sigma < 1.0,
            function,
            "free_init.renoise_sigma",
            "in (0, 1)",
            self.renoise_sigma,
        )
    }

    /// Euler steps of pass `i` for a sampler of `steps`.
    pub fn steps_of(&self, i: usize, steps: usize) -> usize {
        match self.coarse_to_fine {
            true => (steps * (i + 1)).div_ceil(self.iterations).max(1),
            false => steps,
        }
    }

    /// The filter's gain at normalised frequencies `(u_t, u_h, u_w)` (each in [−1, 1]).
    pub fn gain(&self, [ut, uh, uw]: [f64; 3]) -> f64 {
        let ds = self.spatial_cutoff;
        // FreeInit's distance: time scaled so that its cut-off lands on the spatial one.
        let d2 = (ds / self.temporal_cutoff * ut).powi(2) + uh * uh + uw * uw;
        match self.filter {
            FrequencyFilter::Butterworth { order } => {
                1.0 / (1.0 + (d2 / (ds * ds)).powi(order as i32))
            }
            FrequencyFilter::Gaussian => (-d2 / (2.0 * ds * ds)).exp(),
            FrequencyFilter::Ideal => f64::from(u8::from(d2 <= ds * ds)),
        }
    }

    /// `x: [B, C, T, H, W]` through the low-pass filter (T, H and W powers of two).
    pub fn low_pass(&self, x: Tensor<5>) -> Result<Tensor<5>, DitError> {
        let [_, _, t, h, w] = x.dims();
        let unit = |f: isize, n: usize| 2.0 * f as f64 / n as f64;
        filter_frequencies(
            "FreeInitConfig::low_pass",
            x,
            Axes::SpatioTemporal,
            |ft, fh, fw| self.gain([unit(ft, t), unit(fh, h), unit(fw, w)]),
        )
    }

    /// The next pass's start from this pass's result `clean`, the initial `noise` and
    /// `fresh` noise: the low frequencies of `clean` re-noised to `renoise_sigma` with the
    /// initial noise, the high ones of `renoise_sigma·fresh`.
    pub fn reinitialise(
        &self,
        clean: Tensor<5>,
        noise: Tensor<5>,
        fresh: Tensor<5>,
    ) -> Result<Tensor<5>, DitError> {
        let s = self.renoise_sigma;
        let renoised = clean * (1.0 - s) + noise * s;
        let fresh = fresh * s;
        // LPF(renoised) + HPF(fresh) = fresh + LPF(renoised − fresh): one filter.
        Ok(fresh.clone() + self.low_pass(renoised - fresh)?)
    }
}
