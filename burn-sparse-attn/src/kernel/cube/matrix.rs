//! The matrix steps of the tiled attention kernels, on either tile kind: tensor-core fragments
//! (`cmma`) where the device has matrix units for the stage dtype, scalar tiles elsewhere
//! (lavapipe, WGSL, f32 without TF32). The choice is comptime, so the same kernel structure
//! (gather, online softmax, output) is what CI tests on lavapipe and what runs on a GPU.
//!
//! A cube serves one query group with `planes` planes of [`PLANE`] units; plane `p` owns the
//! group's rows `p·FRAG .. (p+1)·FRAG`. Shared memory holds, per key tile:
//! - `k_tile`, `v_tile`: `[tile, padded_dim]` in the stage dtype (zero past the head dim and
//!   past the selection's end);
//! - `scores`: `[planes·FRAG, tile]` f32, also each plane's bounce buffer for its output
//!   fragments once the softmax has read it;
//! - `probs`: `[planes·FRAG, tile]` in the stage dtype;
//! - `row_scale`: one f32 per row (the softmax rescale, at the end the inverse row sum).
//!
//! On scalar tiles the two units of a row score its keys from its q in registers, and each
//! unit owns the output elements `lane + PLANE·i` of its plane's `[FRAG, padded_dim]` block; on tensor cores the plane owns `padded_dim / FRAG`
//! accumulator fragments and rescales them through its bounce buffer.

use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::DType;
use burn_cubecl::cubecl;
use cubecl::cmma::{self, MatrixIdent, MatrixLayout};
use cubecl::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;

use super::tiles::selected_key;
use crate::F32Precision;

/// Units per plane the kernels are laid out for (a CUDA warp).
pub(crate) const PLANE: usize = 32;
/// Rows of a fragment, and columns of an accumulator fragment.
pub(crate) const FRAG: usize = 16;
/// Static shared memory a CUDA kernel may declare.
const SHARED_LIMIT: usize = 48 * 1024;
/// Largest query group and head dim the kernels take (larger ones run the reference body).
const MAX_GROUP: usize = 256;
const MAX_HEAD_DIM: usize = 256;
/// Widest padded head dim on tensor cores: its accumulators and query fragments stay in
/// registers.
const MAX_TENSOR_CORE_DIM: usize = 128;

/// The element type of the shared tiles and fragments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Stage {
    /// f32 on scalar tiles.
    F32,
    /// The half input dtype itself on tensor cores (16×16×16 fragments).
    Half(DType),
    /// TF32 on tensor cores for f32 inputs (16×16×8 fragments).
    Tf32,
}

impl Stage {
    fn storage(&self) -> ElemType {
        match self {
            Stage::F32 => dtype_to_storage_type(DType::F32),
            Stage::Half(dtype) => dtype_to_storage_type(*dtype),
            Stage::Tf32 => ElemType::Float(FloatKind::TF32),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Stage::Half(_) => 2,
            Stage::F32 | Stage::Tf32 => 4,
        }
    }

    /// Depth of one fragment product (0 on scalar tiles).
    fn frag_k(&self) -> usize {
        match self {
            Stage::F32 => 0,
            Stage::Half(_) => 16,
            Stage::Tf32 => 8,
        }
    }

    fn mma_config(&self) -> Option<MmaConfig> {
        let elem = match self {
            Stage::F32 => return None,
            Stage::Half(DType::F16) => ElemType::Float(FloatKind::F16),
            Stage::Half(DType::BF16) => ElemType::Float(FloatKind::BF16),
            Stage::Half(_) => return None,
            Stage::Tf32 => ElemType::Float(FloatKind::TF32),
        };
        Some(MmaConfig {
            a_type: elem,
            b_type: elem,
            cd_type: ElemType::Float(FloatKind::F32),
            m: FRAG as u32,
            n: FRAG as u32,
            k: self.frag_k() as u32,
        })
    }
}

/// How one query group maps onto a cube and its shared tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatrixPlan {
    /// Planes per cube (`ceil(group_size / FRAG)`).
    pub planes: usize,
    /// Keys per shared tile.
    pub tile: usize,
    /// Head dim rounded up to whole fragments.
    pub padded_dim: usize,
    /// Shared tiles' and fragments' element type.
    pub stage: Stage,
    /// Fragments (true) or scalar tiles.
    pub tensor_cores: bool,
    /// Whether loops over registers unroll (GPUs; not CPU adapters, see `tiles::unrolls`).
    pub unroll: bool,
}

