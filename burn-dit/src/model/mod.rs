//! The video DiT: patches in, 3D-RoPE blocks with adaLN-Zero and cross-attention, patches
//! out. One forward pass, [`VideoDit::forward`], reads as: place the input's frames
//! ([`placement`]: the clips and how attention spans them), embed, run the blocks, apply
//! the head.

mod block;
mod conv;
mod cross_attention;
mod input;
pub(crate) mod patch;
mod placement;
mod recompute;
pub(crate) mod rope;
mod self_attention;
mod validate;

use std::cell::OnceCell;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Int, Tensor, TensorData, activation::silu};
use burn_sparse_attn::dsv::{DsvAttention, DsvHost, TokenGrid};

pub use block::DitBlock;
pub(crate) use block::{ClipContext, modulate, plain_norm, quick_gelu};
pub use cross_attention::CrossAttention;
pub use input::{BlockFeatures, ClipGroup, Conditioning, ForwardContext, Layout, VideoDitInput};
pub(crate) use placement::{ClipInputs, split_frames};
pub use recompute::CheckpointedStep;
pub use self_attention::SelfAttention;

use crate::DitError;
use crate::config::{Prediction, VideoDitConfig};
use crate::flow::velocity_from_clean;
use patch::{patchify, unpatchify};
use rope::Rope3d;
use self_attention::AttentionMode;

/// Width of the sinusoidal timestep features.
const TIME_FEATURES: usize = 256;

/// A linear layer whose weight and bias start at zero (adaLN-Zero and the output head).
fn zero_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::zeros([d_in, d_out], device)),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// `a + b`, clip by clip.
pub(crate) fn add_clips(a: Vec<Tensor<3>>, b: Vec<Tensor<3>>) -> Vec<Tensor<3>> {
    a.into_iter().zip(b).map(|(a, b)| a + b).collect()
}

/// `sums += new`, clip by clip (`sums` starting as `new`).
pub(crate) fn accumulate(sums: &mut Option<Vec<Tensor<3>>>, new: Vec<Tensor<3>>) {
    *sums = Some(match sums.take() {
        Some(sums) => add_clips(sums, new),
        None => new,
    });
}

/// The embedding of every clip: the blocks' input tokens and context, and what the head
/// reads besides the last block's tokens.
pub(crate) struct Embedded {
    pub tokens: Vec<Tensor<3>>,
    pub contexts: Vec<ClipContext>,
    pub head: Vec<HeadInput>,
}

/// What the output head of one clip reads besides its tokens.
#[derive(Clone)]
pub(crate) struct HeadInput {
    /// `[B, 2, d]` shift and scale from the time embedding.
    pub modulation: Tensor<3>,
    /// The clip's token grid.
    pub grid: [usize; 3],
    /// The noisy input and its noise levels, for a clean-video head.
    pub input: Option<(Tensor<5>, Tensor<1>)>,
}

/// A video diffusion transformer; [`VideoDit::forward`] returns the flow-matching velocity
/// `ε − x0` whatever its head predicts ([`crate::config::Prediction`]).
#[derive(Module, Debug)]
pub struct VideoDit {
    patch_embed: Linear,
    time_in: Linear,
    time_out: Linear,
    time_proj: Linear,
    cond_embed: Embedding,
    cond_in: Linear,
    cond_out: Linear,
    cond_pool: Option<Linear>,
    blocks: Vec<DitBlock>,
    head_time: Linear,
    head: Linear,
    head_conv: Option<Conv2d>,
    #[module(skip)]
    config: VideoDitConfig,
}

impl VideoDitConfig {
    /// Builds the model; panics with the offending field on an inconsistent config.
    pub fn init(&self, device: &Device) -> VideoDit {
        assert!(
            self.heads > 0 && self.d_model.is_multiple_of(self.heads),
            "VideoDitConfig: `d_model` ({}) must be a multiple of `heads` ({})",
            self.d_model,
            self.heads
        );
        assert!(
            self.head_dim().is_multiple_of(2) && self.head_dim() >= 6,
            "VideoDitConfig: head dim d_model/heads = {} must be even and ≥ 6 for 3D RoPE",
            self.head_dim()
        );
        assert!(
            self.patch.iter().all(|&p| p > 0),
            "VideoDitConfig: `patch` entries must be ≥ 1, got {:?}",
            self.patch
        );
        assert!(
            self.channels > 0 && self.depth > 0 && self.cond_vocab > 0,
            "VideoDitConfig: `channels`, `depth` and `cond_vocab` must be ≥ 1"
        );
        let d = self.d_model;
        let patch_dim = self.channels * self.patch.iter().product::<usize>();
        let inputs = 1 + self.self_condition as usize;
        VideoDit {
            patch_embed: LinearConfig::new(inputs * patch_dim, d).init(device),
            time_in: LinearConfig::new(TIME_FEATURES, d).init(device),
            time_out: LinearConfig::new(d, d).init(device),
            time_proj: zero_linear(d, 6 * d, device),
            cond_embed: EmbeddingConfig::new(self.cond_vocab, self.cond_dim).init(device),
            cond_in: LinearConfig::new(self.cond_dim, d).init(device),
            cond_out: LinearConfig::new(d, d).init(device),
            cond_pool: self
                .pooled_cond
                .then(|| LinearConfig::new(self.cond_dim, d).init(device)),
            blocks: (0..self.depth)
                .map(|_| DitBlock::new(self, device))
                .collect(),
            head_time: zero_linear(d, 2 * d, device),
            head: zero_linear(d, patch_dim, device),
            head_conv: self.head_conv.then(|| identity_conv(self.channels, device)),
            config: self.clone(),
        }
    }
}

