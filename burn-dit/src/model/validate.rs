//! The argument checks of [`VideoDit`]'s forward passes: each names the function, the
//! argument and the shape it expects.

use burn::tensor::Tensor;
use burn_ctx_parallel::ClipLayout;
use burn_sparse_attn::SparseAttnError;

use super::VideoDit;
use super::input::{Conditioning, VideoDitInput};
use crate::DitError;

/// A whole video's (or one shard's) checked input: `x`, `sigma`, `cond`, `estimate`.
pub(crate) type VideoParts = (Tensor<5>, Tensor<1>, Tensor<3>, Option<Tensor<5>>);

impl VideoDit {
    /// The input of one whole video or one shard of it: conditioning for the whole video.
    pub(crate) fn check_video(
        &self,
        function: &'static str,
        input: VideoDitInput,
    ) -> Result<VideoParts, DitError> {
        let VideoDitInput {
            x,
            sigma,
            cond,
            estimate,
        } = input;
        let cond = match cond {
            Conditioning::Video(cond) => cond,
            Conditioning::PerClip(cond) => {
                return Err(SparseAttnError {
                    function,
                    argument: "input.cond",
                    expected: "`Conditioning::Video` (one conditioning per clip needs \
                               `Layout::Clips`)"
                        .into(),
                    actual: format!("`Conditioning::PerClip` of {} clips", cond.len()),
                }
                .into());
            }
        };
        let b = x.dims()[0];
        self.check_sigma(function, &sigma, b)?;
        self.check_frames(function, &x, x.dims())?;
        self.check_cond(function, &cond, b)?;
        self.check_estimate(function, estimate.as_ref(), &x)?;
        Ok((x, sigma, cond, estimate))
    }

    /// The input of this rank's clips `frames` (in video frames) of `layout`, with the
    /// host noise levels `sigmas`.
    pub(crate) fn check_clips(
        &self,
        function: &'static str,
        input: &VideoDitInput,
        layout: &ClipLayout,
        frames: &[usize],
        sigmas: &[f64],
    ) -> Result<(), DitError> {
        let pt = self.config.patch[0];
        SparseAttnError::check(
            (0..layout.clips()).all(|i| layout.frames(i) % pt == 0),
            function,
            "layout",
            format!("clips of a multiple of the frame patch ({pt}) frames"),
            format!(
                "{:?}",
                (0..layout.clips())
                    .map(|i| layout.frames(i))
                    .collect::<Vec<_>>()
            ),
        )?;
        let [b, ch, _, h, w] = input.x.dims();
        let t = frames.iter().sum();
        self.check_frames(function, &input.x, [b, ch, t, h, w])?;
        self.check_sigma(function, &input.sigma, b)?;
        SparseAttnError::check(
            sigmas.len() == b,
            function,
            "sigmas",
            format!("{b} noise levels (the batch)"),
            sigmas.len(),
        )?;
        match &input.cond {
            Conditioning::Video(cond) => self.check_cond(function, cond, b)?,
            Conditioning::PerClip(cond) => {
                SparseAttnError::check(
                    cond.len() == frames.len(),
                    function,
                    "input.cond",
                    format!("one conditioning per clip of this rank ({})", frames.len()),
                    cond.len(),
                )?;
                for cond in cond {
                    self.check_cond(function, cond, b)?;
                }
            }
        }
        Ok(self.check_estimate(function, input.estimate.as_ref(), &input.x)?)
    }

    /// `x` is `want` (`[B, C, T, H, W]`) with the model's channels and whole patches.
    fn check_frames(
        &self,
        function: &'static str,
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
            "x",
            format!(
                "[B, {}, T, H, W] with T, H, W multiples of the patch {p:?} (here [{b}, {}, {t}, {h}, {w}])",
                c.channels, c.channels
            ),
            format!("{:?}", x.dims()),
        )
    }

    fn check_sigma(
        &self,
        function: &'static str,
        sigma: &Tensor<1>,
        b: usize,
    ) -> Result<(), SparseAttnError> {
        SparseAttnError::check(
            sigma.dims() == [b],
            function,
            "sigma",
            format!("[{b}]"),
            format!("{:?}", sigma.dims()),
        )
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
}