impl MatrixPlan {
    /// The layout for `group_size` rows of `head_dim` in `dtype` on a device with these
    /// properties (the rows a cube owns: a query group, or the keys of a dK/dV cube); `None`
    /// when no layout fits (then the reference body runs). `score_tiles` f32 score tiles share
    /// the cube's shared memory (the forward's scores; the dQ and dK/dV kernels' scores and
    /// `dO·vᵀ`), beside three f32 values per tile slot (validity and, in dK/dV, the rows'
    /// log-sum-exp and Δ).
    pub(crate) fn new(
        properties: &cubecl::ir::DeviceProperties,
        dtype: DType,
        group_size: usize,
        head_dim: usize,
        f32_precision: F32Precision,
        unroll: bool,
        score_tiles: usize,
    ) -> Option<Self> {
        let hardware = &properties.hardware;
        let planes = group_size.div_ceil(FRAG);
        if !(1..=MAX_GROUP).contains(&group_size)
            || !(1..=MAX_HEAD_DIM).contains(&head_dim)
            || planes * PLANE > hardware.max_units_per_cube as usize
        {
            return None;
        }
        let padded_dim = head_dim.next_multiple_of(FRAG);
        let wanted = match (dtype, f32_precision) {
            (DType::F16 | DType::BF16, _) => Stage::Half(dtype),
            (_, F32Precision::Tf32) => Stage::Tf32,
            _ => Stage::F32,
        };
        let warp =
            hardware.plane_size_min == PLANE as u32 && hardware.plane_size_max == PLANE as u32;
        let tensor_cores = warp
            && padded_dim <= MAX_TENSOR_CORE_DIM
            && wanted
                .mma_config()
                .is_some_and(|config| properties.features.matmul.cmma.contains(&config));
        let stage = if tensor_cores { wanted } else { Stage::F32 };
        let limit = hardware.max_shared_memory_size.min(SHARED_LIMIT);
        let rows = planes * FRAG;
        let bytes = |tile: usize| {
            2 * tile * padded_dim * stage.bytes()
                + rows * tile * (4 * score_tiles + stage.bytes())
                + 12 * tile
                + 4 * rows
        };
        // Tensor cores need whole fragments of keys, and a tile that can stage a plane's
        // queries; scalar tiles any even width (a plane's FRAG·tile scores split over PLANE).
        let tiles: &[usize] = if tensor_cores {
            &[32, 16]
        } else {
            &[32, 16, 8, 4, 2]
        };
        let tile = tiles.iter().copied().find(|&t| bytes(t) <= limit)?;
        Some(Self {
            planes,
            tile,
            padded_dim,
            stage,
            tensor_cores,
            unroll: unroll || tensor_cores,
        })
    }

    /// Units per cube.
    pub(crate) fn units(&self) -> u32 {
        (self.planes * PLANE) as u32
    }

    /// Fragment depth (0 on scalar tiles).
    pub(crate) fn frag_k(&self) -> usize {
        self.stage.frag_k()
    }

    /// Registers a unit holds for one left-hand row of the scalar score tiles (1 on tensor
    /// cores, where the rows are fragments).
    pub(crate) fn row_regs(&self, head_dim: usize) -> usize {
        if self.tensor_cores { 1 } else { head_dim }
    }

    /// Output elements a unit holds on scalar tiles (1 on tensor cores, where the output is
    /// fragments).
    pub(crate) fn output_regs(&self) -> usize {
        if self.tensor_cores {
            1
        } else {
            FRAG * self.padded_dim / PLANE
        }
    }

    /// The `#[define(F, FM, I)]` types of a kernel on inputs of `dtype` and an index of
    /// `index`: the input, the stage, the index.
    pub(crate) fn kernel_dtypes(&self, dtype: DType, index: DType) -> [ElemType; 3] {
        [
            dtype_to_storage_type(dtype),
            self.stage.storage(),
            dtype_to_storage_type(index),
        ]
    }
}

