//! Model configuration and presets.

use burn::config::Config;
use burn_ctx_parallel::DualScopeConfig;
use burn_sparse_attn::dsv::DsvPolicy;

/// Which self-attention the DiT blocks run.
#[derive(Config, Debug, PartialEq)]
pub enum AttentionKind {
    /// Full 3D dense attention.
    Dense,
    /// DSV dynamic sparse attention with this policy (dense until each layer's predictor is
    /// ready); the layer shapes come from the model.
    Dsv(DsvPolicy),
    /// Video-Infinity's dual-scope attention on the frame axis of the token grid: a local
    /// window of frames plus global frames, balanced by noise level. On one device the video
    /// is one clip; [`crate::ForwardContext::clips`] spreads clips over a group of ranks.
    DualScope(DualScopeConfig),
}

impl AttentionKind {
    /// DSV as the main job runs it on the tiny clips (256 tokens of 4×8×8): query cubes of
    /// 1×4×4 tokens, sparse from 256 tokens and 40% profiled sparsity (where the CPU kernels
    /// beat dense), switching once the predictor loss is under 0.05.
    pub fn tiny_dsv() -> Self {
        Self::Dsv(
            DsvPolicy::new()
                .with_min_sparse_len(256)
                .with_query_cube([1, 4, 4])
                .with_sparsity_threshold(0.4)
                .with_switch_loss(0.05)
                .with_sample_stride(8)
                .with_profile_every(10),
        )
    }
}

/// What the network's output head predicts. [`crate::VideoDit::forward`] returns the
/// flow-matching velocity either way, so training, sampling and guidance are the same code.
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum Prediction {
    /// The velocity `ε − x0` directly (SD3, Wan2.1).
    Velocity,
    /// The clean video `x̂0`, returned as the velocity `(x_σ − x̂0) / max(σ, σ_min)`
    /// ([`crate::flow::velocity_from_clean`]). The velocity loss then weighs the clean-video
    /// error by 1/σ², and the last Euler step lands on `x̂0` itself: the head draws images,
    /// not noise (JiT, Li & He 2025: clean data lies near a low-dimensional manifold, noise
    /// does not, so small networks predict it better).
    Clean,
}

