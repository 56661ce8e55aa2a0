//! The workspace's public paths reach each crate, and the layers compose: a DiT built from
//! the DiT crate trains with DSV from the attention crate.

use burn::tensor::{Device, Distribution, Tensor};
use burn_sparse_video::dit::data::ClipShape;
use burn_sparse_video::dit::train::{TrainConfig, Trainer};
use burn_sparse_video::dit::{AttentionKind, DsvPolicy, VideoDitConfig};
use burn_sparse_video::sparse_attn::SparseAttentionOptions;
use burn_sparse_video::sparse_attn::dsv::DsvHost;
use burn_sparse_video::sparse_attn::{SelectionConfig, select_critical_keys, sparse_attention};

#[test]
fn sparse_attention_is_reachable_through_the_workspace_package() {
    let device = Device::flex();
    let x = Tensor::<4>::random([1, 2, 24, 16], Distribution::Normal(0.0, 1.0), &device);
    let keys = select_critical_keys(x.clone(), x.clone(), SelectionConfig::new(8, 6)).unwrap();
    let out = sparse_attention(
        x.clone(),
        x.clone(),
        x,
        &keys,
        None,
        SparseAttentionOptions::default(),
    )
    .map(|out| out.output)
    .unwrap();
    assert_eq!(out.dims(), [1, 2, 24, 16]);
    assert!(out.abs().max().into_scalar::<f32>().is_finite());
}

#[test]
fn a_dit_with_dsv_trains_and_samples() {
    let dsv = DsvPolicy::new()
        .with_min_sparse_len(0)
        .with_sample_stride(8)
        .with_query_cube([1, 2, 2]);
    let model = VideoDitConfig::new(3, [1, 4, 4], 32, 2, 2)
        .with_cond_dim(16)
        .with_attention(AttentionKind::Dsv(dsv));
    let mut config = TrainConfig::tiny(model);
    config.clip = ClipShape {
        frames: 2,
        height: 16,
        width: 16,
    };
    config.batch_size = 2;
    config.sampler.steps = 2;
    let mut trainer = Trainer::new(config, &Device::flex()).unwrap();
    let log = trainer.train_step();
    assert!(log.loss.is_finite() && log.predictor_loss.is_some());
    assert_eq!(trainer.model().dsv_layers().len(), 2);
    let clips = trainer.sample(&[(0, 1), (2, 3)], 5);
    assert_eq!(clips.len(), 2);
    assert_eq!(
        (clips[0].len(), clips[0].height, clips[0].width),
        (2, 16, 16)
    );
}
