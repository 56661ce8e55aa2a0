//! The workspace's public paths reach each crate's API.

use burn::tensor::{Device, Distribution, Tensor};
use burn_sparse_video::sparse_attn::{SelectionConfig, select_critical_keys, sparse_attention};

#[test]
fn sparse_attention_is_reachable_through_the_workspace_package() {
    let device = Device::default();
    let x = Tensor::<4>::random([1, 2, 24, 16], Distribution::Normal(0.0, 1.0), &device);
    let keys = select_critical_keys(x.clone(), x.clone(), SelectionConfig::new(8, 6)).unwrap();
    let out = sparse_attention(x.clone(), x.clone(), x, &keys, None).unwrap();
    assert_eq!(out.dims(), [1, 2, 24, 16]);
    assert!(out.abs().max().into_scalar::<f32>().is_finite());
}
