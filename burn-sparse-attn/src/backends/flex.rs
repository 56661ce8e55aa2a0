use burn::backend::Flex;

use crate::SparseAttnOps;

/// Flex runs the reference bodies.
impl SparseAttnOps for Flex {}