/// Loads keys `start .. start + tile` of a group's flattened selection into the shared K/V
/// tiles (in the stage dtype, zero past the head dim and past the end) and marks which slots
/// hold a key; every unit of the cube loads a share.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_key_tile<F: Float, FM: Float, I: Numeric>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    index: &Tensor<I>,
    k_tile: &mut Shared<[FM]>,
    v_tile: &mut Shared<[FM]>,
    valid: &mut Shared<[u32]>,
    k_base: usize,
    v_base: usize,
    index_base: usize,
    start: usize,
    total: usize,
    key_len: usize,
    #[comptime] key_block: usize,
    #[comptime] head_dim: usize,
    #[comptime] padded_dim: usize,
    #[comptime] tile: usize,
) {
    let unit = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let mut e = unit;
    while e < tile * padded_dim {
        let j = e / padded_dim;
        let d = e % padded_dim;
        let mut kv = f32::new(0.0);
        let mut vv = f32::new(0.0);
        #[allow(clippy::collapsible_if)]
        if start + j < total {
            if d < head_dim {
                let key = selected_key::<I>(index, index_base, start + j, key_len, key_block);
                if key < key_len {
                    kv = f32::cast_from(k[k_base + key * k.stride(2) + d * k.stride(3)]);
                    vv = f32::cast_from(v[v_base + key * v.stride(2) + d * v.stride(3)]);
                }
            }
        }
        k_tile[e] = FM::cast_from(kv);
        v_tile[e] = FM::cast_from(vv);
        e += threads;
    }
    let mut j = unit;
    while j < tile {
        let mut ok = u32::new(0);
        // Nested, not `&&`: a kernel evaluates both operands, and the index read must stay
        // behind the bounds check.
        #[allow(clippy::collapsible_if)]
        if start + j < total {
            if selected_key::<I>(index, index_base, start + j, key_len, key_block) < key_len {
                ok = 1u32;
            }
        }
        valid[j] = ok;
        j += threads;
    }
}

/// The plane's rows of `rows` (q, or dO) as the left operand of [`score_tile`]: `A`
/// fragments on tensor cores (staged through `staging`, a key tile free before the first
/// key tile), else this unit's row in `regs`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_rows<F: Float, FM: Float>(
    rows: &Tensor<F>,
    staging: &mut Shared<[FM]>,
    frags: &mut Sequence<cmma::Matrix<FM>>,
    regs: &mut Array<f32>,
    base: usize,
    group_start: usize,
    query_len: usize,
    plane: usize,
    lane: usize,
    #[comptime] group_size: usize,
    #[comptime] head_dim: usize,
    #[comptime] plan: MatrixPlan,
) {
    if comptime!(plan.tensor_cores) {
        load_row_fragments::<F, FM>(
            rows,
            staging,
            frags,
            base,
            group_start,
            query_len,
            plane,
            group_size,
            head_dim,
            plan.padded_dim,
            plan.planes,
            plan.frag_k(),
        );
    } else {
        load_row::<F>(
            rows,
            regs,
            base,
            group_start,
            query_len,
            plane,
            lane,
            group_size,
            head_dim,
            plan.unroll,
        );
    }
}

/// Zero output accumulators: fragments on tensor cores, this unit's elements otherwise.
#[cube]
pub(crate) fn init_output(
    o_frags: &mut Sequence<cmma::Matrix<f32>>,
    o_regs: &mut Array<f32>,
    #[comptime] plan: MatrixPlan,
) {
    if comptime!(plan.tensor_cores) {
        #[unroll]
        for _ in 0..comptime!(plan.padded_dim / FRAG) {
            o_frags.push(cmma::Matrix::<f32>::from_value(
                MatrixIdent::Accumulator,
                FRAG,
                FRAG,
                plan.frag_k(),
                MatrixLayout::Undefined,
                0.0,
            ));
        }
    } else {
        #[unroll(plan.unroll)]
        for i in 0..comptime!(plan.output_regs()) {
            o_regs[i] = 0.0f32;
        }
    }
}

