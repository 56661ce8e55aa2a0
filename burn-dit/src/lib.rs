#![warn(missing_docs)]

//! A video diffusion transformer for Burn whose self-attention is dense or DSV-sparse,
//! with flow-matching training, an Euler sampler with classifier-free guidance, a seeded
//! synthetic data set and network-free video metrics.
//!
//! Model (Wan2.1 style): 3D patch embedding, full 3D self-attention with 3D RoPE over global
//! frame positions, adaLN-Zero time conditioning (a shared time projection plus per-block
//! modulation), cross-attention to conditioning tokens, a zero-initialised output head.

mod block;
mod config;
pub mod data;
mod ema;
pub mod flow;
pub mod media;
pub mod metrics;
mod model;
mod patch;
mod rope;
pub mod train;

pub use block::{CrossAttention, DitBlock, SelfAttention};
pub use burn_ctx_parallel;
pub use burn_sparse_attn;
pub use config::{AttentionKind, VideoDitConfig};
pub use burn_sparse_attn::dsv::DsvPolicy;
pub use ema::ema_update;
pub use model::VideoDit;
pub use patch::{patchify, unpatchify};
pub use rope::{Rope3d, rope_split};
