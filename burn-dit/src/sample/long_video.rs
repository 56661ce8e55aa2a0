//! Long videos by clip parallelism: a model trained on short clips generates a video many
//! clips long, one or more clips per rank, with dual-scope attention joining the clips.

use burn::tensor::{Tensor, TensorData};
use burn_ctx_parallel::Communicator;
use burn_sparse_attn::SparseAttnError;

use super::{SamplerConfig, sample_euler_clips_with_state};
use crate::DitError;
use crate::data::SplitMix;
use crate::media::Frames;
use crate::sample::online_sparse::OnlineLayerStats;
use crate::{ClipGroup, VideoDit};

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
/// (no autodiff), every rank of the group sampling its own clips
/// ([`ClipLayout::clips_of`](burn_ctx_parallel::ClipLayout::clips_of)):
/// clip `c` starts from its own noise and follows its own conditioning `cond[c]`
/// (`[1, M, cond_dim]`; a prompt may change over time), with the null conditioning
/// `uncond[c]` for guidance; every rank passes the lists for all clips and uses its own.
/// Self-attention is dual-scope with the group's scope. Returns the video on rank 0 (`None` on the
/// others), gathered there once at the end.
pub fn generate_long(
    model: &VideoDit,
    group: ClipGroup,
    size: [usize; 2],
    cond: &[Tensor<3>],
    uncond: &[Tensor<3>],
    sampler: SamplerConfig,
    seed: u64,
) -> Result<Option<Frames>, DitError> {
    generate_long_with_stats(model, group, size, cond, uncond, sampler, seed)
        .map(|(video, _)| video)
}

/// [`generate_long`] that also returns what online sparse attention did in each block, over
/// every rank's clips (empty when it is off).
pub fn generate_long_with_stats(
    model: &VideoDit,
    group: ClipGroup,
    [height, width]: [usize; 2],
    cond: &[Tensor<3>],
    uncond: &[Tensor<3>],
    sampler: SamplerConfig,
    seed: u64,
) -> Result<(Option<Frames>, Vec<OnlineLayerStats>), DitError> {
    const F: &str = "generate_long";
    let ClipGroup { comm, layout, .. } = group;
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
        group,
        noise,
        local(cond),
        local(uncond),
        sampler,
        &state,
    )?;
    let stats = match state.online() {
        Some(online) => merged_over_ranks(comm, &online.layer_stats())?,
        None => Vec::new(),
    };
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

/// Numbers per block in [`merged_over_ranks`]'s exchange.
const STATS_FIELDS: usize = 6;

/// Each block's online sparse record summed over the ranks of `comm` (recall averaged over
/// the heads).
fn merged_over_ranks(
    comm: &Communicator,
    layers: &[OnlineLayerStats],
) -> Result<Vec<OnlineLayerStats>, DitError> {
    let mine: Vec<f32> = layers
        .iter()
        .flat_map(|l| {
            let recall = l.recall.iter().sum::<f64>() / l.recall.len().max(1) as f64;
            [
                l.dense as f64,
                l.searches as f64,
                l.sparse as f64,
                l.sparsity,
                l.seconds,
                recall,
            ]
            .map(|x| x as f32)
        })
        .collect();
    let row = Tensor::<2>::from_data(
        TensorData::new(mine, [1, layers.len() * STATS_FIELDS]),
        comm.device(),
    );
    let all: Vec<f32> = comm
        .all_gather(row, 0)?
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 stats");
    let mut merged = vec![OnlineLayerStats::default(); layers.len()];
    for rank in all.chunks_exact(layers.len() * STATS_FIELDS) {
        for (total, f) in merged.iter_mut().zip(rank.chunks_exact(STATS_FIELDS)) {
            let searches = f[1] as usize;
            total.merge(&OnlineLayerStats {
                dense: f[0] as usize,
                searches,
                sparse: f[2] as usize,
                sparsity: f[3] as f64,
                recall: if searches > 0 {
                    vec![f[5] as f64]
                } else {
                    Vec::new()
                },
                seconds: f[4] as f64,
            });
        }
    }
    Ok(merged)
}
