//! Placing a forward pass's frames: the clips the network runs on, and how their
//! self-attention spans clips and ranks, for each [`Layout`].

use std::cell::OnceCell;

use burn::tensor::{Tensor, TensorData};
use burn_ctx_parallel::{ClipLayout, Communicator, DualScopePlan};
use burn_sparse_attn::SparseAttnError;

use super::VideoDit;
use super::input::{ClipGroup, Conditioning, Layout, VideoDitInput};
use super::self_attention::Span;
use crate::DitError;
use crate::config::AttentionKind;

/// What the network runs on, per clip: the video, its noise levels, conditioning, the
/// previous clean estimate (self-conditioning) and its first token frame in the video.
pub(crate) struct ClipInputs {
    pub x: Vec<Tensor<5>>,
    pub sigma: Vec<Tensor<1>>,
    pub cond: Vec<Tensor<3>>,
    pub estimates: Vec<Option<Tensor<5>>>,
    pub frame_offsets: Vec<usize>,
}

impl ClipInputs {
    /// A whole video (or shard) as one clip from token frame 0.
    fn one(x: Tensor<5>, sigma: Tensor<1>, cond: Tensor<3>, estimate: Option<Tensor<5>>) -> Self {
        Self {
            x: vec![x],
            sigma: vec![sigma],
            cond: vec![cond],
            estimates: vec![estimate],
            frame_offsets: vec![0],
        }
    }
}

/// `video`'s frames cut into clips of `frames` frames.
pub(crate) fn split_frames(video: Tensor<5>, frames: &[usize]) -> Vec<Tensor<5>> {
    if frames.len() == 1 {
        return vec![video];
    }
    let mut start = 0;
    frames
        .iter()
        .map(|&n| {
            start += n;
            video.clone().narrow(2, start - n, n)
        })
        .collect()
}

/// The per-clip outputs of a placed pass as one tensor of this rank's frames.
pub(crate) fn join_clips(mut clips: Vec<Tensor<5>>) -> Tensor<5> {
    match clips.len() {
        1 => clips.remove(0),
        _ => Tensor::cat(clips, 2),
    }
}

impl VideoDit {
    /// Checks `input` against `layout` and cuts it into the clips the network runs on, with
    /// how their self-attention spans them. A whole video of a dual-scope model is one clip
    /// on the one-rank group made in `alone`.
    pub(crate) fn place<'a>(
        &self,
        function: &'static str,
        input: VideoDitInput,
        layout: Layout<'a>,
        alone: &'a OnceCell<Communicator>,
    ) -> Result<(ClipInputs, Span<'a>), DitError> {
        match layout {
            Layout::Whole => {
                let (x, sigma, cond, estimate) = self.check_video(function, input)?;
                match &self.config.attention {
                    AttentionKind::DualScope(scope) => {
                        // The scope balance needs σ on the host.
                        let sigmas: Vec<f64> = sigma
                            .clone()
                            .into_data()
                            .convert::<f64>()
                            .try_to_vec()
                            .expect("f64 noise levels");
                        let comm = alone.get_or_init(|| Communicator::single(x.device()));
                        let layout = ClipLayout::new(vec![x.dims()[2]], 1)?;
                        let group = ClipGroup {
                            comm,
                            layout: &layout,
                            scope,
                        };
                        let input = VideoDitInput {
                            x,
                            sigma,
                            cond: Conditioning::Video(cond),
                            estimate,
                        };
                        self.place_clips(function, input, comm, group, &sigmas)
                    }
                    _ => Ok((ClipInputs::one(x, sigma, cond, estimate), Span::PerClip)),
                }
            }
            Layout::SequenceShard(comm) => {
                let (x, sigma, cond, estimate) = self.check_video(function, input)?;
                SparseAttnError::check(
                    !matches!(self.config.attention, AttentionKind::DualScope(_)),
                    function,
                    "self",
                    "a model with dense or DSV attention (dual-scope models span ranks \
                     through `Layout::Clips`)",
                    "dual-scope attention",
                )?;
                let frames = comm.gather_sizes(x.dims()[2] / self.config.patch[0])?;
                let layout = ClipLayout::new(frames, comm.world())?;
                let mut clip = ClipInputs::one(x, sigma, cond, estimate);
                clip.frame_offsets = vec![layout.frame_offset(comm.rank())];
                Ok((clip, Span::Sequence { comm, layout }))
            }
            Layout::Clips { group, sigmas } => {
                self.place_clips(function, input, group.comm, group, sigmas)
            }
        }
    }

    /// Checks the input of [`Layout::Clips`], cuts it into this rank's clips and plans the
    /// dual-scope attention over `comm` (the group's, which the plan keeps).
    fn place_clips<'a>(
        &self,
        function: &'static str,
        input: VideoDitInput,
        comm: &'a Communicator,
        group: ClipGroup,
        sigmas: &[f64],
    ) -> Result<(ClipInputs, Span<'a>), DitError> {
        let ClipGroup { layout, scope, .. } = group;
        let c = &self.config;
        let pt = c.patch[0];
        let mine = layout.clips_of_rank(function, comm)?;
        let frames: Vec<usize> = mine.clone().map(|i| layout.frames(i)).collect();
        self.check_clips(function, &input, layout, &frames, sigmas)?;
        let VideoDitInput {
            x, cond, estimate, ..
        } = input;
        let b = x.dims()[0];
        let cond = match cond {
            Conditioning::Video(cond) => vec![cond; frames.len()],
            Conditioning::PerClip(cond) => cond,
        };
        let estimates = match estimate {
            Some(e) => split_frames(e, &frames).into_iter().map(Some).collect(),
            None => vec![None; frames.len()],
        };
        let x = split_frames(x, &frames);
        let tokens = ClipLayout::new(
            (0..layout.clips()).map(|i| layout.frames(i) / pt).collect(),
            layout.world(),
        )?;
        let [_, _, _, h, w] = x[0].dims();
        let plan = DualScopePlan::new(
            comm,
            &tokens,
            (h / c.patch[1]) * (w / c.patch[2]),
            scope,
            sigmas,
        )?;
        // The noise levels as the network reads them, from the host values the plan used.
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
        Ok((
            ClipInputs {
                x,
                sigma,
                cond,
                estimates,
                frame_offsets,
            },
            Span::DualScope(plan),
        ))
    }
}
