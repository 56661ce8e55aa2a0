//! Cross-attention from video tokens to conditioning tokens.

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, module::attention, ops::AttentionModuleOptions};

use crate::config::VideoDitConfig;

/// Cross-attention from video tokens to conditioning tokens.
#[derive(Module, Debug)]
pub struct CrossAttention {
    norm: LayerNorm,
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: usize,
}

impl CrossAttention {
    pub(crate) fn new(config: &VideoDitConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            norm: LayerNormConfig::new(d).init(device),
            q: LinearConfig::new(d, d).init(device),
            kv: LinearConfig::new(d, 2 * d).init(device),
            out: LinearConfig::new(d, d).init(device),
            heads: config.heads,
        }
    }

    pub(crate) fn forward(&self, x: Tensor<3>, cond: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let m = cond.dims()[1];
        let dh = d / self.heads;
        let q = self
            .q
            .forward(self.norm.forward(x))
            .reshape([b, s, self.heads, dh])
            .swap_dims(1, 2);
        let kv = self
            .kv
            .forward(cond)
            .reshape([b, m, 2, self.heads, dh])
            .permute([2, 0, 3, 1, 4]);
        let k = kv.clone().narrow(0, 0, 1).reshape([b, self.heads, m, dh]);
        let v = kv.narrow(0, 1, 1).reshape([b, self.heads, m, dh]);
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.out.forward(out.swap_dims(1, 2).reshape([b, s, d]))
    }
}
