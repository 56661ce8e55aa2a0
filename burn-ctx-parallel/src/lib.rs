#![warn(missing_docs)]

//! Context parallelism for attention over a group of devices: head sharding (all-to-all),
//! sequence sharding (ring with log-sum-exp merge), DSV's sparsity-aware hybrid, and
//! Video-Infinity's clip parallelism.
//!
//! Status: the crate is laid out; its collectives and parallel attention are still to come.
//! It builds on [`burn_sparse_attn`] and knows nothing of models.

pub use burn_sparse_attn;