/// A 3×3 convolution `channels → channels` that starts as the identity.
fn identity_conv(channels: usize, device: &Device) -> Conv2d {
    // Zeros, not a random init overwritten: drawing from the generator here would shift the
    // draws of every parameter initialised after it.
    let mut conv = Conv2dConfig::new([channels, channels], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Zeros)
        .init(device);
    let mut taps = vec![0.0f32; channels * channels * 9];
    for c in 0..channels {
        taps[(c * channels + c) * 9 + 4] = 1.0;
    }
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(taps, [channels, channels, 3, 3]),
        device,
    ));
    conv.bias = Some(Param::from_tensor(Tensor::zeros([channels], device)));
    conv
}

/// `conv` over every frame of `video: [B, C, T, H, W]`.
fn per_frame(conv: &Conv2d, video: Tensor<5>) -> Tensor<5> {
    let [b, c, t, h, w] = video.dims();
    let frames = video.permute([0, 2, 1, 3, 4]).reshape([b * t, c, h, w]);
    conv.forward(frames)
        .reshape([b, t, c, h, w])
        .permute([0, 2, 1, 3, 4])
}

/// Sinusoidal features of `t = 1000·σ`: `[B]` → `[B, TIME_FEATURES]`.
fn time_features(sigma: Tensor<1>) -> Tensor<2> {
    let half = TIME_FEATURES / 2;
    let device = sigma.device();
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10000f32).ln() * i as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device).unsqueeze::<2>();
    let angles = (sigma * 1000.0).unsqueeze_dim::<2>(1) * freqs;
    Tensor::cat(vec![angles.clone().cos(), angles.sin()], 1)
}

impl VideoDit {
    /// The configuration the model was built from.
    pub fn config(&self) -> &VideoDitConfig {
        &self.config
    }

    /// Embeds conditioning token ids `[B, M]` (0 = null) into `[B, M, cond_dim]`; feed your
    /// own embeddings (e.g. text) to [`VideoDit::forward`] instead where you have them.
    pub fn embed_labels(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.cond_embed.forward(ids)
    }

    /// The flow-matching velocity of `input`'s noisy frames `x: [B, C, T, H, W]` at noise
    /// levels `sigma: [B]` given conditioning `cond: [B, M, cond_dim]`, laid out and
    /// recorded as `ctx` says: [`ForwardContext::whole`] for one video on this rank,
    /// [`ForwardContext::sequence_shard`] and [`ForwardContext::clips`] for a video over a
    /// group of ranks, [`ForwardContext::with_tape`] for a training step with DSV layers,
    /// [`ForwardContext::with_sampling`] for a sampling step with accelerators. Returns the
    /// velocity of this rank's frames, shaped like `x`.
    pub fn forward(
        &self,
        input: VideoDitInput,
        ctx: &ForwardContext,
    ) -> Result<Tensor<5>, DitError> {
        let alone = OnceCell::new();
        let (clips, span) = self.place("VideoDit::forward", input, ctx.layout, &alone)?;
        let mode = AttentionMode {
            span: &span,
            tape: ctx.tape,
        };
        let velocities = self.run(clips, mode, ctx)?;
        Ok(placement::join_clips(velocities))
    }

