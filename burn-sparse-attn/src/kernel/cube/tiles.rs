//! What the kernels share about the device, the tensors and the index: whether the device
//! has plane operations, whether register loops unroll there, where a (batch, head) or a
//! row starts in a tensor, and how a group's flattened selection names its keys.

use burn_cubecl::cubecl;
use cubecl::features::Plane;
use cubecl::prelude::*;

use super::matrix::MatrixPlan;
use crate::layout::ProblemShape;

/// Whether the device has plane (warp) operations: shuffles and the like.
pub(crate) fn has_plane_ops(client: &cubecl::client::Client) -> bool {
    client.properties().features.plane.contains(Plane::Ops)
}

/// Whether the kernels unroll their register loops on this device: yes on GPUs (the loop
/// arrays then live in registers); no on CPU adapters, recognised by their lack of plane
/// operations (lavapipe: LLVM's coroutine lowering of workgroup barriers takes minutes on
/// the unrolled kernels, and registers buy nothing there).
pub(crate) fn unrolls(client: &cubecl::client::Client) -> bool {
    has_plane_ops(client)
}

/// Key `p` of a group's flattened selection (`p / key_block`-th unit, `p % key_block`-th key
/// in it), or `key_len` when it lies past the end of a partial last block.
#[cube]
pub(crate) fn selected_key<I: Numeric>(
    index: &Tensor<I>,
    base: usize,
    p: usize,
    key_len: usize,
    #[comptime] key_block: usize,
) -> usize {
    let unit = u32::cast_from(index[base + (p / key_block) * index.stride(3)]) as usize;
    let key = unit * key_block + p % key_block;
    if key < key_len { key } else { key_len }
}

/// Where batch `b`, head `h` starts in a `[B, H, …]` tensor.
#[cube]
pub(crate) fn head_offset<E: CubePrimitive>(t: &Tensor<E>, b: usize, h: usize) -> usize {
    b * t.stride(0) + h * t.stride(1)
}

/// Where row `row` of batch `b`, head `h` starts in a `[B, H, S, …]` tensor.
#[cube]
pub(crate) fn row_offset<E: CubePrimitive>(t: &Tensor<E>, b: usize, h: usize, row: usize) -> usize {
    head_offset::<E>(t, b, h) + row * t.stride(2)
}

/// The launch grid of the kernels that give a cube to each (query group, head, batch) and a
/// plane to each 16 of the group's rows (the forward and dQ).
pub(crate) fn group_grid(shape: &ProblemShape, plan: MatrixPlan) -> (CubeCount, CubeDim) {
    (
        CubeCount::Static(
            shape.groups() as u32,
            shape.heads as u32,
            shape.batch as u32,
        ),
        CubeDim::new_1d(plan.units()),
    )
}
