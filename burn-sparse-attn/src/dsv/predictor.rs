//! The low-rank predictor: cheap projections whose scores rank keys like the real ones.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

/// What the [`LowRankPredictor`] projects.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum PredictorInput {
    /// The layer input `x` (`d_model → H·r`), as in the DSV paper. It cannot see what the
    /// host applies after its q/k projections: rotary embeddings (RoPE) or QK-norm.
    LayerInput,
    /// The layer's own queries and keys (`head_dim → r` per head), after whatever the host
    /// applied to them. With RoPE, scores depend on relative position, which no linear map of
    /// `x` can express: on the tiny video DiT a predictor of `x` stalled at a loss of 0.24–0.52
    /// and its layers never went sparse.
    QueryKey,
}

/// Projects the layer input, or the layer's queries and keys, to per-head low-rank queries
/// and keys (see [`PredictorInput`]).
///
/// Trained (see [`DsvAttention`](super::DsvAttention)) so that `q_lr·k_lrᵀ` follows
/// `q·kᵀ` before the softmax, on detached inputs and targets: it never sends gradient into
/// the host model.
#[derive(Module, Debug)]
pub struct LowRankPredictor {
    /// `[H, in, r]`: one projection per head.
    query: Param<Tensor<3>>,
    key: Param<Tensor<3>>,
    #[module(skip)]
    input: PredictorInput,
}

impl LowRankPredictor {
    pub(crate) fn new(
        input: PredictorInput,
        d_model: usize,
        heads: usize,
        head_dim: usize,
        rank: usize,
        device: &Device,
    ) -> Self {
        let (query, key) = match input {
            // Independent uniform weights, as an nn::Linear of this width would start.
            PredictorInput::LayerInput => {
                let bound = 1.0 / (d_model as f64).sqrt();
                let init = || {
                    Tensor::<3>::random(
                        [heads, d_model, rank],
                        Distribution::Uniform(-bound, bound),
                        device,
                    )
                };
                (init(), init())
            }
            // One shared Gaussian map for queries and keys: the predicted scores start as a
            // random projection (Johnson–Lindenstrauss) estimate of q·kᵀ, already ranking keys
            // roughly right, and training sharpens them.
            PredictorInput::QueryKey => {
                let shared = Tensor::<3>::random(
                    [heads, head_dim, rank],
                    Distribution::Normal(0.0, 1.0 / (rank as f64).sqrt()),
                    device,
                );
                // Two leaves with the same values: one tensor behind both parameters would be
                // one autodiff node, whose gradient (the sum of both) only one of them gets.
                let copy = Tensor::from_data(shared.to_data(), device);
                (shared, copy)
            }
        };
        Self {
            query: Param::from_tensor(query),
            key: Param::from_tensor(key),
            input,
        }
    }

    /// `(q_lr, k_lr)`, each `[B, H, S, r]`, from the layer input `x: [B, S, d_model]` or the
    /// layer's `q, k: [B, H, S, head_dim]`, whichever [`Self::input`] says; the inputs are
    /// detached here.
    pub fn forward(&self, x: Tensor<3>, q: Tensor<4>, k: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let project = |input: Tensor<4>, weight: &Param<Tensor<3>>| {
            input.detach().matmul(weight.val().unsqueeze_dim(0))
        };
        match self.input {
            PredictorInput::LayerInput => {
                let x = x.unsqueeze_dim::<4>(1);
                (project(x.clone(), &self.query), project(x, &self.key))
            }
            PredictorInput::QueryKey => (project(q, &self.query), project(k, &self.key)),
        }
    }

    /// Whether the predictor is being trained (its weights track gradients).
    pub fn is_trainable(&self) -> bool {
        self.query.val().is_require_grad()
    }

    /// Rank of the projections per head.
    pub fn rank(&self) -> usize {
        self.query.dims()[2]
    }

    /// What the predictor projects.
    pub fn input(&self) -> PredictorInput {
        self.input
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
