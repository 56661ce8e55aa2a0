//! [`CommError`]: why an operation over a group of ranks failed.

use std::fmt;

use burn_sparse_attn::SparseAttnError;

/// Why an operation over a group of ranks failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommError {
    /// A rejected argument, checked before anything is exchanged, or one the ranks disagree
    /// on (the workspace's argument error, also that of the attention ops called inside).
    Argument(SparseAttnError),
    /// A peer failed, stopped answering, sent something malformed or finished while this rank
    /// waited for it in `function`.
    Peer {
        /// The operation that was waiting.
        function: &'static str,
        /// This rank.
        rank: usize,
        /// What happened, naming the peer.
        cause: String,
    },
}

impl CommError {
    /// The argument the error names: a [`CommError::Argument`]'s, or `peers`.
    pub fn argument(&self) -> &'static str {
        match self {
            Self::Argument(e) => e.argument,
            Self::Peer { .. } => "peers",
        }
    }
}

impl fmt::Display for CommError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argument(e) => write!(f, "{e}"),
            Self::Peer {
                function,
                rank,
                cause,
            } => write!(
                f,
                "{function}: every rank of the group must reach this collective; on rank \
                 {rank}: {cause}"
            ),
        }
    }
}

impl std::error::Error for CommError {}

impl From<SparseAttnError> for CommError {
    fn from(e: SparseAttnError) -> Self {
        Self::Argument(e)
    }
}

/// For the attention ops that see a group only through
/// [`SequenceShards`](burn_sparse_attn::dsv::SequenceShards), whose errors are
/// [`SparseAttnError`]s: a peer's failure becomes one naming the `peers`.
impl From<CommError> for SparseAttnError {
    fn from(e: CommError) -> Self {
        match e {
            CommError::Argument(e) => e,
            CommError::Peer {
                function,
                rank,
                cause,
            } => SparseAttnError {
                function,
                argument: "peers",
                expected: "every rank of the group to reach this collective".into(),
                actual: format!("on rank {rank}: {cause}"),
            },
        }
    }
}
