//! The video DiT: patches in, 3D-RoPE blocks with adaLN-Zero and cross-attention, patches out.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Int, Tensor, TensorData, activation::silu};
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::{DsvAttention, DsvHost, DsvTape, TokenGrid};

use burn_ctx_parallel::{ClipLayout, Communicator, DualScopeConfig, DualScopePlan};

use crate::block::{AttentionMode, ClipContext, DitBlock, modulate, plain_norm, quick_gelu};
use crate::config::{AttentionKind, Prediction, VideoDitConfig};
use crate::flow::velocity_from_clean;
use crate::patch::{patchify, unpatchify};
use crate::rope::Rope3d;
use crate::sampling_state::SamplingState;

/// Width of the sinusoidal timestep features.
const TIME_FEATURES: usize = 256;

/// A linear layer whose weight and bias start at zero (adaLN-Zero and the output head).
fn zero_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::zeros([d_in, d_out], device)),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// What the network runs on, per clip: the video, its noise levels, conditioning, the
/// previous clean estimate (self-conditioning) and its first token frame in the video.
pub(crate) struct ClipInputs {
    pub x: Vec<Tensor<5>>,
    pub sigma: Vec<Tensor<1>>,
    pub cond: Vec<Tensor<3>>,
    pub estimates: Vec<Option<Tensor<5>>>,
    pub frame_offsets: Vec<usize>,
}

/// One whole video: the input of the single-video forwards.
pub(crate) struct Video {
    pub x: Tensor<5>,
    pub sigma: Tensor<1>,
    pub cond: Tensor<3>,
    pub estimate: Option<Tensor<5>>,
}

