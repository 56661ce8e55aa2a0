#![warn(missing_docs)]

//! A video diffusion transformer whose self-attention is dense, DSV-sparse or dual-scope.
//!
//! Status: the crate is laid out; the model, training and sampling are still to come.
//! It picks its attention from [`burn_sparse_attn`] and [`burn_ctx_parallel`].

pub use burn_ctx_parallel;
pub use burn_sparse_attn;
