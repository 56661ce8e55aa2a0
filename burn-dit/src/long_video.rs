//! Long videos by clip parallelism: a model trained on short clips generates a video many
//! clips long, one or more clips per rank, with dual-scope attention joining the clips.

use burn::tensor::Tensor;
use burn_ctx_parallel::{ClipLayout, DeviceGroup, DualScopeConfig, Transport, clip_devices};
use burn_sparse_attn::SparseAttnError;

use crate::data::SplitMix;
use crate::flow::{SamplerConfig, sample_euler_clips};
use crate::media::Frames;
use crate::model::VideoDit;

/// Noise of clip `clip` of a video seeded `seed`: its own stream, so a clip's noise does not
/// depend on how many clips come before it or which rank draws it.
pub fn clip_noise(seed: u64, clip: usize, shape: [usize; 5], device: &burn::tensor::Device) -> Tensor<5> {
    SplitMix(seed ^ (clip as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).normal_tensor(shape, device)
}

/// Generates one video of `layout.total_frames()` frames of `height × width` with `model`
/// (no autodiff) over `group`: clip `c` starts from its own noise and follows its own
/// conditioning `cond[c]` (`[1, M, cond_dim]`; a prompt may change over time), with the null
/// conditioning `uncond[c]` for guidance. Self-attention is dual-scope with `scope`.
#[allow(clippy::too_many_arguments)]
pub fn generate_long<T: Transport>(model: &VideoDit, group: &DeviceGroup<T>, layout: &ClipLayout, [height, width]: [usize; 2], cond: Vec<Tensor<3>>, uncond: Vec<Tensor<3>>, sampler: SamplerConfig, scope: &DualScopeConfig, seed: u64) -> Result<Frames, SparseAttnError> {
    let channels = model.config().channels;
    let noise = clip_devices(group, layout).iter().enumerate().map(|(c, device)| clip_noise(seed, c, [1, channels, layout.frames(c), height, width], device)).collect();
    let clips = sample_euler_clips(model, group, layout, noise, cond, uncond, sampler, scope)?;
    let mut video = Frames { width, height, frames: Vec::with_capacity(layout.total_frames()) };
    for (c, clip) in clips.into_iter().enumerate() {
        let pixels: Vec<f32> = clip.into_data().convert::<f32>().try_to_vec().expect("f32 video");
        video.frames.extend(Frames::from_chw(&pixels, layout.frames(c), height, width).frames);
    }
    Ok(video)
}
