//! Long videos by clip parallelism: a model trained on short clips generates a video many
//! clips long, one or more clips per rank, with dual-scope attention joining the clips.

use burn::tensor::Tensor;
use burn_ctx_parallel::{ClipLayout, Communicator, DualScopeConfig};
use burn_sparse_attn::SparseAttnError;

use super::{SamplerConfig, sample_euler_clips_with_state};
use crate::VideoDit;
use crate::data::SplitMix;
use crate::media::Frames;
use crate::sample::online_sparse::OnlineLayerStats;

/// Noise of clip `clip` of a video seeded `seed`: its own stream, so a clip's noise does not
/// depend on how many clips come before it or which rank draws it.
pub fn clip_noise(
    seed: u64,
    clip: usize,
    shape: [usize; 5],
    device: &burn::tensor::Device,
) -> Tensor<5> {
    SplitMix(seed ^ (clip as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .normal_tensor(shape, device)
}

/// Generates one video of `layout.total_frames()` frames of `height × width` with `model`
/// (no autodiff), every rank of `comm` sampling its own clips ([`ClipLayout::clips_of`]):
/// clip `c` starts from its own noise and follows its own conditioning `cond[c]`
/// (`[1, M, cond_dim]`; a prompt may change over time), with the null conditioning
/// `uncond[c]` for guidance; every rank passes the lists for all clips and uses its own.
/// Self-attention is dual-scope with `scope`. Returns the video on rank 0 (`None` on the
/// others), gathered there once at the end.
#[allow(clippy::too_many_arguments)]
pub fn generate_long(
    model: &VideoDit,
    comm: &Communicator,
    layout: &ClipLayout,
    [height, width]: [usize; 2],
    cond: &[Tensor<3>],
    uncond: &[Tensor<3>],
    sampler: SamplerConfig,
    scope: &DualScopeConfig,
    seed: u64,
) -> Result<Option<Frames>, SparseAttnError> {
    generate_long_with_stats(
        model,
        comm,
        layout,
        [height, width],
        cond,
        uncond,
        sampler,
        scope,
        seed,
    )
    .map(|(video, _)| video)
}

/// [`generate_long`] that also returns what online sparse attention did in each block on
/// this rank's clips (empty when it is off).
#[allow(clippy::too_many_arguments)]
pub fn generate_long_with_stats(
    model: &VideoDit,
    comm: &Communicator,
    layout: &ClipLayout,
    [height, width]: [usize; 2],
    cond: &[Tensor<3>],
    uncond: &[Tensor<3>],
    sampler: SamplerConfig,
    scope: &DualScopeConfig,
    seed: u64,
) -> Result<(Option<Frames>, Vec<OnlineLayerStats>), SparseAttnError> {
    const F: &str = "generate_long";
    let clips = layout.clips();
    SparseAttnError::check(
        cond.len() == clips && uncond.len() == clips,
        F,
        "cond",
        format!("one conditioning and one null conditioning per clip ({clips})"),
        format!("{}, {}", cond.len(), uncond.len()),
    )?;
    let mine = layout.clips_of_rank(F, comm)?;
    let channels = model.config().channels;
    let device = comm.device();
    let noise = mine
        .clone()
        .map(|c| {
            clip_noise(
                seed,
                c,
                [1, channels, layout.frames(c), height, width],
                device,
            )
        })
        .collect();
    let local = |all: &[Tensor<3>]| {
        mine.clone()
            .map(|c| all[c].clone().to_device(device))
            .collect()
    };
    let state = sampler.sampling_state(model);
    let parts = sample_euler_clips_with_state(
        model,
        comm,
        layout,
        noise,
        local(cond),
        local(uncond),
        sampler,
        scope,
        &state,
    )?;
    let stats = state
        .online()
        .map(|online| online.layer_stats())
        .unwrap_or_default();
    let Some(video) = comm.gather_to(Tensor::cat(parts, 2), 0, 2)? else {
        return Ok((None, stats));
    };
    let pixels: Vec<f32> = video
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 video");
    let video = Frames::from_chw(&pixels, layout.total_frames(), height, width);
    Ok((Some(video), stats))
}
