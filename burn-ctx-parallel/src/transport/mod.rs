//! What carries a job's messages: the threads of one process ([`ThreadMessenger`]) or the
//! processes of an MPI job (`MpiMessenger`, feature `mpi`).
//!
//! A [`Messenger`] moves opaque byte messages between the ranks of a job; the
//! [`Communicator`](crate::Communicator) above it turns tensors into messages, checks that
//! the ranks agree and makes the collectives differentiable. Messages go device → host →
//! messenger → host → device. A device-to-device messenger (NCCL through cudarc, which
//! CubeCL already depends on, or a CUDA-aware MPI) would implement the same trait on device
//! buffers and remove the two host copies; nothing above this module would change.

use std::fmt;
use std::time::Duration;

mod threads;
pub use threads::{ThreadMessenger, run_in_process};

#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "mpi")]
pub use self::mpi::{MpiMessenger, MpiUniverse, run_mpi};

/// How long a rank waits for a peer's message before it gives up on the job: long enough for
/// any step of a healthy run, short enough that a lost rank ends the job instead of hanging
/// it. Override with the environment variable `CTX_PARALLEL_TIMEOUT_S` or per messenger.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The timeout from `CTX_PARALLEL_TIMEOUT_S`, else [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Duration {
    std::env::var("CTX_PARALLEL_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// A message's tag: the group that sent it, its place in that group's sequence of
/// collectives, and whether it belongs to a backward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    /// The sending group (a hash of its member list).
    pub group: u64,
    /// Collectives that group had called before this one.
    pub seq: u64,
    /// Part of the reverse exchange that carries gradients.
    pub backward: bool,
}

/// Why a rank gave up on an exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerError {
    /// A peer reported that it failed.
    Failed {
        /// The rank that failed.
        rank: usize,
        /// What it reported.
        cause: String,
    },
    /// A peer sent nothing within the timeout.
    Timeout {
        /// The rank waited for.
        rank: usize,
        /// How long this rank waited.
        waited: Duration,
    },
    /// A peer ended its work (returned from the job's body) while this rank waits for a
    /// message from it: the ranks ran different sequences of collectives.
    Finished {
        /// The rank that finished.
        rank: usize,
    },
    /// The messenger itself failed (an MPI error, a call from the wrong thread).
    Messenger(String),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { rank, cause } => write!(f, "rank {rank} failed: {cause}"),
            Self::Timeout { rank, waited } => write!(
                f,
                "no message from rank {rank} within {:.1} s (it failed, hangs, or called a different collective)",
                waited.as_secs_f64()
            ),
            Self::Finished { rank } => write!(
                f,
                "rank {rank} finished its work while this rank waits for a message from it (the \
                 ranks ran different numbers of collectives: different settings or data?)"
            ),
            Self::Messenger(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for PeerError {}

/// Moves byte messages between the ranks of one job.
///
/// All ranks call the same exchanges in the same order (SPMD); an exchange never waits for
/// its own sends to be received before it receives, so any pattern of sends and receives
/// completes once every rank has reached it.
pub trait Messenger: Send + Sync {
    /// This process's or thread's rank in the job.
    fn rank(&self) -> usize;
    /// Ranks in the job.
    fn world(&self) -> usize;
    /// Sends each `(rank, bytes)` and receives one message tagged `tag` from each rank of
    /// `from`, returned in `from`'s order.
    fn exchange(
        &self,
        tag: Tag,
        sends: Vec<(usize, Vec<u8>)>,
        from: &[usize],
    ) -> Result<Vec<Vec<u8>>, PeerError>;
    /// Tells the job that this rank failed and why, so that no peer waits for it: peers'
    /// exchanges return [`PeerError::Failed`] (threads), or the job is aborted with the
    /// cause printed (MPI).
    fn fail(&self, cause: &str);
    /// Tells the job that this rank has finished its work and waits until every peer has
    /// too, so that the job ends together: a peer still waiting for a message from this rank
    /// gets [`PeerError::Finished`] at once instead of waiting out its timeout. The default
    /// returns at once (for messengers whose peers cannot outlive each other).
    fn finish(&self) -> Result<(), PeerError> {
        Ok(())
    }
}
