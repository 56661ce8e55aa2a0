#![warn(missing_docs)]

//! Context parallelism for attention over a group of devices driven from one process.
//!
//! - [`DeviceGroup`]: ranks over a [`Transport`] (Burn's `Tensor::to_device` by default:
//!   NCCL send/recv between CUDA devices, a plain move on CPU) with all-gather, all-to-all
//!   (equal and uneven), all-reduce, reduce-scatter and halo exchange, all differentiable and
//!   all counting the bytes they move. The [`group`] module docs say how a multi-process
//!   transport plugs in.
//! - [`head_parallel_attention`]: head sharding (Ulysses), dense or sparse per head shard.
//! - [`ring_attention`]: sequence sharding with a log-sum-exp merge.
//! - [`sparse_sequence_attention`]: DSV's sequence sharding for sparse attention — each rank
//!   fetches only the remote key/value rows its index selected.
//!
//! - [`planner`]: DSV's Longest-Processing-Time head placement and a cost model that picks
//!   the head × sequence split of a device group.
//!
//! - Clip parallelism (Video-Infinity): [`ClipLayout`] cuts a long video along time into
//!   clips held by ranks; [`DualScopePlan`] runs dual-scope attention over them (a local
//!   window through halo exchange plus all-gathered global frames, scope balance by noise
//!   level); [`synced_moments`] gives frame-spanning norms the whole video's statistics.
//!
//! - [`hybrid_attention`]: DSV's hybrid — head groups (all-to-all, LPT head placement) ×
//!   sequence groups (sparse remote fetch), over subgroups of one device group.

pub mod clips;
mod dual_scope;
pub mod group;
mod head_parallel;
mod hybrid;
pub mod planner;
mod ring;
mod sparse_sequence;

pub use burn_sparse_attn;
pub use clips::{ClipLayout, Halo, clip_halos, synced_moments};
pub use dual_scope::{DualScopeConfig, DualScopePlan, clip_devices, dual_scope_bytes_per_layer};
pub use group::{CommStats, DeviceGroup, DeviceTransport, SubTransport, Transport};
pub use hybrid::{HybridSplit, hybrid_attention};
pub use head_parallel::{head_parallel_attention, head_parallel_bytes_per_rank};
pub use ring::ring_attention;
pub use sparse_sequence::sparse_sequence_attention;
