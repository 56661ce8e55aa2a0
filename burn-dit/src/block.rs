//! One DiT block: adaLN-Zero modulated self-attention and MLP, plus cross-attention to the
//! conditioning tokens.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d, RmsNorm, RmsNormConfig,
};
use burn::tensor::{
    Device, Tensor, activation::sigmoid, module::attention, ops::AttentionModuleOptions,
};
use burn_ctx_parallel::{ClipLayout, Communicator, DualScopePlan, clip_halos, ring_attention};
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::{DsvAttention, DsvAttentionConfig, DsvTape, TokenGrid};

use crate::config::{AttentionKind, VideoDitConfig};
use crate::online_sparse::OnlineSparse;
use crate::rope::Rope3d;
use crate::sampling_state::SamplingState;

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

/// How the self-attention of one forward pass runs over its clips.
pub(crate) enum AttentionMode<'a> {
    /// Every clip alone, with the block's own attention (dense or DSV); a DSV layer records
    /// its training observations on the tape when there is one.
    PerClip(Option<&'a DsvTape>),
    /// Dual-scope attention across the clips of a plan.
    DualScope(&'a DualScopePlan<'a>),
    /// One video split along time over the ranks of `comm`, this rank's shard its one clip
    /// of `layout`: the block's own attention over the whole video (a ring for dense, DSV's
    /// sharded layer), the layer recording on `tape` when there is one.
    Sequence {
        comm: &'a Communicator,
        layout: &'a ClipLayout,
        tape: Option<&'a DsvTape>,
    },
}

impl<'a> AttentionMode<'a> {
    /// The same attention, recording nothing (a forward whose observations do not count).
    pub(crate) fn without_tape(&self) -> AttentionMode<'a> {
        match self {
            Self::PerClip(_) => Self::PerClip(None),
            Self::DualScope(plan) => Self::DualScope(plan),
            Self::Sequence { comm, layout, .. } => Self::Sequence {
                comm,
                layout,
                tape: None,
            },
        }
    }

    /// The ranks and clips a video spans, where it spans more than one clip.
    fn clip_group(&self) -> Option<(&'a Communicator, &'a ClipLayout)> {
        match self {
            Self::PerClip(_) => None,
            Self::DualScope(plan) => Some((plan.comm(), plan.layout())),
            Self::Sequence { comm, layout, .. } => Some((comm, layout)),
        }
    }
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

/// The block's self-attention: projections, 3D RoPE and dense, DSV or dual-scope attention.
#[derive(Module, Debug)]
pub struct SelfAttention {
    qkv: Linear,
    /// Per-head RMS norms of queries and keys (`qk_norm`).
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    out: Linear,
    dsv: Option<DsvAttention>,
    heads: usize,
}

impl SelfAttention {
    fn new(config: &VideoDitConfig, device: &Device) -> Self {
        let d = config.d_model;
        let dsv = match &config.attention {
            AttentionKind::Dense | AttentionKind::DualScope(_) => None,
            AttentionKind::Dsv(policy) => Some(
                DsvAttentionConfig::new(d, config.heads, config.head_dim(), policy.clone())
                    .init(device),
            ),
        };
        let norm = || {
            config
                .qk_norm
                .then(|| RmsNormConfig::new(config.head_dim()).init(device))
        };
        Self {
            qkv: LinearConfig::new(d, 3 * d).init(device),
            q_norm: norm(),
            k_norm: norm(),
            out: LinearConfig::new(d, d).init(device),
            dsv,
            heads: config.heads,
        }
    }

