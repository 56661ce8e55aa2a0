//! The Tensor-level API, one file per public function: each validates every argument, then
//! dispatches to the backend op.

mod attention;
pub(crate) mod checks;
mod fallback;
mod select;

pub(crate) use attention::run_forward;
pub use attention::{SparseAttentionOptions, SparseAttentionOutput, sparse_attention};
pub use fallback::DenseFallback;
pub use select::{SelectionConfig, select_critical_keys};
