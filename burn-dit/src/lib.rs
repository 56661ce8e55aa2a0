#![warn(missing_docs)]

//! A video diffusion transformer for Burn whose self-attention is dense, DSV-sparse or
//! dual-scope, with flow-matching training, an Euler sampler with classifier-free guidance,
//! a seeded synthetic data set and network-free video metrics.
//!
//! Model (Wan2.1 style): 3D patch embedding, full 3D self-attention with per-head QK-norm
//! and 3D RoPE over global frame positions, adaLN-Zero time conditioning (a shared time
//! projection plus per-block modulation; the pooled conditioning joins the time embedding),
//! cross-attention to conditioning tokens, optional depthwise convolutions over each frame
//! and across frames in the MLP, and a zero-initialised output head predicting the velocity
//! or the clean video.
//!
//! One forward pass, [`VideoDit::forward`], takes a [`VideoDitInput`] and a
//! [`ForwardContext`] that says where the frames lie and what the pass records. Long videos
//! ([`sample::long_video`]): [`ForwardContext::clips`] runs a video cut into clips over the
//! ranks of a `burn-ctx-parallel` communicator (threads or MPI processes) with
//! Video-Infinity's dual-scope attention, and [`sample::sample_euler_clips`] samples it, each
//! clip with its own noise and prompt.
//!
//! ```no_run
//! use burn::tensor::{Device, Distribution, Int, Tensor};
//! use burn_dit::{AttentionKind, VideoDitConfig, sample::{SamplerConfig, sample_euler}};
//!
//! let device = Device::default();
//! let model = VideoDitConfig::tiny()
//!     .with_attention(AttentionKind::tiny_dsv())
//!     .init(&device);
//! // Two 8-frame 32×32 RGB clips: labels (object, colour) as conditioning tokens, 0 = null.
//! let noise = Tensor::<5>::random([2, 3, 8, 32, 32], Distribution::Normal(0.0, 1.0), &device);
//! let cond = model.embed_labels(Tensor::<2, Int>::from_ints([[1, 4], [2, 5]], &device));
//! let uncond = model.embed_labels(Tensor::<2, Int>::zeros([2, 2], &device));
//! let videos = sample_euler(&model, noise, cond, uncond, SamplerConfig::default())?;
//! assert_eq!(videos.dims(), [2, 3, 8, 32, 32]);
//! # Ok::<(), burn_dit::DitError>(())
//! ```

mod config;
pub mod data;
mod error;
pub mod flow;
pub mod media;
pub mod metrics;
mod model;
pub mod sample;
pub mod train;

pub use burn_ctx_parallel;
pub use burn_ctx_parallel::{ClipLayout, DualScopeConfig};
pub use burn_sparse_attn;
pub use burn_sparse_attn::dsv::DsvPolicy;
pub use config::{AttentionKind, Prediction, VideoDitConfig};
pub use error::DitError;
pub use model::patch::{patchify, unpatchify};
pub use model::rope::{Rope3d, rope_split};
pub use model::{
    BlockFeatures, CheckpointedStep, ClipGroup, Conditioning, CrossAttention, DitBlock,
    ForwardContext, Layout, SelfAttention, VideoDit, VideoDitInput,
};
