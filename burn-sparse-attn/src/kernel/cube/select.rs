//! Fused critical-key selection as one CubeCL kernel: a cube per (few query groups, head,
//! batch) scores every key unit against each group's proxy on the fly and finds each group's
//! exact top-k by a radix select over the scores' bits (four 8-bit passes of a shared
//! histogram per group), then lists the winners in ascending id order. Scores are recomputed
//! per pass and never stored, so memory is the `[B, H, G, k]` index alone; the groups of a
//! cube share every low-rank key it reads, which is what bounds the kernel.

use crate::SelectionConfig;
use crate::layout::ProblemShape;
use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::tiles::{head_offset, unrolls};

/// Units per cube.
const THREADS: u32 = 128;
/// Largest low-rank width (each unit holds the proxies and a key row in registers).
pub(crate) const MAX_RANK: usize = 128;
/// Proxy values one unit holds: `groups per cube × rank` stays within this.
const PROXY_REGISTERS: usize = 64;

/// Query groups one cube serves at this rank.
fn groups_per_cube(rank: usize) -> usize {
    (PROXY_REGISTERS / rank).clamp(1, 4)
}

/// Whether the kernel serves this low-rank width.
pub(crate) fn supports(rank: usize) -> bool {
    (1..=MAX_RANK).contains(&rank)
}

/// The low-rank key of unit `u` (the mean over its keys) into `row`.
#[cube]
fn unit_row<F: Float>(
    k_lr: &Tensor<F>,
    base: usize,
    u: usize,
    key_len: usize,
    row: &mut Array<f32>,
    #[comptime] key_block: usize,
    #[comptime] rank: usize,
    #[comptime] unroll: bool,
) {
    let first = u * key_block;
    let step = k_lr.stride(3);
    if comptime!(key_block == 1) {
        let at = base + first * k_lr.stride(2);
        #[unroll(unroll)]
        for d in 0..rank {
            row[d] = f32::cast_from(k_lr[at + d * step]);
        }
    } else {
        let end = if first + key_block < key_len {
            first + key_block
        } else {
            key_len
        };
        #[unroll(unroll)]
        for d in 0..rank {
            row[d] = 0.0f32;
        }
        let mut key = first;
        while key < end {
            let at = base + key * k_lr.stride(2);
            #[unroll(unroll)]
            for d in 0..rank {
                row[d] += f32::cast_from(k_lr[at + d * step]);
            }
            key += 1;
        }
        // Divide (not multiply by a reciprocal): the reference's mean rounds the same way,
        // so equal scores tie here too.
        let count = f32::cast_from(end - first);
        #[unroll(unroll)]
        for d in 0..rank {
            row[d] /= count;
        }
    }
}

