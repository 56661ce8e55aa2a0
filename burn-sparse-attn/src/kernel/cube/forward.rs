//! Sparse attention forward as one CubeCL kernel: a cube per (query group, head, batch), a
//! unit per query row. The group's selected keys stream through shared memory in tiles that
//! every row of the group reuses; each row keeps an online softmax and an f32 accumulator.

use burn::backend::TensorMetadata;
use burn::backend::cubecl::dtype_to_storage_type;
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

/// Largest query group one cube serves (a unit per row).
pub(crate) const MAX_GROUP: usize = 256;
/// Largest head dim (the per-row registers hold one row of q and of the output).
pub(crate) const MAX_HEAD_DIM: usize = 256;
/// Shared-memory budget of one K and one V tile, in f32 elements each (8 KiB each: WebGPU's
/// default 16 KiB workgroup storage holds both).
pub(crate) const TILE_ELEMS: usize = 2048;

/// Whether the kernel serves these shapes (else the reference body runs).
pub(crate) fn supports(group_size: usize, head_dim: usize) -> bool {
    (1..=MAX_GROUP).contains(&group_size) && (1..=MAX_HEAD_DIM).contains(&head_dim)
}

/// Key `p` of a group's flattened selection (`p / key_block`-th unit, `p % key_block`-th key
/// in it), or `key_len` when it lies past the end of a partial last block.
#[cube]
pub(crate) fn selected_key<I: Numeric>(index: &Tensor<I>, base: usize, p: usize, key_len: usize, #[comptime] key_block: usize) -> usize {
    let unit = u32::cast_from(index[base + (p / key_block) * index.stride(3)]) as usize;
    let key = unit * key_block + p % key_block;
    if key < key_len { key } else { key_len }
}

/// Loads keys `start .. start + tile` of a group's flattened selection into the shared K/V
/// tiles (as f32, zero past the end) and marks which slots hold a key; every unit of the
/// cube loads a share.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_tile<F: Float, I: Numeric>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    index: &Tensor<I>,
    k_tile: &mut Shared<[f32]>,
    v_tile: &mut Shared<[f32]>,
    valid: &mut Shared<[u32]>,
    k_base: usize,
    v_base: usize,
    index_base: usize,
    start: usize,
    total: usize,
    key_len: usize,
    #[comptime] key_block: usize,
    #[comptime] head_dim: usize,
    #[comptime] tile: usize,
) {
    let unit = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let mut e = unit;
    while e < tile * head_dim {
        let j = e / head_dim;
        let d = e % head_dim;
        let mut kv = f32::new(0.0);
        let mut vv = f32::new(0.0);
        if start + j < total {
            let key = selected_key::<I>(index, index_base, start + j, key_len, key_block);
            if key < key_len {
                kv = f32::cast_from(k[k_base + key * k.stride(2) + d * k.stride(3)]);
                vv = f32::cast_from(v[v_base + key * v.stride(2) + d * v.stride(3)]);
            }
        }
        k_tile[e] = kv;
        v_tile[e] = vv;
        e += threads;
    }
    let mut j = unit;
    while j < tile {
        let mut ok = u32::new(0);
        if start + j < total {
            if selected_key::<I>(index, index_base, start + j, key_len, key_block) < key_len {
                ok = 1u32;
            }
        }
        valid[j] = ok;
        j += threads;
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn sparse_forward_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    index: &Tensor<I>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    scale: f32,
    query_len: u32,
    key_len: u32,
    budget: u32,
    #[comptime] group_size: usize,
    #[comptime] key_block: usize,
    #[comptime] head_dim: usize,
    #[comptime] tile: usize,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let g = CUBE_POS_X as usize;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let unit = UNIT_POS_X as usize;
    let key_len = key_len as usize;
    let row = g * group_size + unit;
    let active = row < query_len as usize;

    // This row's scaled query and its running output, in f32.
    let mut q_row = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let q_base = b * q.stride(0) + h * q.stride(1) + row * q.stride(2);
    for d in 0..head_dim {
        let mut value = f32::new(0.0);
        if active {
            value = f32::cast_from(q[q_base + d * q.stride(3)]) * scale;
        }
        q_row[d] = value;
        acc[d] = 0.0f32;
    }

    let mut k_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut v_tile = Shared::<[f32]>::new_slice(tile * head_dim);
    let mut valid = Shared::<[u32]>::new_slice(tile);
    let k_base = b * k.stride(0) + h * k.stride(1);
    let v_base = b * v.stride(0) + h * v.stride(1);
    let index_base = b * index.stride(0) + h * index.stride(1) + g * index.stride(2);
    let total = budget as usize * key_block;

    let mut running_max = f32::new(-1.0e30);
    let mut running_sum = f32::new(0.0);
    let mut start = 0usize;
    while start < total {
        load_tile::<F, I>(k, v, index, &mut k_tile, &mut v_tile, &mut valid, k_base, v_base, index_base, start, total, key_len, key_block, head_dim, tile);
        sync_cube();

        if active {
            for j in 0..tile {
                if valid[j] == 1u32 {
                    let mut score = f32::new(0.0);
                    for d in 0..head_dim {
                        score += q_row[d] * k_tile[j * head_dim + d];
                    }
                    let new_max = if score > running_max { score } else { running_max };
                    let correction = (running_max - new_max).exp();
                    let weight = (score - new_max).exp();
                    running_sum = running_sum * correction + weight;
                    for d in 0..head_dim {
                        acc[d] = acc[d] * correction + weight * v_tile[j * head_dim + d];
                    }
                    running_max = new_max;
                }
            }
        }
        sync_cube();
        start += tile;
    }

    if active {
        let inv = 1.0f32 / running_sum;
        let o_base = b * out.stride(0) + h * out.stride(1) + row * out.stride(2);
        let o_step = out.stride(3);
        for d in 0..head_dim {
            out[o_base + d * o_step] = F::cast_from(acc[d] * inv);
        }
        let at = b * lse.stride(0) + h * lse.stride(1) + row * lse.stride(2);
        lse[at] = running_max + running_sum.ln();
    }
}

/// Launches the forward kernel: `q, k, v: [B, H, S, D]`, `index: [B, H, G, k]` →
/// (output like `q`, f32 log-sum-exp `[B, H, S_q]`). Shapes must pass [`supports`].
pub(crate) fn sparse_attention_forward(q: CubeTensor, k: CubeTensor, v: CubeTensor, index: CubeTensor, group_size: usize, key_block: usize, scale: f64) -> (CubeTensor, CubeTensor) {
    let (q, k, v, index) = (into_contiguous(q), into_contiguous(k), into_contiguous(v), into_contiguous(index));
    let [batch, heads, query_len, head_dim] = q.shape().dims::<4>();
    let key_len = k.shape().dims::<4>()[2];
    let [_, _, groups, budget] = index.shape().dims::<4>();
    let client = q.client.clone();
    let out = empty_device_dtype(client.clone(), q.device.clone(), q.shape(), q.dtype);
    let lse = empty_device_dtype(client.clone(), q.device.clone(), Shape::new([batch, heads, query_len]), DType::F32);
    let tile = (TILE_ELEMS / head_dim).max(1);
    let dtypes = [dtype_to_storage_type(q.dtype), dtype_to_storage_type(index.dtype)];
    sparse_forward_kernel::launch(
        &client,
        CubeCount::Static(groups as u32, heads as u32, batch as u32),
        CubeDim::new_1d(group_size as u32),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        index.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        scale as f32,
        query_len as u32,
        key_len as u32,
        budget as u32,
        group_size,
        key_block,
        head_dim,
        tile,
        dtypes,
    );
    (out, lse)
}
