//! One test binary for the crate; modules inside.
#![cfg(feature = "flex")]

#[path = "dit/common.rs"]
mod common;
#[path = "dit/data.rs"]
mod data;
#[path = "dit/faster_cache.rs"]
mod faster_cache;
#[path = "dit/faults.rs"]
mod faults;
#[path = "dit/free_init.rs"]
mod free_init;
#[path = "dit/long_video.rs"]
mod long_video;
#[path = "dit/model.rs"]
mod model;
#[path = "dit/online_sparse.rs"]
mod online_sparse;
#[path = "dit/recompute.rs"]
mod recompute;
#[path = "dit/reliability.rs"]
mod reliability;
#[path = "dit/sampler.rs"]
mod sampler;
#[path = "dit/training.rs"]
mod training;
