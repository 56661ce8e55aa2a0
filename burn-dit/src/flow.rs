//! Flow matching: the noising convention, σ sampling and the timestep shift. The sampler
//! that integrates a model's velocity is in [`crate::sample`].
//!
//! Convention (Wan2.1, SD3): `x_σ = (1 − σ)·x0 + σ·ε` with `σ ∈ [0, 1]` (σ = 1 is pure
//! noise); the model predicts the velocity `v = ε − x0`, so `dx_σ/dσ = v` and the Euler
//! step from σ to σ' is `x ← x + (σ' − σ)·v`.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::SplitMix;

/// How training draws noise levels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum SigmaSampling {
    /// `σ = sigmoid(n)`, `n ~ N(mean, std²)` (SD3's logit-normal).
    LogitNormal {
        /// Mean of the normal.
        mean: f64,
        /// Standard deviation of the normal.
        std: f64,
    },
    /// `σ ~ U(0, 1)`.
    Uniform,
    /// `σ = shift_sigma(u, shift)`, `u ~ U(0, 1)`: the sampler's timestep shift applied to
    /// training, so training spends its steps where sampling does (SD3's shifted schedule).
    ShiftedUniform {
        /// The shift (> 0; 1 is uniform, larger favours high noise).
        shift: f64,
    },
}

impl SigmaSampling {
    /// Draws `batch` noise levels from `rng` onto `device`.
    pub fn sample(&self, batch: usize, rng: &mut SplitMix, device: &Device) -> Tensor<1> {
        let sigmas: Vec<f32> = (0..batch)
            .map(|_| match *self {
                Self::LogitNormal { mean, std } => {
                    1.0 / (1.0 + (-(mean as f32 + std as f32 * rng.normal())).exp())
                }
                Self::Uniform => rng.unit(),
                Self::ShiftedUniform { shift } => shift_sigma(rng.unit() as f64, shift) as f32,
            })
            .collect();
        Tensor::from_data(TensorData::new(sigmas, [batch]), device)
    }
}

/// `x_σ = (1 − σ)·x0 + σ·ε` for per-sample `sigma: [B]`.
pub fn add_noise(x0: Tensor<5>, noise: Tensor<5>, sigma: Tensor<1>) -> Tensor<5> {
    let s = sigma.reshape([x0.dims()[0], 1, 1, 1, 1]);
    x0 * (s.clone().neg() + 1.0) + noise * s
}

/// The regression target `v = ε − x0`.
pub fn velocity_target(x0: Tensor<5>, noise: Tensor<5>) -> Tensor<5> {
    noise - x0
}

/// Noise levels below this divide as this in [`velocity_from_clean`] (JiT's clamp): the
/// velocity of a clean-video prediction at σ → 0 would be unbounded.
pub const CLEAN_PREDICTION_MIN_SIGMA: f64 = 0.05;

/// The velocity `(x_σ − x̂0) / max(σ, σ_min)` of a clean-video prediction `x0_hat` for
/// `x_sigma` at per-sample `sigma: [B]`. Exact for σ ≥ σ_min: `x_σ − x0 = σ·(ε − x0)`.
pub fn velocity_from_clean(x_sigma: Tensor<5>, x0_hat: Tensor<5>, sigma: Tensor<1>) -> Tensor<5> {
    let s = sigma
        .clamp_min(CLEAN_PREDICTION_MIN_SIGMA)
        .reshape([x_sigma.dims()[0], 1, 1, 1, 1]);
    (x_sigma - x0_hat) / s
}

/// Timestep shift `σ' = s·σ / (1 + (s − 1)·σ)`: spends more steps at high noise for larger
/// `s` (Wan uses 3–5 for video).
pub fn shift_sigma(sigma: f64, shift: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}
