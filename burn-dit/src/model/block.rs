//! One DiT block: adaLN-Zero modulated self-attention and MLP, plus cross-attention to the
//! conditioning tokens.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, activation::sigmoid};
use burn_sparse_attn::dsv::TokenGrid;

use super::conv::{FrameConv, TimeConv};
use super::cross_attention::CrossAttention;
use super::rope::Rope3d;
use super::self_attention::{AttentionMode, SelfAttention};
use crate::DitError;
use crate::config::VideoDitConfig;
use crate::sample::SamplingState;

/// Layer norm without affine parameters (adaLN supplies scale and shift).
pub(crate) fn plain_norm(x: Tensor<3>) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2);
    centred / (var + 1e-6).sqrt()
}

/// GELU as `x·σ(1.702·x)`: one exponential per element, where the tanh form's cube and
/// tanh cost a fifth of a CPU training step.
pub(crate) fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * sigmoid(x * 1.702)
}

/// `x·(1 + scale) + shift` with per-sample `[B, 1, d]` modulation.
pub(crate) fn modulate(x: Tensor<3>, shift: Tensor<3>, scale: Tensor<3>) -> Tensor<3> {
    x * (scale + 1.0) + shift
}

/// What one clip's blocks share: the time projection, the conditioning, positions.
pub(crate) struct ClipContext {
    /// `[B, 6, d]` shared time projection.
    pub time: Tensor<3>,
    /// `[B, M, d]` conditioning tokens.
    pub cond: Tensor<3>,
    pub rope: Rope3d,
    pub grid: TokenGrid,
}

impl ClipContext {
    /// The context without autodiff, for a forward that keeps no graph.
    pub(crate) fn without_autodiff(&self) -> Self {
        Self {
            time: self.time.clone().without_autodiff(),
            cond: self.cond.clone().without_autodiff(),
            rope: self.rope.without_autodiff(),
            grid: self.grid,
        }
    }

    /// The context with its time projection and conditioning as fresh autodiff leaves that
    /// keep their gradients (one segment of a checkpointed backward).
    pub(crate) fn leaves(&self) -> Self {
        Self {
            time: leaf(&self.time),
            cond: leaf(&self.cond),
            rope: self.rope.without_autodiff(),
            grid: self.grid,
        }
    }
}

/// `x`'s values as a fresh autodiff leaf that keeps its gradient.
pub(crate) fn leaf<const D: usize>(x: &Tensor<D>) -> Tensor<D> {
    x.clone().without_autodiff().autodiff().require_grad()
}

/// A DiT block with adaLN-Zero: the shared time projection plus this block's learned
/// modulation give shift/scale/gate for attention and MLP; gates start at zero, so a fresh
/// block is the identity.
#[derive(Module, Debug)]
pub struct DitBlock {
    modulation: Param<Tensor<2>>,
    attn: SelfAttention,
    cross: CrossAttention,
    mlp_in: Linear,
    mlp_conv: Option<FrameConv>,
    mlp_time_conv: Option<TimeConv>,
    mlp_out: Linear,
    /// Per-channel gate of the preceding blocks' mean output on the attention input
    /// (`feature_aggregation`; zeros at init).
    aggregation_gate: Option<Param<Tensor<1>>>,
    /// Branches read the same input and share one residual (`parallel_block`).
    parallel: bool,
}

impl DitBlock {
    pub(crate) fn new(config: &VideoDitConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            modulation: Param::from_tensor(Tensor::zeros([6, d], device)),
            attn: SelfAttention::new(config, device),
            cross: CrossAttention::new(config, device),
            mlp_in: LinearConfig::new(d, config.mlp_ratio * d).init(device),
            mlp_conv: config.mlp_conv.then(|| FrameConv::new(d, device)),
            mlp_time_conv: config.mlp_time_conv.then(|| TimeConv::new(d, device)),
            mlp_out: LinearConfig::new(config.mlp_ratio * d, d).init(device),
            aggregation_gate: config
                .feature_aggregation
                .then(|| Param::from_tensor(Tensor::zeros([d], device))),
            parallel: config.parallel_block,
        }
    }

    /// `xs`: one `[B, S_c, d]` per clip, with that clip's context; `aggregates`: per clip, the
    /// mean output of the preceding blocks (`feature_aggregation`, from the second block on);
    /// `sampling`: the accelerators' state of a sampling run and this block's index in it.
    pub(crate) fn forward(
        &self,
        xs: Vec<Tensor<3>>,
        clips: &[ClipContext],
        mode: AttentionMode,
        aggregates: Option<&[Tensor<3>]>,
        sampling: Option<(&SamplingState, usize)>,
    ) -> Result<Vec<Tensor<3>>, DitError> {
        let mods: Vec<Vec<Tensor<3>>> = clips
            .iter()
            .map(|c| (c.time.clone() + self.modulation.val().unsqueeze::<3>()).chunk(6, 1))
            .collect();
        let attend = || {
            let h = xs
                .iter()
                .enumerate()
                .zip(&mods)
                .map(|((i, x), m)| {
                    let input = match (&self.aggregation_gate, aggregates) {
                        (Some(gate), Some(aggregates)) => {
                            let d = x.dims()[2];
                            x.clone() + aggregates[i].clone() * gate.val().reshape([1, 1, d])
                        }
                        _ => x.clone(),
                    };
                    modulate(plain_norm(input), m[0].clone(), m[1].clone())
                })
                .collect();
            let online = sampling.and_then(|(state, i)| state.online().map(|o| (o, i)));
            self.attn.forward(h, clips, mode, online)
        };
        let attended = match sampling.and_then(|(state, i)| state.reuse().map(|r| (r, i))) {
            Some((reuse, index)) => {
                let dims: Vec<[usize; 3]> = xs.iter().map(|x| x.dims()).collect();
                reuse.attention(index, &dims, attend)?
            }
            None => attend()?,
        };
        let (xs, hs): (Vec<Tensor<3>>, Vec<Tensor<3>>) = xs
            .into_iter()
            .zip(attended)
            .zip(mods.iter().zip(clips))
            .map(|((x, a), (m, clip))| {
                // Sequential: cross-attention and the MLP read the attention's output.
                // Parallel: every branch reads the block's input.
                let (x, branch_input) = if self.parallel {
                    let cross = self.cross.forward(x.clone(), clip.cond.clone());
                    (x.clone() + a * m[2].clone() + cross, x)
                } else {
                    let x = x + a * m[2].clone();
                    let x = x.clone() + self.cross.forward(x, clip.cond.clone());
                    (x.clone(), x)
                };
                let h = modulate(plain_norm(branch_input), m[3].clone(), m[4].clone());
                let h = match &self.mlp_conv {
                    Some(conv) => conv.forward(h, clip.grid),
                    None => h,
                };
                (x, h)
            })
            .unzip();
        let hs = match &self.mlp_time_conv {
            Some(conv) => conv.forward_clips(hs, clips, mode)?,
            None => hs,
        };
        Ok(xs
            .into_iter()
            .zip(hs)
            .zip(mods)
            .map(|((x, h), m)| {
                x + self.mlp_out.forward(quick_gelu(self.mlp_in.forward(h))) * m[5].clone()
            })
            .collect())
    }

    /// The block's self-attention.
    pub fn self_attention(&self) -> &SelfAttention {
        &self.attn
    }

    pub(crate) fn self_attention_mut(&mut self) -> &mut SelfAttention {
        &mut self.attn
    }
}
