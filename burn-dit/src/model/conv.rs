//! The MLP's depthwise convolutions over token frames: within each frame and across frames.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};
use burn_ctx_parallel::clip_halos;
use burn_sparse_attn::dsv::TokenGrid;

use super::block::ClipContext;
use super::self_attention::AttentionMode;
use crate::DitError;

/// Depthwise 3×3 convolution over each frame's token grid (see [`VideoDitConfig::mlp_conv`]).
#[derive(Module, Debug)]
pub struct FrameConv {
    conv: Conv2d,
}

impl FrameConv {
    pub(crate) fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: Conv2dConfig::new([channels, channels], [3, 3])
                .with_groups(channels)
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
        }
    }

    /// `x: [B, S, C]` with `S` tokens laid out frame-major on `grid`.
    pub(crate) fn forward(&self, x: Tensor<3>, grid: TokenGrid) -> Tensor<3> {
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
    pub(crate) fn new(channels: usize, device: &Device) -> Self {
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
    pub(crate) fn forward_clips(
        &self,
        xs: Vec<Tensor<3>>,
        clips: &[ClipContext],
        mode: AttentionMode,
    ) -> Result<Vec<Tensor<3>>, DitError> {
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