/// Loads the plane's rows of `rows` (q, or dO) as `A` fragments, staging each plane's rows in
/// turn through `staging` (a key tile, free before the first key tile).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_row_fragments<F: Float, FM: Float>(
    q: &Tensor<F>,
    staging: &mut Shared<[FM]>,
    frags: &mut Sequence<cmma::Matrix<FM>>,
    q_base: usize,
    group_start: usize,
    query_len: usize,
    plane: usize,
    #[comptime] group_size: usize,
    #[comptime] head_dim: usize,
    #[comptime] padded_dim: usize,
    #[comptime] planes: usize,
    #[comptime] frag_k: usize,
) {
    let count = comptime!(padded_dim / frag_k);
    #[unroll]
    for _ in 0..count {
        frags.push(unsafe {
            cmma::Matrix::<FM>::uninitialized(
                MatrixIdent::A,
                FRAG,
                FRAG,
                frag_k,
                MatrixLayout::RowMajor,
            )
        });
    }
    let unit = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    #[unroll]
    for w in 0..planes {
        let mut e = unit;
        while e < FRAG * padded_dim {
            let local = w * FRAG + e / padded_dim;
            let d = e % padded_dim;
            let row = group_start + local;
            let mut value = f32::new(0.0);
            if is_row(local, row, query_len, group_size) && d < head_dim {
                value = f32::cast_from(q[q_base + row * q.stride(2) + d * q.stride(3)]);
            }
            staging[e] = FM::cast_from(value);
            e += threads;
        }
        sync_cube();
        if plane == w {
            #[unroll]
            for kk in 0..count {
                cmma::load(
                    frags.index_mut(kk),
                    staging.slice(kk * frag_k, FRAG * padded_dim),
                    padded_dim as u32,
                );
            }
        }
        sync_cube();
    }
}

/// Whether the group's row `local` (query `row`) exists: inside the group and the sequence.
#[cube]
pub(crate) fn is_row(
    local: usize,
    row: usize,
    query_len: usize,
    #[comptime] group_size: usize,
) -> bool {
    local < group_size && row < query_len
}

/// The plane's raw scores `q·kᵀ` against the key tile, into its rows of `scores`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn score_tile<FM: Float>(
    q_frags: &Sequence<cmma::Matrix<FM>>,
    q_row: &Array<f32>,
    k_tile: &Shared<[FM]>,
    scores: &mut Shared<[f32]>,
    plane: usize,
    lane: usize,
    #[comptime] head_dim: usize,
    #[comptime] plan: MatrixPlan,
) {
    let tile = comptime!(plan.tile);
    let padded_dim = comptime!(plan.padded_dim);
    let base = plane * FRAG * tile;
    if comptime!(plan.tensor_cores) {
        let frag_k = comptime!(plan.frag_k());
        #[unroll]
        for n in 0..comptime!(tile / FRAG) {
            let acc = cmma::Matrix::<f32>::from_value(
                MatrixIdent::Accumulator,
                FRAG,
                FRAG,
                frag_k,
                MatrixLayout::Undefined,
                0.0,
            );
            #[unroll]
            for kk in 0..comptime!(padded_dim / frag_k) {
                // kᵀ read column-major: B(d, j) = k_tile[j·padded_dim + d].
                let keys = cmma::Matrix::<FM>::from_slice(
                    MatrixIdent::B,
                    FRAG,
                    FRAG,
                    frag_k,
                    MatrixLayout::ColMajor,
                    k_tile.slice(n * FRAG * padded_dim + kk * frag_k, tile * padded_dim),
                    padded_dim as u32,
                );
                cmma::execute(q_frags.index(kk), &keys, &acc, &acc);
            }
            cmma::store(
                scores.slice_mut(base + n * FRAG, base + FRAG * tile),
                &acc,
                tile as u32,
                MatrixLayout::RowMajor,
            );
        }
    } else {
        // The two units of row `lane % FRAG` score its keys `lane / FRAG + 2·t` from the row's
        // q in registers; the rows of a plane read the same key at once.
        let local = plane * FRAG + lane % FRAG;
        let first = lane / FRAG;
        #[unroll(plan.unroll)]
        for t in 0..comptime!(tile / 2) {
            let j = first + 2 * t;
            let mut score = f32::new(0.0);
            #[unroll(plan.unroll)]
            for d in 0..head_dim {
                score += q_row[d] * f32::cast_from(k_tile[j * padded_dim + d]);
            }
            scores[local * tile + j] = score;
        }
    }
}

