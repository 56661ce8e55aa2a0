//! Native kernels, separate from the thin backend impls that call them.

#[cfg(feature = "flex")]
pub(crate) mod cpu;
#[cfg(feature = "cube")]
pub(crate) mod cube;
