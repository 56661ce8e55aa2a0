//! Sampling: the Euler sampler with classifier-free guidance for one clip or a long video,
//! its training-free accelerators (FasterCache, FreeInit, online sparse attention) and long
//! videos by clip parallelism.

mod euler;
pub mod faster_cache;
pub mod free_init;
pub mod long_video;
pub mod online_sparse;
mod spectral;
mod state;

pub use euler::{
    SamplerConfig, Velocity, sample_euler, sample_euler_clips, sample_euler_clips_with_state,
    sample_euler_with_state, sample_with_velocity,
};
pub use state::SamplingState;