/// This unit's row of `q` (or dO) in registers for the scalar score tiles (units `lane` and
/// `lane + FRAG` share row `lane % FRAG` of the plane); zero past the group or sequence.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_row<F: Float>(
    q: &Tensor<F>,
    q_row: &mut Array<f32>,
    q_base: usize,
    group_start: usize,
    query_len: usize,
    plane: usize,
    lane: usize,
    #[comptime] group_size: usize,
    #[comptime] head_dim: usize,
    #[comptime] unroll: bool,
) {
    let local = plane * FRAG + lane % FRAG;
    let row = group_start + local;
    let active = is_row(local, row, query_len, group_size);
    #[unroll(unroll)]
    for d in 0..head_dim {
        let mut value = f32::new(0.0);
        if active {
            value = f32::cast_from(q[q_base + row * q.stride(2) + d * q.stride(3)]);
        }
        q_row[d] = value;
    }
}

/// One online-softmax step for the row this unit owns (units `lane < FRAG`): reads the
/// tile's scores, writes the tile's probabilities and the row's rescale factor, and updates
/// the row's running max and sum.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn softmax_step<FM: Float>(
    scores: &Shared<[f32]>,
    probs: &mut Shared<[FM]>,
    row_scale: &mut Shared<[f32]>,
    valid: &Shared<[u32]>,
    running_max: &mut f32,
    running_sum: &mut f32,
    scale: f32,
    plane: usize,
    lane: usize,
    #[comptime] tile: usize,
) {
    if lane < FRAG {
        let local = plane * FRAG + lane;
        let base = local * tile;
        let mut tile_max = f32::new(-1.0e30);
        for j in 0..tile {
            let score = scores[base + j] * scale;
            if valid[j] == 1u32 && score > tile_max {
                tile_max = score;
            }
        }
        let new_max = if tile_max > *running_max {
            tile_max
        } else {
            *running_max
        };
        let correction = (*running_max - new_max).exp();
        let mut sum = *running_sum * correction;
        for j in 0..tile {
            // Slots past the selection's end weigh nothing, not exp(0).
            let mut weight = f32::new(0.0);
            if valid[j] == 1u32 {
                weight = (scores[base + j] * scale - new_max).exp();
            }
            sum += weight;
            probs[base + j] = FM::cast_from(weight);
        }
        *running_max = new_max;
        *running_sum = sum;
        row_scale[local] = correction;
    }
}

/// The plane's output rows: `out = out·row_scale + probs·v_tile` over the tile (`out +=
/// probs·v_tile` without `rescale`).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn accumulate_output<FM: Float>(
    o_frags: &mut Sequence<cmma::Matrix<f32>>,
    o_regs: &mut Array<f32>,
    probs: &Shared<[FM]>,
    v_tile: &Shared<[FM]>,
    scores: &mut Shared<[f32]>,
    row_scale: &Shared<[f32]>,
    plane: usize,
    lane: usize,
    #[comptime] plan: MatrixPlan,
    #[comptime] rescale: bool,
) {
    let tile = comptime!(plan.tile);
    let padded_dim = comptime!(plan.padded_dim);
    let base = plane * FRAG * tile;
    if comptime!(plan.tensor_cores) {
        let frag_k = comptime!(plan.frag_k());
        #[unroll]
        for f in 0..comptime!(padded_dim / FRAG) {
            if comptime!(rescale) {
                scale_fragment_rows(o_frags, f, scores, row_scale, plane, lane, tile);
            }
            #[unroll]
            for kk in 0..comptime!(tile / frag_k) {
                let p = cmma::Matrix::<FM>::from_slice(
                    MatrixIdent::A,
                    FRAG,
                    FRAG,
                    frag_k,
                    MatrixLayout::RowMajor,
                    probs.slice(base + kk * frag_k, base + FRAG * tile),
                    tile as u32,
                );
                let values = cmma::Matrix::<FM>::from_slice(
                    MatrixIdent::B,
                    FRAG,
                    FRAG,
                    frag_k,
                    MatrixLayout::RowMajor,
                    v_tile.slice(kk * frag_k * padded_dim + f * FRAG, tile * padded_dim),
                    padded_dim as u32,
                );
                let acc = o_frags.index(f);
                cmma::execute(&p, &values, acc, acc);
            }
        }
    } else {
        #[unroll(plan.unroll)]
        for i in 0..comptime!(FRAG * padded_dim / PLANE) {
            let e = lane + PLANE * i;
            let local = plane * FRAG + e / padded_dim;
            let d = e % padded_dim;
            let mut value = o_regs[i];
            if comptime!(rescale) {
                value *= row_scale[local];
            }
            for j in 0..tile {
                value += f32::cast_from(probs[local * tile + j])
                    * f32::cast_from(v_tile[j * padded_dim + d]);
            }
            o_regs[i] = value;
        }
    }
}