impl Video {
    /// The video as one clip starting at frame 0.
    fn into_clip(self) -> ClipInputs {
        ClipInputs {
            x: vec![self.x],
            sigma: vec![self.sigma],
            cond: vec![self.cond],
            estimates: vec![self.estimate],
            frame_offsets: vec![0],
        }
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

    /// Velocity prediction for noisy videos `x: [B, C, T, H, W]` at noise levels
    /// `sigma: [B]` given conditioning embeddings `cond: [B, M, cond_dim]`. A
    /// self-conditioning model ([`VideoDitConfig::self_condition`]) sees no estimate here.
    pub fn forward(
        &self,
        x: Tensor<5>,
        sigma: Tensor<1>,
        cond: Tensor<3>,
    ) -> Result<Tensor<5>, SparseAttnError> {
        self.forward_refining(x, sigma, cond, None)
    }

    /// [`VideoDit::forward`] with the model's previous clean-video estimate of `x`
    /// (`estimate: [B, C, T, H, W]`, without gradient) for a self-conditioning model; `None`
    /// is the first step. A model built without `self_condition` takes only `None`.
    pub fn forward_refining(
        &self,
        x: Tensor<5>,
        sigma: Tensor<1>,
        cond: Tensor<3>,
        estimate: Option<Tensor<5>>,
    ) -> Result<Tensor<5>, SparseAttnError> {
        self.forward_one(
            Video {
                x,
                sigma,
                cond,
                estimate,
            },
            None,
            None,
        )
    }

    /// The token features `[B, S, d_model]` of [`VideoDit::forward`]: after the patch
    /// embedding, then after each block (`depth + 1` in all), with each block's own
    /// attention (dense or DSV; a dual-scope model attends densely here). For probing what
    /// the blocks compute.
    pub fn block_features(
        &self,
        x: Tensor<5>,
        sigma: Tensor<1>,
        cond: Tensor<3>,
    ) -> Result<Vec<Tensor<3>>, SparseAttnError> {
        self.check_inputs("VideoDit::block_features", &x, &sigma, &cond)?;
        let mut features = Vec::new();
        self.run(
            Video {
                x,
                sigma,
                cond,
                estimate: None,
            }
            .into_clip(),
            &AttentionMode::PerClip(None),
            Some(&mut features),
            None,
        )?;
        Ok(features
            .into_iter()
            .map(|mut clip| clip.remove(0))
            .collect())
    }

    /// [`VideoDit::forward_refining`] for a training step: DSV layers build their predictor
    /// losses and profile on their schedule, recorded on `tape` for
    /// [`DsvTrainer`](burn_sparse_attn::dsv::DsvTrainer) (see [`crate::train::Trainer`]).
    pub fn forward_training(
        &self,
        x: Tensor<5>,
        sigma: Tensor<1>,
        cond: Tensor<3>,
        estimate: Option<Tensor<5>>,
        tape: &DsvTape,
    ) -> Result<Tensor<5>, SparseAttnError> {
        self.forward_one(
            Video {
                x,
                sigma,
                cond,
                estimate,
            },
            Some(tape),
            None,
        )
    }

    /// [`VideoDit::forward_refining`] for one step of a sampling run with the accelerators
    /// of `state` (FasterCache's attention reuse, online sparse attention): call
    /// [`SamplingState::begin_step`] before each step's call. A dual-scope model attends as
    /// in [`VideoDit::forward_clips`].
    pub fn forward_sampling(
        &self,
        x: Tensor<5>,
        sigma: Tensor<1>,
        cond: Tensor<3>,
        estimate: Option<Tensor<5>>,
        state: &SamplingState,
    ) -> Result<Tensor<5>, SparseAttnError> {
        self.forward_one(
            Video {
                x,
                sigma,
                cond,
                estimate,
            },
            None,
            Some(state),
        )
    }

    /// The network on one video, recording on `tape` or with the accelerators of a
    /// sampling run's `state`.
    fn forward_one(
        &self,
        video: Video,
        tape: Option<&DsvTape>,
        state: Option<&SamplingState>,
    ) -> Result<Tensor<5>, SparseAttnError> {
        self.on_one_video("VideoDit::forward_refining", video, tape, |clips, mode| {
            self.run(clips, mode, None, state)
        })
        .map(|mut v| v.remove(0))
    }

    /// [`VideoDit::forward_refining`] (or, with `tape`, [`VideoDit::forward_training`]) on
    /// this rank's shard of one video split along time over the ranks of `comm` (sequence
    /// parallelism), every rank calling it with its own frames `x: [B, C, T_r, H, W]`
    /// (shards contiguous in rank order, each a multiple of the frame patch; with DSV, every
    /// shard but the last a multiple of its query cube in time), the video's `sigma` and
    /// `cond`, and its shard of `estimate`. Self-attention spans the whole video (dense as a
    /// ring, DSV's layer sharded: [`DsvAttention::forward_sharded`]), positions are the
    /// video's and the temporal convolution reads the neighbouring shards' edge frames, so
    /// the shards' outputs are the whole video's velocity, cut alike. Each rank keeps its
    /// shard's activations only. With a tape, every rank passes one.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_sequence_shard(
        &self,
        comm: &Communicator,
        x: Tensor<5>,
        sigma: Tensor<1>,
        cond: Tensor<3>,
        estimate: Option<Tensor<5>>,
        tape: Option<&DsvTape>,
    ) -> Result<Tensor<5>, SparseAttnError> {
        self.forward_video(
            Some(comm),
            Video {
                x,
                sigma,
                cond,
                estimate,
            },
            tape,
        )
    }

    /// The velocity of one video, or with `comm` of this rank's shard of it
    /// ([`VideoDit::forward_sequence_shard`]), recording on `tape`.
    pub(crate) fn forward_video(
        &self,
        comm: Option<&Communicator>,
        video: Video,
        tape: Option<&DsvTape>,
    ) -> Result<Tensor<5>, SparseAttnError> {
        match comm {
            None => self.forward_one(video, tape, None),
            Some(comm) => self
                .on_sequence_shard(
                    "VideoDit::forward_sequence_shard",
                    comm,
                    video,
                    tape,
                    |clips, mode| self.run(clips, mode, None, None),
                )
                .map(|mut v| v.remove(0)),
        }
    }

