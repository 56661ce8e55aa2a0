use burn::backend::NdArray;

use crate::SparseAttnOps;

/// NdArray runs the reference bodies.
impl SparseAttnOps for NdArray {}
