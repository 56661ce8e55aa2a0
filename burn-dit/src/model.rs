//! The video DiT: patches in, 3D-RoPE blocks with adaLN-Zero and cross-attention, patches out.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData, activation::silu};
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::{DsvAttention, DsvHost, TokenGrid};

use crate::block::{DitBlock, modulate, plain_norm, quick_gelu};
use crate::config::VideoDitConfig;
use crate::patch::{patchify, unpatchify};
use crate::rope::Rope3d;

/// Width of the sinusoidal timestep features.
const TIME_FEATURES: usize = 256;

/// A linear layer whose weight and bias start at zero (adaLN-Zero and the output head).
fn zero_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::zeros([d_in, d_out], device)),
        bias: Some(Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// A video diffusion transformer that predicts the flow-matching velocity `ε − x0`.
#[derive(Module, Debug)]
pub struct VideoDit {
    patch_embed: Linear,
    time_in: Linear,
    time_out: Linear,
    time_proj: Linear,
    cond_embed: Embedding,
    cond_in: Linear,
    cond_out: Linear,
    blocks: Vec<DitBlock>,
    head_time: Linear,
    head: Linear,
    #[module(skip)]
    config: VideoDitConfig,
}

impl VideoDitConfig {
    /// Builds the model; panics with the offending field on an inconsistent config.
    pub fn init(&self, device: &Device) -> VideoDit {
        assert!(self.heads > 0 && self.d_model % self.heads == 0, "VideoDitConfig: `d_model` ({}) must be a multiple of `heads` ({})", self.d_model, self.heads);
        assert!(self.head_dim() % 2 == 0 && self.head_dim() >= 6, "VideoDitConfig: head dim d_model/heads = {} must be even and ≥ 6 for 3D RoPE", self.head_dim());
        assert!(self.patch.iter().all(|&p| p > 0), "VideoDitConfig: `patch` entries must be ≥ 1, got {:?}", self.patch);
        assert!(self.channels > 0 && self.depth > 0 && self.cond_vocab > 0, "VideoDitConfig: `channels`, `depth` and `cond_vocab` must be ≥ 1");
        let d = self.d_model;
        let patch_dim = self.channels * self.patch.iter().product::<usize>();
        VideoDit {
            patch_embed: LinearConfig::new(patch_dim, d).init(device),
            time_in: LinearConfig::new(TIME_FEATURES, d).init(device),
            time_out: LinearConfig::new(d, d).init(device),
            time_proj: zero_linear(d, 6 * d, device),
            cond_embed: EmbeddingConfig::new(self.cond_vocab, self.cond_dim).init(device),
            cond_in: LinearConfig::new(self.cond_dim, d).init(device),
            cond_out: LinearConfig::new(d, d).init(device),
            blocks: (0..self.depth).map(|_| DitBlock::new(self, device)).collect(),
            head_time: zero_linear(d, 2 * d, device),
            head: zero_linear(d, patch_dim, device),
            config: self.clone(),
        }
    }
}

/// Sinusoidal features of `t = 1000·σ`: `[B]` → `[B, TIME_FEATURES]`.
fn time_features(sigma: Tensor<1>) -> Tensor<2> {
    let half = TIME_FEATURES / 2;
    let device = sigma.device();
    let freqs: Vec<f32> = (0..half).map(|i| (-(10000f32).ln() * i as f32 / half as f32).exp()).collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &device).unsqueeze::<2>();
    let angles = (sigma * 1000.0).unsqueeze_dim::<2>(1) * freqs;
    Tensor::cat(vec![angles.clone().cos(), angles.sin()], 1)
}

impl VideoDit {
    /// The configuration the model was built from.
    pub fn config(&self) -> &VideoDitConfig {
        &self.config
    }

    /// Embeds conditioning token ids `[B, M]` (0 = null) into `[B, M, cond_dim]`; feed your
    /// own embeddings (e.g. text) to [`VideoDit::forward`] instead where you have them.
    pub fn embed_labels(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.cond_embed.forward(ids)
    }

    /// Velocity prediction for noisy videos `x: [B, C, T, H, W]` at noise levels
    /// `sigma: [B]` given conditioning embeddings `cond: [B, M, cond_dim]`.
    pub fn forward(&self, x: Tensor<5>, sigma: Tensor<1>, cond: Tensor<3>) -> Result<Tensor<5>, SparseAttnError> {
        self.forward_clip(x, sigma, cond, 0)
    }

    /// [`VideoDit::forward`] for a clip whose first frame is global frame `frame_offset`
    /// of a longer video (positions stay global).
    pub fn forward_clip(&self, x: Tensor<5>, sigma: Tensor<1>, cond: Tensor<3>, frame_offset: usize) -> Result<Tensor<5>, SparseAttnError> {
        const F: &str = "VideoDit::forward";
        let c = &self.config;
        let [b, ch, t, h, w] = x.dims();
        let [pt, ph, pw] = c.patch;
        SparseAttnError::check(
            ch == c.channels && t % pt == 0 && h % ph == 0 && w % pw == 0 && b > 0 && t > 0 && h > 0 && w > 0,
            F,
            "x",
            format!("[B, {}, T, H, W] with T, H, W multiples of the patch {:?}", c.channels, c.patch),
            format!("{:?}", x.dims()),
        )?;
        SparseAttnError::check(sigma.dims() == [b], F, "sigma", format!("[{b}]"), format!("{:?}", sigma.dims()))?;
        SparseAttnError::check(cond.dims()[0] == b && cond.dims()[2] == c.cond_dim && cond.dims()[1] > 0, F, "cond", format!("[{b}, M ≥ 1, {}]", c.cond_dim), format!("{:?}", cond.dims()))?;
        let grid = [t / pt, h / ph, w / pw];
        let token_grid = TokenGrid::new(grid[0], grid[1], grid[2]);
        let device = x.device();
        let rope = Rope3d::new(c.head_dim(), grid, frame_offset, c.rope_theta, &device);

        let d = c.d_model;
        let tokens = self.patch_embed.forward(patchify(x, c.patch));
        let t_emb = self.time_out.forward(silu(self.time_in.forward(time_features(sigma))));
        let time = self.time_proj.forward(silu(t_emb.clone())).reshape([b, 6, d]);
        let cond = self.cond_out.forward(quick_gelu(self.cond_in.forward(cond)));

        let mut x = tokens;
        for block in &self.blocks {
            x = block.forward(x, time.clone(), cond.clone(), &rope, token_grid);
        }
        let head_mod = self.head_time.forward(silu(t_emb)).reshape([b, 2, d]);
        let x = modulate(plain_norm(x), head_mod.clone().narrow(1, 0, 1), head_mod.narrow(1, 1, 1));
        Ok(unpatchify(self.head.forward(x), c.channels, c.patch, grid))
    }

    /// The DiT blocks.
    pub fn blocks(&self) -> &[DitBlock] {
        &self.blocks
    }
}

impl DsvHost for VideoDit {
    fn dsv_layers(&self) -> Vec<&DsvAttention> {
        self.blocks.iter().filter_map(|b| b.self_attention().dsv()).collect()
    }
}
