//! The low-rank predictor: cheap projections whose scores rank keys like the real ones.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// Projects the layer input to per-head low-rank queries and keys (`d_model → H·r`).
///
/// Trained (see [`DsvAttention`](super::DsvAttention)) so that `q_lr·k_lrᵀ` follows
/// `q·kᵀ` before the softmax, on detached inputs and targets: it never sends gradient into
/// the host model.
#[derive(Module, Debug)]
pub struct LowRankPredictor {
    query: Linear,
    key: Linear,
    heads: usize,
    rank: usize,
}

impl LowRankPredictor {
    pub(crate) fn new(d_model: usize, heads: usize, rank: usize, device: &Device) -> Self {
        let linear = || LinearConfig::new(d_model, heads * rank).with_bias(false).init(device);
        Self {
            query: linear(),
            key: linear(),
            heads,
            rank,
        }
    }

    /// `x: [B, S, C]` → `(q_lr, k_lr)`, each `[B, H, S, r]`.
    pub fn forward(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let [b, s, _] = x.dims();
        let split = |y: Tensor<3>| y.reshape([b, s, self.heads, self.rank]).swap_dims(1, 2);
        (split(self.query.forward(x.clone())), split(self.key.forward(x)))
    }

    /// Whether the predictor is being trained (its weights track gradients).
    pub fn is_trainable(&self) -> bool {
        self.query.weight.val().is_require_grad()
    }

    /// Rank of the projections per head.
    pub fn rank(&self) -> usize {
        self.rank
    }
}

/// DSV's predictor loss on sampled query rows: `0.9·(1 − cos) + 0.1·MSE` of the L2-normalised
/// score rows, averaged over rows and heads. `predicted, target: [B, H, n, S]`.
pub(crate) fn predictor_loss(predicted: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    let normalise = |x: Tensor<4>| {
        let norm = x.clone().square().sum_dim(3).sqrt().clamp_min(1e-6);
        x / norm
    };
    let (p, t) = (normalise(predicted), normalise(target));
    let cosine = (p.clone() * t.clone()).sum_dim(3);
    let mse = (p - t).square().mean_dim(3);
    ((cosine.neg() + 1.0) * 0.9 + mse * 0.1).mean()
}
