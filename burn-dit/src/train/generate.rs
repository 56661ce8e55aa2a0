//! Sampling labelled clips from a model.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use std::sync::Mutex;

use super::batch_shares;
use crate::VideoDit;
use crate::data::{COND_TOKENS, ClipShape, SplitMix, colour_token, object_token};
use crate::media::Frames;
use crate::sample::online_sparse::OnlineLayerStats;
use crate::sample::{SamplerConfig, sample_euler_with_state};

/// Clip labels `(object, colour)` as conditioning ids `[B, COND_TOKENS]`.
pub fn label_ids(labels: &[(usize, usize)], device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = labels
        .iter()
        .flat_map(|&(s, c)| [object_token(s), colour_token(c)])
        .collect();
    Tensor::from_data(TensorData::new(ids, [labels.len(), COND_TOKENS]), device)
}

/// Clips sampled together: memory stays bounded however many labels are asked for.
pub const SAMPLE_CHUNK: usize = 16;

/// Samples one clip per `(object, colour)` label with `model` (no autodiff).
pub fn generate(
    model: &VideoDit,
    clip: ClipShape,
    labels: &[(usize, usize)],
    sampler: SamplerConfig,
    seed: u64,
) -> Vec<Frames> {
    generate_with_progress(model, clip, labels, sampler, seed, |_, _| {})
}

/// [`generate`], [`SAMPLE_CHUNK`] clips at a time, calling `progress(done, total)` after
/// each chunk. Each clip gets the noise it would get in one batch of all labels.
pub fn generate_with_progress(
    model: &VideoDit,
    clip: ClipShape,
    labels: &[(usize, usize)],
    sampler: SamplerConfig,
    seed: u64,
    progress: impl FnMut(usize, usize),
) -> Vec<Frames> {
    generate_with_stats(model, clip, labels, sampler, seed, progress).0
}

/// [`generate_with_progress`] that also returns what online sparse attention did in each
/// block, summed over the sampling runs (empty when it is off).
pub fn generate_with_stats(
    model: &VideoDit,
    clip: ClipShape,
    labels: &[(usize, usize)],
    sampler: SamplerConfig,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> (Vec<Frames>, Vec<OnlineLayerStats>) {
    let device = model
        .devices()
        .into_iter()
        .next()
        .expect("a model lives on a device");
    let n = labels.len();
    // One noise stream for all chunks, drawn in order: the same as one batch's.
    let mut noise_rng = SplitMix(seed);
    if sampler.stochasticity > 0.0 || sampler.free_init.is_some() {
        // A stochastic sampler (and FreeInit) draws its fresh noise from the device's
        // (global) generator.
        device.seed(seed);
    }
    let mut frames = Vec::with_capacity(n);
    let stats = Mutex::new(Vec::new());
    for chunk in labels.chunks(SAMPLE_CHUNK) {
        let noise = noise_rng.normal_tensor(
            [chunk.len(), 3, clip.frames, clip.height, clip.width],
            &device,
        );
        frames.extend(sample_chunk(model, clip, chunk, noise, sampler, &stats));
        progress(frames.len(), n);
    }
    (frames, stats.into_inner().expect("stats lock"))
}

/// One chunk of clips from its noise.
fn sample_chunk(
    model: &VideoDit,
    clip: ClipShape,
    labels: &[(usize, usize)],
    noise: Tensor<5>,
    sampler: SamplerConfig,
    stats: &Mutex<Vec<OnlineLayerStats>>,
) -> Vec<Frames> {
    let device = noise.device();
    let n = labels.len();
    let sample = |noise: Tensor<5>, labels: &[(usize, usize)]| {
        let cond = model.embed_labels(label_ids(labels, &device));
        let uncond = model.embed_labels(Tensor::zeros([labels.len(), COND_TOKENS], &device));
        let state = sampler.sampling_state(model);
        let video = sample_euler_with_state(model, noise, cond, uncond, sampler, &state)
            .expect("sampling shapes come from the config");
        if let Some(online) = state.online() {
            let mut sums = stats.lock().expect("stats lock");
            let layers = online.layer_stats();
            sums.resize(layers.len(), OnlineLayerStats::default());
            for (sum, layer) in sums.iter_mut().zip(&layers) {
                sum.merge(layer);
            }
        }
        video
    };
    let videos = if sampler.stochasticity > 0.0 || sampler.free_init.is_some() {
        // The fresh noise comes from the device's generator in call order: one batch.
        sample(noise, labels)
    } else {
        // Shares of the labels sample in parallel, as training replicas do (Flex runs most
        // ops on one core); the deterministic sampler draws no noise of its own.
        let shares = batch_shares(n, rayon::current_num_threads());
        let parts: Vec<Tensor<5>> = shares
            .into_par_iter()
            .map(|(start, len)| {
                sample(
                    noise.clone().narrow(0, start, len),
                    &labels[start..start + len],
                )
            })
            .collect();
        Tensor::cat(parts, 0)
    };
    let pixels: Vec<f32> = videos
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 video");
    let per = 3 * clip.frames * clip.height * clip.width;
    pixels
        .chunks_exact(per)
        .map(|p| Frames::from_chw(p, clip.frames, clip.height, clip.width))
        .collect()
}