    /// The network over `clips`, recording what `ctx` asks for; blocks take the accelerators
    /// of its sampling run.
    fn run(
        &self,
        clips: ClipInputs,
        mode: AttentionMode,
        ctx: &ForwardContext,
    ) -> Result<Vec<Tensor<5>>, DitError> {
        let aggregate = self.config.feature_aggregation;
        let Embedded {
            mut tokens,
            contexts,
            head,
        } = self.embed(clips);
        if let Some(features) = ctx.features {
            features.push(&tokens);
        }
        // Running sum of the blocks' outputs, per clip (feature aggregation).
        let mut sums: Option<Vec<Tensor<3>>> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            let means: Option<Vec<Tensor<3>>> = match (&sums, aggregate) {
                (Some(sums), true) => Some(sums.iter().map(|s| s.clone() / i as f64).collect()),
                _ => None,
            };
            tokens = block.forward(
                tokens,
                &contexts,
                mode,
                means.as_deref(),
                ctx.sampling.map(|s| (s, i)),
            )?;
            if aggregate {
                accumulate(&mut sums, tokens.clone());
            }
            if let Some(features) = ctx.features {
                features.push(&tokens);
            }
        }
        Ok(self.head(tokens, head))
    }

    /// Patch, time and conditioning embeddings of every clip.
    pub(crate) fn embed(&self, clips: ClipInputs) -> Embedded {
        let c = &self.config;
        let d = c.d_model;
        let mut tokens = Vec::with_capacity(clips.x.len());
        let mut contexts = Vec::with_capacity(clips.x.len());
        let mut head = Vec::with_capacity(clips.x.len());
        for (((xi, si), (ci, &offset)), ei) in clips
            .x
            .into_iter()
            .zip(clips.sigma)
            .zip(clips.cond.into_iter().zip(&clips.frame_offsets))
            .zip(clips.estimates)
        {
            let [b, _, t, h, w] = xi.dims();
            let grid = [t / c.patch[0], h / c.patch[1], w / c.patch[2]];
            let rope = Rope3d::new(c.head_dim(), grid, offset, c.rope_theta, &xi.device());
            // A clean-video head's output becomes a velocity against its input.
            let input = match c.prediction {
                Prediction::Velocity => None,
                Prediction::Clean => Some((xi.clone(), si.clone())),
            };
            let patches = match c.self_condition {
                true => {
                    let estimate = ei.unwrap_or_else(|| xi.zeros_like());
                    Tensor::cat(vec![xi, estimate], 1)
                }
                false => xi,
            };
            tokens.push(self.patch_embed.forward(patchify(patches, c.patch)));
            let mut t_emb = self
                .time_out
                .forward(silu(self.time_in.forward(time_features(si))));
            if let Some(pool) = &self.cond_pool {
                t_emb = t_emb + pool.forward(ci.clone().mean_dim(1).reshape([b, c.cond_dim]));
            }
            let time = self
                .time_proj
                .forward(silu(t_emb.clone()))
                .reshape([b, 6, d]);
            head.push(HeadInput {
                modulation: self.head_time.forward(silu(t_emb)).reshape([b, 2, d]),
                grid,
                input,
            });
            let cond = self.cond_out.forward(quick_gelu(self.cond_in.forward(ci)));
            contexts.push(ClipContext {
                time,
                cond,
                rope,
                grid: TokenGrid::new(grid[0], grid[1], grid[2]),
            });
        }
        Embedded {
            tokens,
            contexts,
            head,
        }
    }

    /// The output head: the last block's tokens of every clip to its velocity.
    pub(crate) fn head(&self, tokens: Vec<Tensor<3>>, head: Vec<HeadInput>) -> Vec<Tensor<5>> {
        let c = &self.config;
        tokens
            .into_iter()
            .zip(head)
            .map(|(x, clip)| {
                let m = clip.modulation;
                let video = unpatchify(
                    self.head.forward(modulate(
                        plain_norm(x),
                        m.clone().narrow(1, 0, 1),
                        m.narrow(1, 1, 1),
                    )),
                    c.channels,
                    c.patch,
                    clip.grid,
                );
                let video = match &self.head_conv {
                    Some(conv) => per_frame(conv, video),
                    None => video,
                };
                match clip.input {
                    Some((x, sigma)) => velocity_from_clean(x, video, sigma),
                    None => video,
                }
            })
            .collect()
    }

    /// The DiT blocks.
    pub fn blocks(&self) -> &[DitBlock] {
        &self.blocks
    }

    /// Replaces block `i` (the optimiser merges its shards' updates).
    pub(crate) fn replace_block(&mut self, i: usize, block: DitBlock) {
        self.blocks[i] = block;
    }
}

impl DsvHost for VideoDit {
    fn dsv_layers(&self) -> Vec<&DsvAttention> {
        self.blocks
            .iter()
            .filter_map(|b| b.self_attention().dsv())
            .collect()
    }

    fn dsv_layers_mut(&mut self) -> Vec<&mut DsvAttention> {
        self.blocks
            .iter_mut()
            .filter_map(|b| b.self_attention_mut().dsv_mut())
            .collect()
    }
}
