//! How the dQ kernel maps a query group onto a cube (a few units per row, each owning every
//! `lanes`-th dim, so a row's registers stay small at any head dim), and how a group's
//! flattened selection names its keys.

use burn::backend::TensorMetadata;
use burn_cubecl::cubecl;
use burn_cubecl::tensor::CubeTensor;
use cubecl::features::Plane;
use cubecl::prelude::*;

/// Largest query group one cube serves.
pub(crate) const MAX_GROUP: usize = 256;
/// Largest head dim the kernels take.
pub(crate) const MAX_HEAD_DIM: usize = 256;
/// Most keys in one shared tile (each unit keeps a tile's scores in registers).
const MAX_TILE_KEYS: usize = 32;

/// A cube's layout for one query group: `lanes` units per row, `tile` keys per shared tile,
/// and whether the kernels unroll their loops over dims and keys (see [`unrolls`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TilePlan {
    pub lanes: usize,
    pub tile: usize,
    pub unroll: bool,
}

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

impl TilePlan {
    /// The layout for `group_size` rows of `q`'s head dim on `q`'s device, where each row
    /// shares `score_arrays` partial dot products per key; `None` when the device's cube
    /// limits cannot hold one (then the reference body runs).
    pub(crate) fn new(q: &CubeTensor, group_size: usize, score_arrays: usize) -> Option<Self> {
        let head_dim = q.shape().dims::<4>()[3];
        if !(1..=MAX_GROUP).contains(&group_size) || !(1..=MAX_HEAD_DIM).contains(&head_dim) {
            return None;
        }
        let hardware = &q.client.properties().hardware;
        let max_units = hardware.max_units_per_cube as usize;
        let lanes = [4, 2, 1]
            .into_iter()
            .find(|&l| head_dim % l == 0 && group_size * l <= max_units)?;
        let bytes = |tile: usize| {
            4 * (2 * tile * head_dim
                + tile
                + score_arrays * group_size * Self::row_stride_of(tile, lanes))
        };
        let tile = [MAX_TILE_KEYS, 16, 8, 4, 2, 1]
            .into_iter()
            .find(|&t| bytes(t) <= hardware.max_shared_memory_size)?;
        Some(Self {
            lanes,
            tile,
            unroll: unrolls(&q.client),
        })
    }

    /// Units per cube.
    pub(crate) fn units(&self, group_size: usize) -> u32 {
        (group_size * self.lanes) as u32
    }

    /// Shared-memory stride between two rows' partial scores: padded by `lanes` so the rows
    /// of one plane fall in different banks.
    pub(crate) fn row_stride(&self) -> usize {
        Self::row_stride_of(self.tile, self.lanes)
    }

    fn row_stride_of(tile: usize, lanes: usize) -> usize {
        tile * lanes + lanes
    }
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

/// This unit's share (`row_part`, the row's dims `lane + lanes·i`) of the dot product of its
/// row with every key of the tile, stored for the row's other units to add up.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn lane_partials(
    row_part: &Array<f32>,
    tile_data: &Shared<[f32]>,
    partial: &mut Shared<[f32]>,
    local: usize,
    lane: usize,
    #[comptime] tile: usize,
    #[comptime] head_dim: usize,
    #[comptime] lanes: usize,
    #[comptime] row_stride: usize,
    #[comptime] unroll: bool,
) {
    let per_lane = comptime!(head_dim / lanes);
    #[unroll(unroll)]
    for j in 0..tile {
        let mut part = f32::new(0.0);
        #[unroll(unroll)]
        for i in 0..per_lane {
            part += row_part[i] * tile_data[j * head_dim + lane + lanes * i];
        }
        partial[local * row_stride + j * lanes + lane] = part;
    }
}

/// The whole dot product of row `local` with key `j` of the tile, from its units' partials.
#[cube]
pub(crate) fn row_score(
    partial: &Shared<[f32]>,
    local: usize,
    j: usize,
    #[comptime] lanes: usize,
    #[comptime] row_stride: usize,
    #[comptime] unroll: bool,
) -> f32 {
    let mut score = f32::new(0.0);
    #[unroll(unroll)]
    for l in 0..lanes {
        score += partial[local * row_stride + j * lanes + l];
    }
    score
}
