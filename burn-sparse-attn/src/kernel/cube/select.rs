//! Fused critical-key selection as one CubeCL kernel: a cube per (query group, head, batch)
//! scores every key unit against the group's proxy on the fly and finds the exact top-k by a
//! radix select over the scores' bits (four 8-bit passes of a shared histogram), then lists
//! the winners in ascending id order. Scores are recomputed per pass and never stored, so
//! memory is the `[B, H, G, k]` index alone.

use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Units per cube.
const THREADS: u32 = 128;
/// Largest low-rank width (the proxy lives in shared memory).
pub(crate) const MAX_RANK: usize = 128;

/// Whether the kernel serves this low-rank width.
pub(crate) fn supports(rank: usize) -> bool {
    (1..=MAX_RANK).contains(&rank)
}

/// A unit's score — the proxy's dot product with the mean low-rank key of the unit — as a
/// key whose unsigned order is the float order.
#[cube]
fn unit_key<F: Float>(k_lr: &Tensor<F>, base: usize, proxy: &Shared<[f32]>, u: usize, key_len: usize, #[comptime] key_block: usize, #[comptime] rank: usize) -> u32 {
    let first = u * key_block;
    let end = if first + key_block < key_len { first + key_block } else { key_len };
    let mut score = f32::new(0.0);
    for d in 0..rank {
        let mut sum = f32::new(0.0);
        let mut key = first;
        while key < end {
            sum += f32::cast_from(k_lr[base + key * k_lr.stride(2) + d * k_lr.stride(3)]);
            key += 1;
        }
        score += proxy[d] * (sum / f32::cast_from(end - first));
    }
    let bits = u32::reinterpret(score);
    let flip = if bits >= 0x8000_0000u32 { 0xFFFF_FFFFu32 } else { 0x8000_0000u32 };
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
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let g = CUBE_POS_X as usize;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let key_len = key_len as usize;
    let units = key_len.div_ceil(key_block);
    let budget = budget as usize;

    // The group's proxy: the mean of its low-rank queries.
    let mut proxy = Shared::<[f32]>::new_slice(rank);
    let first_row = g * group_size;
    let end_row = if first_row + group_size < query_len as usize { first_row + group_size } else { query_len as usize };
    let q_base = b * q_lr.stride(0) + h * q_lr.stride(1);
    let mut d = unit;
    while d < rank {
        let mut sum = f32::new(0.0);
        let mut row = first_row;
        while row < end_row {
            sum += f32::cast_from(q_lr[q_base + row * q_lr.stride(2) + d * q_lr.stride(3)]);
            row += 1;
        }
        proxy[d] = sum / f32::cast_from(end_row - first_row);
        d += threads;
    }
    sync_cube();

    // Radix select of the budget-th largest key, 8 bits per pass from the top.
    let k_base = b * k_lr.stride(0) + h * k_lr.stride(1);
    let hist = Shared::<[Atomic<u32>]>::new_slice(256usize);
    let mut state = Shared::<[u32]>::new_slice(2usize); // [prefix, still needed]
    if unit == 0 {
        state[0] = 0u32;
        state[1] = budget as u32;
    }
    let mut mask = u32::new(0);
    for pass in 0..4u32 {
        let shift = 24u32 - 8u32 * pass;
        let mut bin = unit;
        while bin < 256usize {
            hist[bin].store(0u32);
            bin += threads;
        }
        sync_cube();
        let prefix = state[0];
        let mut u = unit;
        while u < units {
            let key = unit_key::<F>(k_lr, k_base, &proxy, u, key_len, key_block, rank);
            if (key & mask) == prefix {
                hist[((key >> shift) & 255u32) as usize].fetch_add(1u32);
            }
            u += threads;
        }
        sync_cube();
        if unit == 0 {
            let needed = state[1];
            let mut above = u32::new(0);
            let mut digit = u32::new(0);
            let mut found = false;
            let mut bin = 256u32;
            while bin > 0u32 && !found {
                bin -= 1u32;
                let count = hist[bin as usize].load();
                if above + count >= needed {
                    digit = bin;
                    found = true;
                } else {
                    above += count;
                }
            }
            state[0] = prefix | (digit << shift);
            state[1] = needed - above;
        }
        sync_cube();
        mask |= 255u32 << shift;
    }
    // `threshold` is the budget-th largest key; `ties` of the units equal to it are taken,
    // the lowest ids first.
    let threshold = state[0];
    let ties = state[1];

    // Ascending compaction, a chunk of `threads` units at a time.
    let mut flags = Shared::<[u32]>::new_slice(THREADS as usize);
    let out_base = b * index.stride(0) + h * index.stride(1) + g * index.stride(2);
    let out_step = index.stride(3);
    let mut written = u32::new(0);
    let mut ties_taken = u32::new(0);
    let mut chunk = 0usize;
    while chunk < units {
        let u = chunk + unit;
        let mut flag = u32::new(0);
        if u < units {
            let key = unit_key::<F>(k_lr, k_base, &proxy, u, key_len, key_block, rank);
            if key > threshold {
                flag = 1u32;
            } else if key == threshold {
                flag = 2u32;
            }
        }
        flags[unit] = flag;
        sync_cube();
        if unit == 0 {
            for i in 0..threads {
                let f = flags[i];
                let take = f == 1u32 || (f == 2u32 && ties_taken < ties);
                if f == 2u32 && take {
                    ties_taken += 1u32;
                }
                if take {
                    index[out_base + written as usize * out_step] = I::cast_from((chunk + i) as u32);
                    written += 1u32;
                }
            }
        }
        sync_cube();
        chunk += threads;
    }
}

/// Launches the selection kernel: `q_lr: [B, H, S_q, r]`, `k_lr: [B, H, S_k, r]` →
/// `[B, H, G, budget]` unit ids of `index_dtype`, ascending. `r` must pass [`supports`].
pub(crate) fn select_critical_keys(q_lr: CubeTensor, k_lr: CubeTensor, group_size: usize, key_block: usize, budget: usize, index_dtype: DType) -> CubeTensor {
    let (q_lr, k_lr) = (into_contiguous(q_lr), into_contiguous(k_lr));
    let [batch, heads, query_len, rank] = q_lr.shape().dims::<4>();
    let key_len = k_lr.shape().dims::<4>()[2];
    let groups = query_len.div_ceil(group_size);
    let client = q_lr.client.clone();
    let index = empty_device_dtype(client.clone(), q_lr.device.clone(), Shape::new([batch, heads, groups, budget]), index_dtype);
    let dtypes = [dtype_to_storage_type(q_lr.dtype), dtype_to_storage_type(index_dtype)];
    select_kernel::launch(
        &client,
        CubeCount::Static(groups as u32, heads as u32, batch as u32),
        CubeDim::new_1d(THREADS),
        q_lr.into_tensor_arg(),
        k_lr.into_tensor_arg(),
        index.clone().into_tensor_arg(),
        query_len as u32,
        key_len as u32,
        budget as u32,
        group_size,
        key_block,
        rank,
        dtypes,
    );
    index
}
