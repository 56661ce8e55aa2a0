#![warn(missing_docs)]
// Burn deprecates NdArray in favour of Flex; we keep serving its users.
#![cfg_attr(feature = "ndarray", allow(deprecated))]

//! Context parallelism for attention: every rank runs the same code on its own shard (SPMD)
//! and calls collectives through its [`Communicator`].
//!
//! - Ranks are threads of one process, one per device ([`transport::run_in_process`]), or
//!   the processes of an MPI job on one or many machines (feature `mpi`:
//!   `transport::run_mpi`, launched by `mpirun` or `srun`). The [`transport`] docs say how a
//!   device-to-device transport plugs in.
//! - [`Communicator`]: all-gather, uneven all-to-all, all-reduce, reduce-scatter, halo
//!   exchange and send/recv, each taking this rank's tensor; all differentiable across ranks
//!   (their backward is the transposed exchange, [`CollectiveOps`]), all counting the bytes
//!   they move, all checking that the ranks agree (shapes, dtypes, splits) and failing by
//!   name when they don't.
//! - [`head_parallel_attention`]: head sharding (Ulysses), dense or sparse per head shard.
//! - [`ring_attention`]: sequence sharding with a log-sum-exp merge.
//! - [`sparse_sequence_attention`]: DSV's sequence sharding for sparse attention — each rank
//!   fetches only the remote key/value rows its index selected. A [`Communicator`] is the
//!   [`SequenceShards`](burn_sparse_attn::dsv::SequenceShards) of a sharded DSV layer
//!   (`DsvAttention::forward_sharded`), which attends and trains over a whole sequence from
//!   each rank's shard.
//! - [`hybrid_attention`]: DSV's hybrid — head groups (all-to-all, LPT head placement) ×
//!   sequence groups (sparse remote fetch), over subgroups.
//! - [`planner`]: DSV's Longest-Processing-Time head placement and a cost model that picks
//!   the head × sequence split of a device group.
//! - Clip parallelism (Video-Infinity): [`ClipLayout`] cuts a long video along time into
//!   clips, each rank holding a contiguous run of them; [`DualScopePlan`] runs dual-scope
//!   attention over them (a local window through a halo exchange plus gathered global
//!   frames, scope balance by noise level); [`clip_halos`] serves any other op that looks
//!   past a clip's edges; [`synced_moments`] gives frame-spanning norms the whole video's
//!   statistics.
//! - Data parallelism: [`broadcast_module`] starts every rank from one set of weights and
//!   [`all_reduce_gradients`] sums a model's gradients over the group as one flat vector.
//!
//! ```no_run
//! use burn::tensor::{Device, Distribution, Tensor};
//! use burn_ctx_parallel::{ring_attention, transport::run_in_process};
//!
//! // Two ranks (threads here; `run_mpi` for processes), each holding half of the sequence.
//! let devices = vec![Device::default(); 2];
//! let outputs = run_in_process(&devices, |comm| {
//!     let shard = [1, 8, 2048, 64]; // [B, H, S / ranks, D]
//!     let q = Tensor::<4>::random(shard, Distribution::Normal(0.0, 1.0), comm.device());
//!     let k = Tensor::<4>::random(shard, Distribution::Normal(0.0, 1.0), comm.device());
//!     let v = Tensor::<4>::random(shard, Distribution::Normal(0.0, 1.0), comm.device());
//!     // This rank's queries against every rank's keys, merged by log-sum-exp.
//!     ring_attention(&comm, q, k, v, None)
//! });
//! for out in outputs {
//!     assert_eq!(out?.dims(), [1, 8, 2048, 64]);
//! }
//! # Ok::<(), burn_ctx_parallel::CommError>(())
//! ```

mod backends;
pub mod clips;
mod communicator;
mod data_parallel;
mod dual_scope;
mod error;
mod head_parallel;
mod hybrid;
mod ops;
pub mod planner;
mod ring;
mod sequence_shards;
mod sparse_sequence;
pub mod transport;

pub use burn_sparse_attn;
pub use clips::{ClipLayout, clip_halos, synced_moments};
pub use communicator::{CommStats, Communicator, Halo};
pub use data_parallel::{all_reduce_gradients, broadcast_module};
pub use dual_scope::{DualScopeConfig, DualScopeInputs, DualScopePlan, dual_scope_bytes_per_layer};
pub use error::CommError;
pub use head_parallel::{head_parallel_attention, head_parallel_bytes_per_rank};
pub use hybrid::{HybridSplit, hybrid_attention};
pub use ops::CollectiveOps;
pub use ring::ring_attention;
pub use sparse_sequence::sparse_sequence_attention;
