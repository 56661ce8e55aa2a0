use burn_cubecl::CubeBackend;

use crate::CollectiveOps;

/// Without Autodiff there is nothing to record.
impl CollectiveOps for CubeBackend {}
