//! One DiT block: adaLN-Zero modulated self-attention and MLP, plus cross-attention to the
//! conditioning tokens.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, activation::sigmoid, module::attention, ops::AttentionModuleOptions};
use burn_sparse_attn::dsv::{DsvAttention, DsvAttentionConfig, TokenGrid};

use crate::config::{AttentionKind, VideoDitConfig};
use crate::rope::Rope3d;

/// Layer norm without affine parameters (adaLN supplies scale and shift).
pub(crate) fn plain_norm(x: Tensor<3>) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2);
    centred / (var + 1e-6).sqrt()
}

/// GELU as `x·σ(1.702·x)`: one exponential per element, where the tanh form's cube and
/// tanh cost a fifth of a CPU training step.
pub(crate) fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * sigmoid(x * 1.702)
}

/// `x·(1 + scale) + shift` with per-sample `[B, 1, d]` modulation.
pub(crate) fn modulate(x: Tensor<3>, shift: Tensor<3>, scale: Tensor<3>) -> Tensor<3> {
    x * (scale + 1.0) + shift
}

/// The block's self-attention: projections, 3D RoPE and dense or DSV attention.
#[derive(Module, Debug)]
pub struct SelfAttention {
    qkv: Linear,
    out: Linear,
    dsv: Option<DsvAttention>,
    heads: usize,
}

impl SelfAttention {
    fn new(config: &VideoDitConfig, device: &Device) -> Self {
        let d = config.d_model;
        let dsv = match &config.attention {
            AttentionKind::Dense => None,
            AttentionKind::Dsv(policy) => Some(DsvAttentionConfig::new(d, config.heads, config.head_dim(), policy.clone()).init(device)),
        };
        Self {
            qkv: LinearConfig::new(d, 3 * d).init(device),
            out: LinearConfig::new(d, d).init(device),
            dsv,
            heads: config.heads,
        }
    }

    fn forward(&self, x: Tensor<3>, rope: &Rope3d, grid: TokenGrid) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let dh = d / self.heads;
        let qkv = self.qkv.forward(x.clone()).reshape([b, s, 3, self.heads, dh]).permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, self.heads, s, dh]);
        let (q, k, v) = (rope.apply(part(0)), rope.apply(part(1)), part(2));
        let out = match &self.dsv {
            Some(dsv) => dsv.forward(x, q, k, v, grid).expect("DiT shapes are validated at construction"),
            None => attention(q, k, v, None, None, AttentionModuleOptions::default()),
        };
        self.out.forward(out.swap_dims(1, 2).reshape([b, s, d]))
    }

    /// The DSV layer, when this block uses DSV.
    pub fn dsv(&self) -> Option<&DsvAttention> {
        self.dsv.as_ref()
    }
}

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
    fn new(config: &VideoDitConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            norm: LayerNormConfig::new(d).init(device),
            q: LinearConfig::new(d, d).init(device),
            kv: LinearConfig::new(d, 2 * d).init(device),
            out: LinearConfig::new(d, d).init(device),
            heads: config.heads,
        }
    }

    fn forward(&self, x: Tensor<3>, cond: Tensor<3>) -> Tensor<3> {
        let [b, s, d] = x.dims();
        let m = cond.dims()[1];
        let dh = d / self.heads;
        let q = self.q.forward(self.norm.forward(x)).reshape([b, s, self.heads, dh]).swap_dims(1, 2);
        let kv = self.kv.forward(cond).reshape([b, m, 2, self.heads, dh]).permute([2, 0, 3, 1, 4]);
        let k = kv.clone().narrow(0, 0, 1).reshape([b, self.heads, m, dh]);
        let v = kv.narrow(0, 1, 1).reshape([b, self.heads, m, dh]);
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.out.forward(out.swap_dims(1, 2).reshape([b, s, d]))
    }
}

/// A DiT block with adaLN-Zero: the shared time projection plus this block's learned
/// modulation give shift/scale/gate for attention and MLP; gates start at zero, so a fresh
/// block is the identity.
#[derive(Module, Debug)]
pub struct DitBlock {
    modulation: Param<Tensor<2>>,
    attn: SelfAttention,
    cross: CrossAttention,
    mlp_in: Linear,
    mlp_out: Linear,
}

impl DitBlock {
    pub(crate) fn new(config: &VideoDitConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            modulation: Param::from_tensor(Tensor::zeros([6, d], device)),
            attn: SelfAttention::new(config, device),
            cross: CrossAttention::new(config, device),
            mlp_in: LinearConfig::new(d, config.mlp_ratio * d).init(device),
            mlp_out: LinearConfig::new(config.mlp_ratio * d, d).init(device),
        }
    }

    /// `x: [B, S, d]`, `time: [B, 6, d]` (shared time projection), `cond: [B, M, d]`.
    pub(crate) fn forward(&self, x: Tensor<3>, time: Tensor<3>, cond: Tensor<3>, rope: &Rope3d, grid: TokenGrid) -> Tensor<3> {
        let m = time + self.modulation.val().unsqueeze::<3>();
        let chunk = |i: usize| m.clone().narrow(1, i, 1);
        let (shift1, scale1, gate1) = (chunk(0), chunk(1), chunk(2));
        let (shift2, scale2, gate2) = (chunk(3), chunk(4), chunk(5));
        let h = modulate(plain_norm(x.clone()), shift1, scale1);
        let x = x + self.attn.forward(h, rope, grid) * gate1;
        let x = x.clone() + self.cross.forward(x, cond);
        let h = modulate(plain_norm(x.clone()), shift2, scale2);
        x + self.mlp_out.forward(quick_gelu(self.mlp_in.forward(h))) * gate2
    }

    /// The block's self-attention.
    pub fn self_attention(&self) -> &SelfAttention {
        &self.attn
    }
}