/// A video DiT in the style of Wan2.1.
#[derive(Config, Debug)]
pub struct VideoDitConfig {
    /// Channels of the (latent) video.
    pub channels: usize,
    /// Patch size `[frames, height, width]`.
    pub patch: [usize; 3],
    /// Token width.
    pub d_model: usize,
    /// Blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width as a multiple of `d_model`.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// A depthwise 3×3 convolution over each frame's token grid on the MLP's input (with the
    /// first MLP layer, a separable convolution; PVTv2's ConvFFN puts it after the expansion,
    /// at four times the cost): a local prior that lets a small model trained for minutes draw
    /// solid objects instead of scattered patches. Spatial only, so tokens mix across frames
    /// through attention alone and clips parallelise exactly.
    #[config(default = false)]
    pub mlp_conv: bool,
    /// A depthwise 3-tap convolution across token frames after the frame convolution (one
    /// separable 3×3×3 convolution in all), starting as the identity: neighbouring frames
    /// share features directly, not only through attention. Across clips it reads one edge
    /// frame from each neighbouring clip ([`burn_ctx_parallel::clip_halos`]), so clip
    /// parallelism stays exact.
    #[config(default = false)]
    pub mlp_time_conv: bool,
    /// A 3×3 convolution over each output frame's pixels after unpatchify (U-ViT's final
    /// convolution), starting as the identity: neighbouring patches' edge pixels can agree,
    /// where a per-token linear head draws every patch on its own. Within a frame, so clips
    /// parallelise exactly.
    #[config(default = false)]
    pub head_conv: bool,
    /// Self-conditioning (Chen et al. 2022, "Analog Bits"; RIN): the patch embedding also
    /// reads the model's previous clean-video estimate `x̂0`, zeros when there is none. The
    /// sampler hands each step's estimate to the next, so a sample's outline, once guessed,
    /// is refined instead of re-guessed from the noisy input at every step; training makes
    /// the estimate without gradient on half of its steps ([`crate::VideoDitInput::estimate`]).
    #[config(default = false)]
    pub self_condition: bool,
    /// Vchitect-2.0's parallel block: self-attention, cross-attention and the MLP all read
    /// the block's input `x` (each through its own norm and adaLN modulation) and their
    /// outputs are summed into one residual, `x + g₁·SA(h₁) + CA(x) + g₂·MLP(h₂)`, instead of
    /// each branch reading the previous one's output. Same parameters as the sequential block.
    #[config(default = false)]
    pub parallel_block: bool,
    /// RepVideo's cross-layer feature aggregation: block `i > 0` attends over
    /// `norm(x + g_i ⊙ A_i)`, where `A_i` is the mean of the outputs of blocks `0..i` and the
    /// learned per-channel gate `g_i` starts at zero, so the option starts as the plain model.
    /// The MLP and cross-attention still read `x`.
    #[config(default = false)]
    pub feature_aggregation: bool,
    /// Width of the conditioning embeddings fed to cross-attention.
    #[config(default = 64)]
    pub cond_dim: usize,
    /// Vocabulary of conditioning tokens (id 0 is the null token of classifier-free guidance);
    /// the default holds the labels of every set in [`crate::data`].
    #[config(default = "crate::data::COND_VOCAB")]
    pub cond_vocab: usize,
    /// Also add the mean of the conditioning tokens to the time embedding, so every block's
    /// adaLN modulation sees the prompt (as SD3 does with its pooled text embedding) besides
    /// the cross-attention. Class-like conditioning is learned far sooner this way (DiT's
    /// finding that adaLN beats cross-attention for class labels).
    #[config(default = true)]
    pub pooled_cond: bool,
    /// RMS-normalise queries and keys per head (learned gain) before RoPE, as Wan2.1 does:
    /// attention logits start at unit scale instead of ~0.3, so a fresh model can attend
    /// locally at once rather than averaging every token for its first thousand steps.
    #[config(default = true)]
    pub qk_norm: bool,
    /// What the output head predicts.
    #[config(default = "Prediction::Velocity")]
    pub prediction: Prediction,
    /// RoPE base.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// Self-attention of every block.
    #[config(default = "AttentionKind::Dense")]
    pub attention: AttentionKind,
}

/// RoPE base for token grids of ~4–16 positions per axis (the `tiny` and `small` presets).
/// With Wan's 1e4, an axis of 10 rotated dims turns at 1, 0.16, 0.025, … rad per patch: over
/// an 8-patch axis only the first pair tells positions apart, so a layer can hardly attend to
/// its neighbours. Base 10 spreads the 5 pairs over 1 … 0.16 rad per patch, all of which
/// resolve such a grid. Measured on the tiny preset (900 steps, README): frames showing one
/// object went from 1% to 38% of the samples.
pub const SMALL_GRID_ROPE_THETA: f64 = 10.0;

impl VideoDitConfig {
    /// Trains on a 2-core CPU in minutes: 8×32×32 RGB clips in 2×4×4 patches → 256 tokens
    /// of width 128, with the MLP's frame convolution (README, the main job: frames showing
    /// one object 63% → 89% of 48 held-out labels) and temporal convolution (frames with an
    /// object detected 97–98% → 99.5%, motion smoothness 0.91–0.92 → 0.93, in two runs each).
    pub fn tiny() -> Self {
        Self::new(3, [2, 4, 4], 128, 4, 4)
            .with_rope_theta(SMALL_GRID_ROPE_THETA)
            .with_mlp_conv(true)
            .with_mlp_time_conv(true)
    }

    /// 16×64×64 clips with 2×4×4 patches → 2048 tokens of width 384.
    pub fn small() -> Self {
        Self::new(3, [2, 4, 4], 384, 12, 6).with_rope_theta(SMALL_GRID_ROPE_THETA)
    }

    /// A Wan-1.3B-like shape for latents (16 channels, 1×2×2 patches).
    pub fn base() -> Self {
        Self::new(16, [1, 2, 2], 1536, 30, 12)
            .with_cond_dim(4096)
            .with_cond_vocab(1)
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.heads
    }
}
