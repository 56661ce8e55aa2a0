#![warn(missing_docs)]

//! Video diffusion transformers with dynamic sparse attention on Burn.
//!
//! This package re-exports the workspace's three crates so the examples and the cross-crate
//! tests at the top of the repository can reach them:
//! - [`sparse_attn`]: DSV-style critical-key selection and sparse attention ops;
//! - [`ctx_parallel`]: context parallelism over a group of devices;
//! - [`dit`]: the video DiT, its training and sampling.

pub use burn_ctx_parallel as ctx_parallel;
pub use burn_dit as dit;
pub use burn_sparse_attn as sparse_attn;

/// The README's Rust code, compiled by `cargo test` as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