    /// Runs `network` on this rank's shard of a video split along time over `comm`.
    pub(crate) fn on_sequence_shard<R>(
        &self,
        function: &'static str,
        comm: &Communicator,
        video: Video,
        tape: Option<&DsvTape>,
        network: impl FnOnce(ClipInputs, &AttentionMode) -> Result<R, SparseAttnError>,
    ) -> Result<R, SparseAttnError> {
        self.check_video(function, &video)?;
        SparseAttnError::check(
            !matches!(self.config.attention, AttentionKind::DualScope(_)),
            function,
            "self",
            "a model with dense or DSV attention (dual-scope models span ranks through \
             `forward_clips`)",
            "dual-scope attention",
        )?;
        let frames = comm.gather_sizes(video.x.dims()[2] / self.config.patch[0])?;
        let layout = ClipLayout::new(frames, comm.world())?;
        let mut clip = video.into_clip();
        clip.frame_offsets = vec![layout.frame_offset(comm.rank())];
        network(
            clip,
            &AttentionMode::Sequence {
                comm,
                layout: &layout,
                tape,
            },
        )
    }

    /// Runs `network` on one video with the model's own attention; a dual-scope model sees
    /// it as one clip on one rank.
    pub(crate) fn on_one_video<R>(
        &self,
        function: &'static str,
        video: Video,
        tape: Option<&DsvTape>,
        network: impl FnOnce(ClipInputs, &AttentionMode) -> Result<R, SparseAttnError>,
    ) -> Result<R, SparseAttnError> {
        self.check_video(function, &video)?;
        match &self.config.attention {
            AttentionKind::DualScope(scope) => {
                let Video {
                    x,
                    sigma,
                    cond,
                    estimate,
                } = video;
                // The whole video is one clip on one rank; the scope balance needs σ on the host.
                let sigmas: Vec<f64> = sigma
                    .into_data()
                    .convert::<f64>()
                    .try_to_vec()
                    .expect("f64 noise levels");
                let comm = Communicator::single(x.device());
                let layout = ClipLayout::new(vec![x.dims()[2]], 1)?;
                self.on_clips(
                    &comm,
                    &layout,
                    vec![x],
                    &sigmas,
                    vec![cond],
                    estimate.map(|e| vec![e]),
                    scope,
                    network,
                )
            }
            _ => network(video.into_clip(), &AttentionMode::PerClip(tape)),
        }
    }