/// Multiplies each row of a plane's accumulator fragment by its `row_scale`, through the
/// plane's bounce buffer (the fragment's layout is the device's own).
#[cube]
fn scale_fragment_rows(
    frags: &mut Sequence<cmma::Matrix<f32>>,
    #[comptime] f: usize,
    bounce: &mut Shared<[f32]>,
    row_scale: &Shared<[f32]>,
    plane: usize,
    lane: usize,
    #[comptime] tile: usize,
) {
    let base = plane * FRAG * tile;
    cmma::store(
        bounce.slice_mut(base, base + FRAG * tile),
        frags.index(f),
        tile as u32,
        MatrixLayout::RowMajor,
    );
    sync_cube();
    #[unroll]
    for i in 0..comptime!(FRAG * FRAG / PLANE) {
        let e = lane + PLANE * i;
        let r = e / FRAG;
        bounce[base + r * tile + e % FRAG] *= row_scale[plane * FRAG + r];
    }
    sync_cube();
    cmma::load_with_layout(
        frags.index_mut(f),
        bounce.slice(base, base + FRAG * tile),
        tile as u32,
        MatrixLayout::RowMajor,
    );
    sync_cube();
}

/// Writes the plane's output rows, each scaled by its `row_scale` (the inverse row sum).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_output<F: Float>(
    out: &mut Tensor<F>,
    o_frags: &mut Sequence<cmma::Matrix<f32>>,
    o_regs: &Array<f32>,
    bounce: &mut Shared<[f32]>,
    row_scale: &Shared<[f32]>,
    o_base: usize,
    group_start: usize,
    query_len: usize,
    plane: usize,
    lane: usize,
    #[comptime] group_size: usize,
    #[comptime] head_dim: usize,
    #[comptime] plan: MatrixPlan,
) {
    let tile = comptime!(plan.tile);
    let padded_dim = comptime!(plan.padded_dim);
    let (row_stride, dim_stride) = (out.stride(2), out.stride(3));
    if comptime!(plan.tensor_cores) {
        let base = plane * FRAG * tile;
        #[unroll]
        for f in 0..comptime!(padded_dim / FRAG) {
            cmma::store(
                bounce.slice_mut(base, base + FRAG * tile),
                o_frags.index(f),
                tile as u32,
                MatrixLayout::RowMajor,
            );
            sync_cube();
            #[unroll]
            for i in 0..comptime!(FRAG * FRAG / PLANE) {
                let e = lane + PLANE * i;
                let local = plane * FRAG + e / FRAG;
                let d = f * FRAG + e % FRAG;
                let row = group_start + local;
                if is_row(local, row, query_len, group_size) && d < head_dim {
                    out[o_base + row * row_stride + d * dim_stride] = F::cast_from(
                        bounce[base + (e / FRAG) * tile + e % FRAG] * row_scale[local],
                    );
                }
            }
            sync_cube();
        }
    } else {
        #[unroll(plan.unroll)]
        for i in 0..comptime!(FRAG * padded_dim / PLANE) {
            let e = lane + PLANE * i;
            let local = plane * FRAG + e / padded_dim;
            let d = e % padded_dim;
            let row = group_start + local;
            if is_row(local, row, query_len, group_size) && d < head_dim {
                out[o_base + row * row_stride + d * dim_stride] =
                    F::cast_from(o_regs[i] * row_scale[local]);
            }
        }
    }
}
