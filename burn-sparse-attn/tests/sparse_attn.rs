//! One test binary for the crate (every binary links all of Burn); modules inside.
//! The op tests run once per backend compiled in (`flex::…`, `ndarray::…`, `wgpu::…`) and
//! compare with an oracle on Flex.
#![cfg_attr(feature = "ndarray", allow(deprecated))]
#![cfg(feature = "flex")]

#[path = "sparse_attn/backward.rs"]
mod backward;
#[path = "sparse_attn/common.rs"]
mod common;
#[path = "sparse_attn/dsv.rs"]
mod dsv;
#[path = "sparse_attn/dtypes.rs"]
mod dtypes;
#[path = "sparse_attn/flash.rs"]
mod flash;
#[path = "sparse_attn/forward.rs"]
mod forward;
#[path = "sparse_attn/kernels.rs"]
mod kernels;
#[path = "sparse_attn/non_finite.rs"]
mod non_finite;
#[path = "sparse_attn/search.rs"]
mod search;
#[path = "sparse_attn/selection.rs"]
mod selection;
#[path = "sparse_attn/validation.rs"]
mod validation;