/// Group `p`'s score of a unit's low-rank key, as a key whose unsigned order is the float
/// order.
#[cube]
fn score_key(
    proxies: &Array<f32>,
    p: usize,
    row: &Array<f32>,
    #[comptime] rank: usize,
    #[comptime] unroll: bool,
) -> u32 {
    let mut score = f32::new(0.0);
    #[unroll(unroll)]
    for d in 0..rank {
        score += proxies[p * rank + d] * row[d];
    }
    let bits = u32::reinterpret(score);
    let flip = if bits >= 0x8000_0000u32 {
        0xFFFF_FFFFu32
    } else {
        0x8000_0000u32
    };
    bits ^ flip
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn select_kernel<F: Float, I: Numeric>(
    q_lr: &Tensor<F>,
    k_lr: &Tensor<F>,
    index: &mut Tensor<I>,
    query_len: u32,
    key_len: u32,
    budget: u32,
    #[comptime] group_size: usize,
    #[comptime] key_block: usize,
    #[comptime] rank: usize,
    #[comptime] per_cube: usize,
    #[comptime] unroll: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let first_group = CUBE_POS_X as usize * per_cube;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let key_len = key_len as usize;
    let query_len = query_len as usize;
    let units = key_len.div_ceil(key_block);
    let budget = budget as usize;
    let groups = index.shape(2);

    // Each group's proxy: the mean of its low-rank queries (zero for slots past the last
    // group, whose results are not written).
    let mut proxy_shared = Shared::<[f32]>::new_slice(per_cube * rank);
    let q_base = head_offset(q_lr, b, h);
    let mut e = unit;
    while e < per_cube * rank {
        let g = first_group + e / rank;
        let d = e % rank;
        let mut mean = f32::new(0.0);
        if g < groups {
            let first_row = g * group_size;
            let end_row = if first_row + group_size < query_len {
                first_row + group_size
            } else {
                query_len
            };
            let mut sum = f32::new(0.0);
            let mut row = first_row;
            while row < end_row {
                sum += f32::cast_from(q_lr[q_base + row * q_lr.stride(2) + d * q_lr.stride(3)]);
                row += 1;
            }
            mean = sum / f32::cast_from(end_row - first_row);
        }
        proxy_shared[e] = mean;
        e += threads;
    }
    sync_cube();
    let mut proxies = Array::<f32>::new(per_cube * rank);
    #[unroll(unroll)]
    for e in 0..per_cube * rank {
        proxies[e] = proxy_shared[e];
    }
    let mut row = Array::<f32>::new(rank);

    // Radix select of each group's budget-th largest key, 8 bits per pass from the top.
    let mut scan = Shared::<[u32]>::new_slice(THREADS as usize);
    let k_base = head_offset(k_lr, b, h);
    let hist = Shared::<[Atomic<u32>]>::new_slice(per_cube * 256);
    let mut state = Shared::<[u32]>::new_slice(per_cube * 2); // per group: [prefix, still needed]
    if unit < per_cube {
        state[2 * unit] = 0u32;
        state[2 * unit + 1] = budget as u32;
    }
    let mut mask = u32::new(0);
    for pass in 0..4u32 {
        let shift = 24u32 - 8u32 * pass;
        let mut bin = unit;
        while bin < per_cube * 256 {
            hist[bin].store(0u32);
            bin += threads;
        }
        sync_cube();
        let mut prefixes = Array::<u32>::new(per_cube);
        #[unroll(unroll)]
        for p in 0..per_cube {
            prefixes[p] = state[2 * p];
        }
        let mut u = unit;
        while u < units {
            unit_row::<F>(k_lr, k_base, u, key_len, &mut row, key_block, rank, unroll);
            #[unroll(unroll)]
            for p in 0..per_cube {
                let key = score_key(&proxies, p, &row, rank, unroll);
                if (key & mask) == prefixes[p] {
                    hist[p * 256 + ((key >> shift) & 255u32) as usize].fetch_add(1u32);
                }
            }
            u += threads;
        }
        sync_cube();
        // Which digit holds the `needed`-th largest: each unit sums two bins from the top,
        // a scan over units counts everything above, and the unit whose bins cross `needed`
        // records the digit.
        #[unroll(unroll)]
        for p in 0..per_cube {
            let needed = state[2 * p + 1];
            let high = p * 256 + 255 - 2 * unit;
            let high_count = hist[high].load();
            let pair = high_count + hist[high - 1].load();
            let through = inclusive_scan(&mut scan, pair, unit, THREADS as usize);
            let above = through - pair;
            if above < needed && through >= needed {
                let digit = (255 - 2 * unit) as u32;
                if above + high_count >= needed {
                    state[2 * p] = prefixes[p] | (digit << shift);
                    state[2 * p + 1] = needed - above;
                } else {
                    state[2 * p] = prefixes[p] | ((digit - 1u32) << shift);
                    state[2 * p + 1] = needed - above - high_count;
                }
            }
            sync_cube();
        }
        mask |= 255u32 << shift;
    }
    // Per group, `threshold` is the budget-th largest key; `ties` of the units equal to it
    // are taken, the lowest ids first.
    let mut thresholds = Array::<u32>::new(per_cube);
    let mut ties = Array::<u32>::new(per_cube);
    let mut written = Array::<u32>::new(per_cube);
    let mut ties_taken = Array::<u32>::new(per_cube);
    #[unroll(unroll)]
    for p in 0..per_cube {
        thresholds[p] = state[2 * p];
        ties[p] = state[2 * p + 1];
        written[p] = 0u32;
        ties_taken[p] = 0u32;
    }

    // Ascending compaction, a chunk of `threads` units at a time: a shared-memory scan of
    // (winners, ties) counts gives every winner its slot, so no unit walks the chunk alone.
    let out_step = index.stride(3);
    let mut chunk = 0usize;
    while chunk < units {
        let u = chunk + unit;
        if u < units {
            unit_row::<F>(k_lr, k_base, u, key_len, &mut row, key_block, rank, unroll);
        }
        #[unroll(unroll)]
        for p in 0..per_cube {
            // Low 16 bits count winners above the threshold, high 16 bits ties (≤ THREADS each).
            let mut packed = u32::new(0);
            if u < units {
                let key = score_key(&proxies, p, &row, rank, unroll);
                if key > thresholds[p] {
                    packed = 1u32;
                } else if key == thresholds[p] {
                    packed = 1u32 << 16u32;
                }
            }
            let inclusive = inclusive_scan(&mut scan, packed, unit, THREADS as usize);
            let before = inclusive - packed;
            let total = scan[THREADS as usize - 1];
            let ties_left = ties[p] - ties_taken[p];
            let ties_before = before >> 16u32;
            let ties_placed = if ties_before < ties_left {
                ties_before
            } else {
                ties_left
            };
            let take = packed == 1u32 || (packed == (1u32 << 16u32) && ties_before < ties_left);
            let g = first_group + p;
            if take && g < groups {
                let slot = written[p] + (before & 0xFFFFu32) + ties_placed;
                let out_base = b * index.stride(0) + h * index.stride(1) + g * index.stride(2);
                index[out_base + slot as usize * out_step] = I::cast_from(u as u32);
            }
            let chunk_ties = total >> 16u32;
            let chunk_ties_taken = if chunk_ties < ties_left {
                chunk_ties
            } else {
                ties_left
            };
            written[p] += (total & 0xFFFFu32) + chunk_ties_taken;
            ties_taken[p] += chunk_ties_taken;
            sync_cube();
        }
        chunk += threads;
    }
}

/// Inclusive prefix sum of one value per unit over the cube (Hillis–Steele in shared
/// memory); leaves the sums in `scan`, the total in its last slot.
#[cube]
fn inclusive_scan(
    scan: &mut Shared<[u32]>,
    value: u32,
    unit: usize,
    #[comptime] threads: usize,
) -> u32 {
    scan[unit] = value;
    sync_cube();
    let mut offset = 1usize;
    while offset < threads {
        let mut add = u32::new(0);
        if unit >= offset {
            add = scan[unit - offset];
        }
        sync_cube();
        scan[unit] += add;
        sync_cube();
        offset *= 2;
    }
    scan[unit]
}

/// Launches the selection kernel: `q_lr: [B, H, S_q, r]`, `k_lr: [B, H, S_k, r]` →
/// `[B, H, G, budget]` unit ids of `index_dtype`, ascending. `r` must pass [`supports`].
pub(crate) fn select_critical_keys(
    q_lr: CubeTensor,
    k_lr: CubeTensor,
    selection: SelectionConfig,
    index_dtype: DType,
) -> CubeTensor {
    let (q_lr, k_lr) = (into_contiguous(q_lr), into_contiguous(k_lr));
    let shape = ProblemShape::of_selection(&q_lr.shape(), &k_lr.shape(), &selection);
    let groups = shape.groups();
    let client = q_lr.client.clone();
    let index = empty_device_dtype(
        client.clone(),
        q_lr.device.clone(),
        Shape::new([shape.batch, shape.heads, groups, shape.budget]),
        index_dtype,
    );
    let dtypes = [
        dtype_to_storage_type(q_lr.dtype),
        dtype_to_storage_type(index_dtype),
    ];
    // One group per cube where loops stay rolled: the per-group loops hold barriers.
    let unroll = unrolls(&client);
    let per_cube = if unroll {
        groups_per_cube(shape.head_dim)
    } else {
        1
    };
    select_kernel::launch(
        &client,
        CubeCount::Static(
            groups.div_ceil(per_cube) as u32,
            shape.heads as u32,
            shape.batch as u32,
        ),
        CubeDim::new_1d(THREADS),
        q_lr.into_tensor_arg(),
        k_lr.into_tensor_arg(),
        index.clone().into_tensor_arg(),
        shape.query_len as u32,
        shape.key_len as u32,
        shape.budget as u32,
        shape.group_size,
        shape.key_block,
        shape.head_dim,
        per_cube,
        unroll,
        dtypes,
    );
    index
}
