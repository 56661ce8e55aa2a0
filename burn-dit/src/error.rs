//! [`DitError`]: why a DiT forward pass, sampler or trainer call failed.

use std::fmt;

use burn_ctx_parallel::CommError;
use burn_sparse_attn::SparseAttnError;

/// Why a call of this crate failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DitError {
    /// A rejected argument, of this crate's functions or of the attention ops under them (the
    /// workspace's argument error).
    Argument(SparseAttnError),
    /// The group of ranks failed: a peer, or an argument the ranks disagree on.
    Comm(CommError),
}

impl DitError {
    /// The argument the error names (`peers` for a failed peer).
    pub fn argument(&self) -> &'static str {
        match self {
            Self::Argument(e) => e.argument,
            Self::Comm(e) => e.argument(),
        }
    }
}

impl fmt::Display for DitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argument(e) => write!(f, "{e}"),
            Self::Comm(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DitError {}

impl From<SparseAttnError> for DitError {
    fn from(e: SparseAttnError) -> Self {
        Self::Argument(e)
    }
}

impl From<CommError> for DitError {
    fn from(e: CommError) -> Self {
        Self::Comm(e)
    }
}

/// For this crate's code run inside a collective's callback (online sparse attention over
/// dual-scope clips), whose errors are [`CommError`]s.
impl From<DitError> for CommError {
    fn from(e: DitError) -> Self {
        match e {
            DitError::Argument(e) => CommError::Argument(e),
            DitError::Comm(e) => e,
        }
    }
}
