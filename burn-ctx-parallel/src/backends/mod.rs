//! One file per backend: the plain backends pass `received` through; Autodiff records the
//! reverse exchange.

mod autodiff;
#[cfg(feature = "cube")]
mod cube;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "ndarray")]
mod ndarray;
