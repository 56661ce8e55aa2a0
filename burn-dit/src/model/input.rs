//! What one forward pass of [`VideoDit`](super::VideoDit) runs on and how: its input, where
//! the video lies (whole, a sequence shard, clips over ranks) and what the pass records.

use std::cell::RefCell;

use burn::tensor::Tensor;
use burn_ctx_parallel::{ClipLayout, Communicator, DualScopeConfig};
use burn_sparse_attn::dsv::DsvTape;

use crate::sample::SamplingState;

/// The input of [`VideoDit::forward`](super::VideoDit::forward).
#[derive(Clone, Debug)]
pub struct VideoDitInput {
    /// `[B, C, T, H, W]` noisy frames: the whole video, this rank's shard of it
    /// ([`Layout::SequenceShard`]) or this rank's clips one after another in time
    /// ([`Layout::Clips`]).
    pub x: Tensor<5>,
    /// `[B]` noise levels.
    pub sigma: Tensor<1>,
    /// Conditioning tokens.
    pub cond: Conditioning,
    /// The model's previous clean-video estimate of `x` (like `x`, without gradient) for a
    /// self-conditioning model ([`VideoDitConfig::self_condition`](crate::VideoDitConfig));
    /// `None` is the first step. A model built without self-conditioning takes only `None`.
    pub estimate: Option<Tensor<5>>,
}

impl VideoDitInput {
    /// Frames `x`, noise levels `sigma` and conditioning `cond`, without an estimate.
    pub fn new(x: Tensor<5>, sigma: Tensor<1>, cond: impl Into<Conditioning>) -> Self {
        Self {
            x,
            sigma,
            cond: cond.into(),
            estimate: None,
        }
    }

    /// The input with a self-conditioning estimate (or `None`, the first step).
    pub fn with_estimate(mut self, estimate: Option<Tensor<5>>) -> Self {
        self.estimate = estimate;
        self
    }
}

/// The conditioning tokens of a forward pass.
// One value per forward pass: boxing the tensor would save nothing worth an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Conditioning {
    /// `[B, M, cond_dim]` for all frames.
    Video(Tensor<3>),
    /// One `[B, M, cond_dim]` per clip of this rank ([`Layout::Clips`] only): a prompt may
    /// change over a long video.
    PerClip(Vec<Tensor<3>>),
}

impl From<Tensor<3>> for Conditioning {
    fn from(cond: Tensor<3>) -> Self {
        Self::Video(cond)
    }
}

/// Where the frames of a forward pass lie.
#[derive(Clone, Copy, Default)]
pub enum Layout<'a> {
    /// The whole video on this rank, attended with the model's own attention (a dual-scope
    /// model sees it as one clip).
    #[default]
    Whole,
    /// This rank's shard of one video split along time over the ranks of the communicator
    /// (sequence parallelism), every rank calling with its own frames: shards contiguous in
    /// rank order, each a multiple of the frame patch and, with DSV, every shard but the
    /// last a multiple of its query cube in time. Self-attention spans the whole video
    /// (dense as a ring, DSV's layer sharded), positions are the video's and the temporal
    /// convolution reads the neighbouring shards' edge frames, so the shards' outputs are
    /// the whole video's velocity, cut alike. Dense and DSV models only.
    SequenceShard(&'a Communicator),
    /// A long video cut into clips along time and spread over a group of ranks, every rank
    /// calling with its own clips ([`ClipLayout::clips_of`]), each a multiple of the frame
    /// patch. Self-attention is dual-scope whatever the model was trained with; positions
    /// are global frame indices. The blocks' other ops see one token (or one frame) at a
    /// time, so nothing else is synchronised across clips.
    Clips {
        /// The ranks, the clips and their attention.
        group: ClipGroup<'a>,
        /// The B noise levels of the input's `sigma` on the host, for the scope balance.
        sigmas: &'a [f64],
    },
}

/// A long video cut into clips over a group of ranks, joined by dual-scope attention.
#[derive(Clone, Copy)]
pub struct ClipGroup<'a> {
    /// The ranks.
    pub comm: &'a Communicator,
    /// The clips, in video frames, and the rank of each.
    pub layout: &'a ClipLayout,
    /// The dual-scope attention.
    pub scope: &'a DualScopeConfig,
}

/// How one forward pass runs: the layout of its frames and what it records.
#[derive(Clone, Copy, Default)]
pub struct ForwardContext<'a> {
    /// Where the frames lie.
    pub layout: Layout<'a>,
    /// DSV layers record their predictor losses and profile on their schedule here (a
    /// training step, see [`DsvTrainer`](burn_sparse_attn::dsv::DsvTrainer)).
    pub tape: Option<&'a DsvTape>,
    /// The training-free accelerators of a sampling run (FasterCache's attention reuse,
    /// online sparse attention); call [`SamplingState::begin_step`] before each step.
    pub sampling: Option<&'a SamplingState>,
    /// Receives the token features after the patch embedding and after each block.
    pub features: Option<&'a BlockFeatures>,
}

impl<'a> ForwardContext<'a> {
    /// The whole video on this rank, recording nothing.
    pub fn whole() -> Self {
        Self::default()
    }

    /// This rank's shard of a video split along time over `comm` ([`Layout::SequenceShard`]).
    pub fn sequence_shard(comm: &'a Communicator) -> Self {
        Self {
            layout: Layout::SequenceShard(comm),
            ..Self::default()
        }
    }

    /// This rank's clips of a long video ([`Layout::Clips`]) at the host noise levels
    /// `sigmas` of the input's `sigma`.
    pub fn clips(group: ClipGroup<'a>, sigmas: &'a [f64]) -> Self {
        Self {
            layout: Layout::Clips { group, sigmas },
            ..Self::default()
        }
    }

    /// The context recording DSV's training observations on `tape` (or nothing).
    pub fn with_tape(self, tape: Option<&'a DsvTape>) -> Self {
        Self { tape, ..self }
    }

    /// The context with a sampling run's accelerators.
    pub fn with_sampling(self, sampling: &'a SamplingState) -> Self {
        Self {
            sampling: Some(sampling),
            ..self
        }
    }

    /// The context recording the blocks' token features in `features`.
    pub fn with_features(self, features: &'a BlockFeatures) -> Self {
        Self {
            features: Some(features),
            ..self
        }
    }
}

/// The token features of a forward pass, `[B, S, d_model]` after the patch embedding and
/// after each block (`depth + 1` in all), the clips of this rank one after another in
/// tokens. For probing what the blocks compute.
#[derive(Default)]
pub struct BlockFeatures(RefCell<Vec<Tensor<3>>>);

impl BlockFeatures {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one level's tokens, one tensor per clip.
    pub(crate) fn push(&self, clips: &[Tensor<3>]) {
        let level = match clips {
            [one] => one.clone(),
            _ => Tensor::cat(clips.to_vec(), 1),
        };
        self.0.borrow_mut().push(level);
    }

    /// The features recorded so far, in order.
    pub fn into_levels(self) -> Vec<Tensor<3>> {
        self.0.into_inner()
    }
}
