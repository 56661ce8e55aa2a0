use burn::backend::NdArray;

use crate::CollectiveOps;

/// Without Autodiff there is nothing to record.
impl CollectiveOps for NdArray {}