    /// `xs`: one `[B, S_c, d]` per clip, attended together when the mode spans clips;
    /// `online`: online sparse attention and this block's index in it, in place of the
    /// block's own attention.
    fn forward(
        &self,
        xs: Vec<Tensor<3>>,
        clips: &[ClipContext],
        mode: &AttentionMode,
        online: Option<(&OnlineSparse, usize)>,
    ) -> Result<Vec<Tensor<3>>, SparseAttnError> {
        let dims: Vec<[usize; 3]> = xs.iter().map(|x| x.dims()).collect();
        let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for (x, clip) in xs.iter().zip(clips) {
            let [b, s, d] = x.dims();
            let qkv = self
                .qkv
                .forward(x.clone())
                .reshape([b, s, 3, self.heads, d / self.heads])
                .permute([2, 0, 3, 1, 4]);
            let part = |i: usize| {
                qkv.clone()
                    .narrow(0, i, 1)
                    .reshape([b, self.heads, s, d / self.heads])
            };
            let normed = |x: Tensor<4>, norm: &Option<RmsNorm>| match norm {
                Some(norm) => norm.forward(x),
                None => x,
            };
            q.push(clip.rope.apply(normed(part(0), &self.q_norm)));
            k.push(clip.rope.apply(normed(part(1), &self.k_norm)));
            v.push(part(2));
        }
        if matches!(mode, AttentionMode::Sequence { .. }) {
            SparseAttnError::check(
                online.is_none(),
                "SelfAttention::forward",
                "online",
                "None with sequence-parallel attention (online sparse attention runs per clip)",
                "online sparse attention",
            )?;
        }
        let outs = match mode {
            AttentionMode::DualScope(plan) => match online {
                Some((online, block)) => {
                    // One noise level per step: the first sample's scope phase is the batch's.
                    let phase = plan.scope_biases()[0];
                    plan.attend_with(q, k, v, |inputs| {
                        let grid = clips[inputs.clip].grid;
                        online.attend_dual_scope(block, inputs, grid, phase)
                    })?
                }
                None => plan.attend(q, k, v)?,
            },
            AttentionMode::Sequence { comm, tape, .. } => {
                // The sequence entry hands each rank its shard as one clip.
                let clip = clips.first().expect("a shard");
                let x = xs.into_iter().next().expect("a shard");
                let first = |t: Vec<Tensor<4>>| t.into_iter().next().expect("a shard");
                let (q, k, v) = (first(q), first(k), first(v));
                vec![match &self.dsv {
                    Some(dsv) => dsv.forward_sharded(x, q, k, v, clip.grid, *tape, *comm)?,
                    None => ring_attention(comm, q, k, v, None)?,
                }]
            }
            AttentionMode::PerClip(tape) => xs
                .into_iter()
                .zip(q.into_iter().zip(k).zip(v))
                .zip(clips)
                .enumerate()
                .map(
                    |(i, ((x, ((q, k), v)), clip))| match (&self.dsv, tape, online) {
                        (_, _, Some((online, block))) => {
                            online.attend(block, i, q, k, v, clip.grid)
                        }
                        (Some(dsv), Some(tape), None) => {
                            dsv.forward_training(x, q, k, v, clip.grid, tape)
                        }
                        (Some(dsv), None, None) => dsv.forward(x, q, k, v, clip.grid),
                        (None, _, None) => Ok(attention(
                            q,
                            k,
                            v,
                            None,
                            None,
                            AttentionModuleOptions::default(),
                        )),
                    },
                )
                .collect::<Result<_, _>>()?,
        };
        Ok(outs
            .into_iter()
            .zip(dims)
            .map(|(o, [b, s, d])| self.out.forward(o.swap_dims(1, 2).reshape([b, s, d])))
            .collect())
    }

    /// The DSV layer, when this block uses DSV.
    pub fn dsv(&self) -> Option<&DsvAttention> {
        self.dsv.as_ref()
    }

    pub(crate) fn dsv_mut(&mut self) -> Option<&mut DsvAttention> {
        self.dsv.as_mut()
    }
}

/// Cross-attention from video tokens to conditioning tokens.
#[derive(Module, Debug)]
pub struct CrossAttention {
    norm: LayerNorm,
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: usize,
}

impl CrossAttention {
    fn new(config: &VideoDitConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            norm: LayerNormConfig::new(d).init(device),
            q: LinearConfig::new(d, d).init(device),
            kv: LinearConfig::new(d, 2 * d).init(device),
            out: LinearConfig::new(d, d).init(device),
            heads: config.heads,
        }
    }

    fn forward(&self, x: Tensor<3>, cond: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let m = cond.dims()[1];
        let dh = d / self.heads;
        let q = self
            .q
            .forward(self.norm.forward(x))
            .reshape([b, s, self.heads, dh])
            .swap_dims(1, 2);
        let kv = self
            .kv
            .forward(cond)
            .reshape([b, m, 2, self.heads, dh])
            .permute([2, 0, 3, 1, 4]);
        let k = kv.clone().narrow(0, 0, 1).reshape([b, self.heads, m, dh]);
        let v = kv.narrow(0, 1, 1).reshape([b, self.heads, m, dh]);
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.out.forward(out.swap_dims(1, 2).reshape([b, s, d]))
    }
}

