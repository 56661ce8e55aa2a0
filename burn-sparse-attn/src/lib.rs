#![warn(missing_docs)]
// Burn deprecates NdArray in favour of Flex; we keep serving its users.
#![cfg_attr(feature = "ndarray", allow(deprecated))]

//! DSV-style dynamic sparse attention for Burn.
//!
//! Video diffusion transformers spend most of their step in attention, and most of each
//! query's softmax mass falls on a few keys. This crate picks those *critical keys* per query
//! group from cheap low-rank projections ([`select_critical_keys`]) and attends to them only
//! ([`sparse_attention`]), forward and backward.
//!
//! The ops form one backend extension trait, [`SparseAttnOps`]: its default bodies are the
//! reference maths (tensor primitives, the correctness oracle) and serve Flex and NdArray;
//! Autodiff uses a hand-written backward; the Cube backends (wgpu, Vulkan, CUDA) and Fusion
//! are selected behind this crate's features.
//!
//! ```no_run
//! use burn::tensor::{Device, Distribution, Tensor};
//! use burn_sparse_attn::{
//!     SelectionConfig, SparseAttentionOptions, select_critical_keys, sparse_attention,
//! };
//!
//! let device = Device::default();
//! let [b, h, s, d, r] = [1, 4, 256, 64, 16];
//! let q = Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
//! let k = Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
//! let v = Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
//! // Low-rank views of q and k (DSV learns these projections).
//! let (q_lr, k_lr) = (q.clone().narrow(3, 0, r), k.clone().narrow(3, 0, r));
//! let keys = select_critical_keys(q_lr, k_lr, SelectionConfig::new(32, 26))?;
//! let out = sparse_attention(q, k, v, &keys, None, SparseAttentionOptions::default())?;
//! assert_eq!(out.output.dims(), [1, 4, 256, 64]); // 90% sparse
//! # Ok::<(), burn_sparse_attn::SparseAttnError>(())
//! ```

extern crate alloc;

mod backends;
mod critical_keys;
#[cfg(feature = "cuda-source")]
pub mod cuda_source;
pub mod dsv;
mod error;
mod flash;
mod functions;
mod kernel;
mod layout;
mod ops;
pub mod oracle;
mod reference;
mod search;

pub use critical_keys::{CriticalKeys, IndexShape};
pub use error::SparseAttnError;
pub use flash::flash_attention;
pub use functions::{
    DenseFallback, SelectionConfig, SparseAttentionOptions, SparseAttentionOutput,
    select_critical_keys, sparse_attention,
};
pub use layout::{AttnInputs, AttnLayout, F32Precision};
pub use ops::SparseAttnOps;
pub use search::{SearchedAttention, dense_attention_with_search};
