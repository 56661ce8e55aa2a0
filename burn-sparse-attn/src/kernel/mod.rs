//! Native kernels, separate from the thin backend impls that call them.

#[cfg(feature = "flex")]
pub(crate) mod cpu;
pub(crate) mod topk;