/// Depthwise 3×3 convolution over each frame's token grid (see [`VideoDitConfig::mlp_conv`]).
#[derive(Module, Debug)]
pub struct FrameConv {
    conv: Conv2d,
}

impl FrameConv {
    fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([channels, channels], [3, 3])
                .with_groups(channels)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
        }
    }

    /// `x: [B, S, C]` with `S` tokens laid out frame-major on `grid`.
    fn forward(&self, x: Tensor<3>, grid: TokenGrid) -> Tensor<3> {
        let [b, s, c] = x.dims();
        let frames = x
            .reshape([b * grid.frames, grid.height, grid.width, c])
            .permute([0, 3, 1, 2]);
        self.conv
            .forward(frames)
            .permute([0, 2, 3, 1])
            .reshape([b, s, c])
    }
}

/// Depthwise 3-tap convolution across token frames (see [`VideoDitConfig::mlp_time_conv`]).
#[derive(Module, Debug)]
pub struct TimeConv {
    /// `[3, C]` taps for the previous, current and next frame.
    taps: Param<Tensor<2>>,
}

impl TimeConv {
    /// Starts as the identity, so the block starts as it would without it.
    fn new(channels: usize, device: &Device) -> Self {
        let identity = Tensor::<1>::from_floats([0.0, 1.0, 0.0], device)
            .reshape([3, 1])
            .repeat_dim(1, channels);
        Self {
            taps: Param::from_tensor(identity),
        }
    }

    /// `x: [B, S, C]` frame-major on `grid`; `before` / `after`: `[B, 1, S / frames, C]`, the
    /// neighbouring clips' edge frames, or zeros at the video's ends.
    fn forward(
        &self,
        x: Tensor<3>,
        grid: TokenGrid,
        before: Option<Tensor<4>>,
        after: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let [b, s, c] = x.dims();
        let (t, plane) = (grid.frames, s / grid.frames);
        let x = x.reshape([b, t, plane, c]);
        let device = x.device();
        let zero = || Tensor::<4>::zeros([b, 1, plane, c], &device);
        let padded = Tensor::cat(
            vec![before.unwrap_or_else(zero), x, after.unwrap_or_else(zero)],
            1,
        );
        let tap = |i: usize| self.taps.val().narrow(0, i, 1).reshape([1, 1, 1, c]);
        let out = padded.clone().narrow(1, 0, t) * tap(0)
            + padded.clone().narrow(1, 1, t) * tap(1)
            + padded.narrow(1, 2, t) * tap(2);
        out.reshape([b, s, c])
    }

    /// Every clip's frames, `xs[c]: [B, S_c, C]`; across clips it reads the neighbours' edge
    /// frames, so a video split over ranks convolves as it would whole.
    fn forward_clips(
        &self,
        xs: Vec<Tensor<3>>,
        clips: &[ClipContext],
        mode: &AttentionMode,
    ) -> Result<Vec<Tensor<3>>, SparseAttnError> {
        let halos = match mode.clip_group() {
            None => vec![(None, None); xs.len()],
            Some((comm, layout)) => {
                let framed: Vec<Tensor<4>> = xs
                    .iter()
                    .zip(clips)
                    .map(|(x, c)| {
                        let [b, s, d] = x.dims();
                        x.clone().reshape([b, c.grid.frames, s / c.grid.frames, d])
                    })
                    .collect();
                clip_halos(comm, layout, &framed, 1, 1)?
            }
        };
        Ok(xs
            .into_iter()
            .zip(clips)
            .zip(halos)
            .map(|((x, c), (before, after))| self.forward(x, c.grid, before, after))
            .collect())
    }
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
        mode: &AttentionMode,
        aggregates: Option<&[Tensor<3>]>,
        sampling: Option<(&SamplingState, usize)>,
    ) -> Result<Vec<Tensor<3>>, SparseAttnError> {
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
