//! The blocks' self-attention: projections, 3D RoPE and the attention itself, dense, DSV,
//! dual-scope or sequence-parallel, per the span of the forward pass.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{Device, Tensor, module::attention, ops::AttentionModuleOptions};
use burn_ctx_parallel::{ClipLayout, Communicator, DualScopePlan, ring_attention};
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::{DsvAttention, DsvAttentionConfig, DsvTape};

use super::block::ClipContext;
use crate::DitError;
use crate::config::{AttentionKind, VideoDitConfig};
use crate::sample::online_sparse::OnlineSparse;

/// How the self-attention of one forward pass spans its clips.
pub(crate) enum Span<'a> {
    /// Every clip alone, with the block's own attention (dense or DSV).
    PerClip,
    /// Dual-scope attention across the clips of a plan.
    DualScope(DualScopePlan<'a>),
    /// One video split along time over the ranks of `comm`, this rank's shard its one clip
    /// of `layout`: the block's own attention over the whole video (a ring for dense, DSV's
    /// sharded layer).
    Sequence {
        comm: &'a Communicator,
        layout: ClipLayout,
    },
}

/// How the self-attention of one forward pass runs: its span, and the tape DSV layers
/// record their training observations on (per clip and sequence-parallel).
#[derive(Clone, Copy)]
pub(crate) struct AttentionMode<'a> {
    pub span: &'a Span<'a>,
    pub tape: Option<&'a DsvTape>,
}

impl<'a> AttentionMode<'a> {
    /// The same attention, recording nothing (a forward whose observations do not count).
    pub(crate) fn without_tape(self) -> Self {
        Self { tape: None, ..self }
    }

    /// The ranks and clips a video spans, where it spans more than one clip.
    pub(crate) fn clip_group(&self) -> Option<(&'a Communicator, &'a ClipLayout)> {
        match self.span {
            Span::PerClip => None,
            Span::DualScope(plan) => Some((plan.comm(), plan.layout())),
            Span::Sequence { comm, layout } => Some((comm, layout)),
        }
    }
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
    pub(crate) fn new(config: &VideoDitConfig, device: &Device) -> Self {
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
    pub(crate) fn forward(
        &self,
        xs: Vec<Tensor<3>>,
        clips: &[ClipContext],
        mode: AttentionMode,
        online: Option<(&OnlineSparse, usize)>,
    ) -> Result<Vec<Tensor<3>>, DitError> {
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
        if matches!(mode.span, Span::Sequence { .. }) {
            SparseAttnError::check(
                online.is_none(),
                "SelfAttention::forward",
                "online",
                "None with sequence-parallel attention (online sparse attention runs per clip)",
                "online sparse attention",
            )?;
        }
        let outs = match mode.span {
            Span::DualScope(plan) => match online {
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
            Span::Sequence { comm, .. } => {
                // The sequence entry hands each rank its shard as one clip.
                let clip = clips.first().expect("a shard");
                let x = xs.into_iter().next().expect("a shard");
                let first = |t: Vec<Tensor<4>>| t.into_iter().next().expect("a shard");
                let (q, k, v) = (first(q), first(k), first(v));
                vec![match &self.dsv {
                    Some(dsv) => dsv.forward_sharded(x, q, k, v, clip.grid, mode.tape, *comm)?,
                    None => ring_attention(comm, q, k, v, None)?,
                }]
            }
            Span::PerClip => xs
                .into_iter()
                .zip(q.into_iter().zip(k).zip(v))
                .zip(clips)
                .enumerate()
                .map(
                    |(i, ((x, ((q, k), v)), clip))| match (&self.dsv, mode.tape, online) {
                        (_, _, Some((online, block))) => {
                            online.attend(block, i, q, k, v, clip.grid)
                        }
                        (Some(dsv), Some(tape), None) => {
                            Ok(dsv.forward_training(x, q, k, v, clip.grid, tape)?)
                        }
                        (Some(dsv), None, None) => Ok(dsv.forward(x, q, k, v, clip.grid)?),
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
