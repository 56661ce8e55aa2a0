#![allow(dead_code)]

use burn::tensor::Tensor;
use burn_dit::data::ClipShape;
use burn_dit::train::TrainConfig;
use burn_dit::{AttentionKind, DsvPolicy, VideoDitConfig};

/// A model small enough for debug-build tests: 4×16×16 clips → 64 tokens of width 32.
pub fn micro_model(attention: AttentionKind) -> VideoDitConfig {
    VideoDitConfig::new(3, [1, 4, 4], 32, 2, 2).with_cond_dim(16).with_attention(attention)
}

pub fn micro_dsv() -> AttentionKind {
    AttentionKind::Dsv(DsvPolicy::new().with_min_sparse_len(0).with_sample_stride(8).with_profile_every(2).with_query_cube([1, 2, 2]))
}

pub fn micro_train(attention: AttentionKind) -> TrainConfig {
    let mut c = TrainConfig::tiny(micro_model(attention));
    c.clip = ClipShape { frames: 4, height: 16, width: 16 };
    c.dataset_size = 64;
    c.batch_size = 4;
    c.steps = 4;
    c.warmup_steps = 1;
    c.sampler.steps = 2;
    c
}

pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}