    /// Velocity prediction for a long video cut into clips along time (`layout`, in video
    /// frames; every clip a multiple of the frame patch) and spread over the ranks of `comm`,
    /// called by every rank with its own clips ([`ClipLayout::clips_of`]): the `i`-th of
    /// them is `x[i]: [B, C, frames, H, W]` with conditioning `cond[i]: [B, M, cond_dim]` (a
    /// video may change prompt over time). Self-attention is dual-scope with `scope`
    /// whatever the model was trained with; positions are global frame indices. `sigmas`:
    /// the B noise levels, shared by all clips. `estimates`: each clip's previous
    /// clean-video estimate for a self-conditioning model, as in
    /// [`VideoDit::forward_refining`]. Returns one velocity per clip of this rank.
    ///
    /// The blocks' other ops (per-token norms, linear layers, cross-attention) see one token at
    /// a time and the output convolution one frame, so nothing else needs synchronising across
    /// clips.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_clips(
        &self,
        comm: &Communicator,
        layout: &ClipLayout,
        x: Vec<Tensor<5>>,
        sigmas: &[f64],
        cond: Vec<Tensor<3>>,
        estimates: Option<Vec<Tensor<5>>>,
        scope: &DualScopeConfig,
    ) -> Result<Vec<Tensor<5>>, SparseAttnError> {
        self.forward_clips_sampling(comm, layout, x, sigmas, cond, estimates, scope, None)
    }

    /// [`VideoDit::forward_clips`] for one step of a sampling run with FasterCache's
    /// attention reuse in `state`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_clips_sampling(
        &self,
        comm: &Communicator,
        layout: &ClipLayout,
        x: Vec<Tensor<5>>,
        sigmas: &[f64],
        cond: Vec<Tensor<3>>,
        estimates: Option<Vec<Tensor<5>>>,
        scope: &DualScopeConfig,
        state: Option<&SamplingState>,
    ) -> Result<Vec<Tensor<5>>, SparseAttnError> {
        self.on_clips(
            comm,
            layout,
            x,
            sigmas,
            cond,
            estimates,
            scope,
            |clips, mode| self.run(clips, mode, None, state),
        )
    }

    /// Checks [`VideoDit::forward_clips`]'s arguments, plans the dual-scope attention and
    /// runs `network` on this rank's clips.
    #[allow(clippy::too_many_arguments)]
    fn on_clips<R>(
        &self,
        comm: &Communicator,
        layout: &ClipLayout,
        x: Vec<Tensor<5>>,
        sigmas: &[f64],
        cond: Vec<Tensor<3>>,
        estimates: Option<Vec<Tensor<5>>>,
        scope: &DualScopeConfig,
        network: impl FnOnce(ClipInputs, &AttentionMode) -> Result<R, SparseAttnError>,
    ) -> Result<R, SparseAttnError> {
        const F: &str = "VideoDit::forward_clips";
        let c = &self.config;
        let pt = c.patch[0];
        let mine = layout.clips_of_rank(F, comm)?;
        let clips = mine.len();
        SparseAttnError::check(
            x.len() == clips,
            F,
            "x",
            format!("one video per clip of rank {} ({clips})", comm.rank()),
            x.len(),
        )?;
        SparseAttnError::check(
            cond.len() == clips,
            F,
            "cond",
            format!(
                "one conditioning per clip of rank {} ({clips})",
                comm.rank()
            ),
            cond.len(),
        )?;
        SparseAttnError::check(
            (0..layout.clips()).all(|i| layout.frames(i) % pt == 0),
            F,
            "layout",
            format!("clips of a multiple of the frame patch ({pt}) frames"),
            format!(
                "{:?}",
                (0..layout.clips())
                    .map(|i| layout.frames(i))
                    .collect::<Vec<_>>()
            ),
        )?;
        let [b, ch, _, h, w] = x[0].dims();
        SparseAttnError::check(
            sigmas.len() == b,
            F,
            "sigmas",
            format!("{b} noise levels (the batch)"),
            sigmas.len(),
        )?;
        for ((xi, ci), clip) in x.iter().zip(&cond).zip(mine.clone()) {
            self.check_clip(F, "x", xi, [b, ch, layout.frames(clip), h, w])?;
            self.check_cond(F, ci, b)?;
        }
        let estimates: Vec<Option<Tensor<5>>> = match estimates {
            Some(e) => {
                SparseAttnError::check(
                    e.len() == clips,
                    F,
                    "estimates",
                    format!("one estimate per clip ({clips})"),
                    e.len(),
                )?;
                e.into_iter().map(Some).collect()
            }
            None => vec![None; clips],
        };
        for (xi, ei) in x.iter().zip(&estimates) {
            self.check_estimate(F, ei.as_ref(), xi)?;
        }
        let tokens = ClipLayout::new(
            (0..layout.clips()).map(|i| layout.frames(i) / pt).collect(),
            layout.world(),
        )?;
        let plan = DualScopePlan::new(
            comm,
            &tokens,
            (h / c.patch[1]) * (w / c.patch[2]),
            scope,
            sigmas,
        )?;
        let sigma: Vec<Tensor<1>> = x
            .iter()
            .map(|xi| {
                Tensor::from_data(
                    TensorData::new(sigmas.iter().map(|&s| s as f32).collect(), [b]),
                    &xi.device(),
                )
            })
            .collect();
        let frame_offsets: Vec<usize> = mine.map(|i| tokens.frame_offset(i)).collect();
        network(
            ClipInputs {
                x,
                sigma,
                cond,
                estimates,
                frame_offsets,
            },
            &AttentionMode::DualScope(&plan),
        )
    }

    fn check_clip(
        &self,
        function: &'static str,
        argument: &'static str,
        x: &Tensor<5>,
        want: [usize; 5],
    ) -> Result<(), SparseAttnError> {
        let c = &self.config;
        let [b, _, t, h, w] = want;
        let p = c.patch;
        SparseAttnError::check(
            x.dims() == [b, c.channels, t, h, w]
                && b > 0
                && t > 0
                && h > 0
                && w > 0
                && t % p[0] == 0
                && h % p[1] == 0
                && w % p[2] == 0,
            function,
            argument,
            format!(
                "[B, {}, T, H, W] with T, H, W multiples of the patch {p:?} (here [{b}, {}, {t}, {h}, {w}])",
                c.channels, c.channels
            ),
            format!("{:?}", x.dims()),
        )
    }

    /// One whole video's (or one shard's) inputs.
    fn check_video(&self, function: &'static str, video: &Video) -> Result<(), SparseAttnError> {
        self.check_inputs(function, &video.x, &video.sigma, &video.cond)?;
        self.check_estimate(function, video.estimate.as_ref(), &video.x)
    }

    fn check_estimate(
        &self,
        function: &'static str,
        estimate: Option<&Tensor<5>>,
        x: &Tensor<5>,
    ) -> Result<(), SparseAttnError> {
        let Some(e) = estimate else { return Ok(()) };
        SparseAttnError::check(
            self.config.self_condition,
            function,
            "estimate",
            "None: the model was built without `self_condition`",
            format!("{:?}", e.dims()),
        )?;
        SparseAttnError::check(
            e.dims() == x.dims(),
            function,
            "estimate",
            format!("{:?} like x", x.dims()),
            format!("{:?}", e.dims()),
        )
    }

    /// A clip `x`, one noise level per sample and conditioning for each.
    fn check_inputs(
        &self,
        function: &'static str,
        x: &Tensor<5>,
        sigma: &Tensor<1>,
        cond: &Tensor<3>,
    ) -> Result<(), SparseAttnError> {
        let dims = x.dims();
        let b = dims[0];
        SparseAttnError::check(
            sigma.dims() == [b],
            function,
            "sigma",
            format!("[{b}]"),
            format!("{:?}", sigma.dims()),
        )?;
        self.check_clip(function, "x", x, dims)?;
        self.check_cond(function, cond, b)
    }

    fn check_cond(
        &self,
        function: &'static str,
        cond: &Tensor<3>,
        b: usize,
    ) -> Result<(), SparseAttnError> {
        let d = self.config.cond_dim;
        SparseAttnError::check(
            cond.dims()[0] == b && cond.dims()[2] == d && cond.dims()[1] > 0,
            function,
            "cond",
            format!("[{b}, M ≥ 1, {d}]"),
            format!("{:?}", cond.dims()),
        )
    }

    /// The network over `clips`; with `features`, the tokens after the embedding and after
    /// each block are pushed there; with `state`, blocks take a sampling run's accelerators.
    fn run(
        &self,
        clips: ClipInputs,
        mode: &AttentionMode,
        mut features: Option<&mut Vec<Vec<Tensor<3>>>>,
        state: Option<&SamplingState>,
    ) -> Result<Vec<Tensor<5>>, SparseAttnError> {
        let aggregate = self.config.feature_aggregation;
        let Embedded {
            mut tokens,
            contexts,
            head,
        } = self.embed(clips);
        if let Some(features) = features.as_deref_mut() {
            features.push(tokens.clone());
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
                state.map(|s| (s, i)),
            )?;
            if aggregate {
                accumulate(&mut sums, tokens.clone());
            }
            if let Some(features) = features.as_deref_mut() {
                features.push(tokens.clone());
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
