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
//!   fetches only the remote key/value rows its index selected.
//! - [`hybrid_attention`]: DSV's hybrid — head groups (all-to-all, LPT head placement) ×
//!   sequence groups (sparse remote fetch), over subgroups.
//! - [`planner`]: DSV's Longest-Processing-Time head placement and a cost model that picks
//!   the head × sequence split of a device group.
//! - Clip parallelism (Video-Infinity), driven from one process over a [`DeviceGroup`]:
//!   [`ClipLayout`] cuts a long video along time into clips held by ranks; [`DualScopePlan`]
//!   runs dual-scope attention over them (a local window through halo exchange plus
//!   all-gathered global frames, scope balance by noise level); [`synced_moments`] gives
//!   frame-spanning norms the whole video's statistics.

mod backends;
pub mod clips;
mod communicator;
mod dual_scope;
pub mod group;
mod head_parallel;
mod hybrid;
mod ops;
pub mod planner;
mod ring;
mod sparse_sequence;
pub mod transport;

pub use burn_sparse_attn;
pub use clips::{ClipLayout, clip_halos, synced_moments};
pub use communicator::{Communicator, Halo};
pub use dual_scope::{DualScopeConfig, DualScopePlan, clip_devices, dual_scope_bytes_per_layer};
pub use group::{CommStats, DeviceGroup, DeviceTransport, Transport};
pub use head_parallel::{head_parallel_attention, head_parallel_bytes_per_rank};
pub use hybrid::{HybridSplit, hybrid_attention};
pub use ops::CollectiveOps;
pub use ring::ring_attention;
pub use sparse_sequence::sparse_sequence_attention;
