//! dK and dV over the inverted index: every key accumulates over exactly the rows of the
//! query groups that selected it, so each output element has one writer.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

use super::UNITS;
use crate::kernel::cube::tiles::{has_plane_ops, head_offset, row_offset};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(super) fn dkdv_kernel<F: Float, I: Numeric>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    counts: &Tensor<I>,
    offsets: &Tensor<I>,
    lists: &Tensor<I>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    heads: u32,
    query_len: u32,
    key_len: u32,
    #[comptime] group_size: usize,
    #[comptime] key_block: usize,
    #[comptime] head_dim: usize,
    #[comptime] lanes: usize,
    #[comptime] unroll: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    // `lanes` neighbouring units of one plane share a key, each owning dims `lane + lanes·i`.
    let slot = ABSOLUTE_POS / lanes;
    let lane = ABSOLUTE_POS % lanes;
    let key_len = key_len as usize;
    let query_len = query_len as usize;
    if slot >= key_len * heads as usize * k.shape(0) {
        terminate!();
    }
    let key = slot % key_len;
    let h = (slot / key_len) % heads as usize;
    let b = slot / (key_len * heads as usize);
    let u = key / key_block;
    let per_lane = comptime!(head_dim / lanes);

    let mut k_part = Array::<f32>::new(per_lane);
    let mut v_part = Array::<f32>::new(per_lane);
    let mut dk_acc = Array::<f32>::new(per_lane);
    let mut dv_acc = Array::<f32>::new(per_lane);
    let mut q_part = Array::<f32>::new(per_lane);
    let mut do_part = Array::<f32>::new(per_lane);
    let k_base = row_offset(k, b, h, key);
    let v_base = row_offset(v, b, h, key);
    #[unroll(unroll)]
    for i in 0..per_lane {
        let d = lane + lanes * i;
        k_part[i] = f32::cast_from(k[k_base + d * k.stride(3)]);
        v_part[i] = f32::cast_from(v[v_base + d * v.stride(3)]);
        dk_acc[i] = 0.0f32;
        dv_acc[i] = 0.0f32;
    }
    let unit_at = row_offset(counts, b, h, u);
    let count = u32::cast_from(counts[unit_at]) as usize;
    let first = u32::cast_from(offsets[row_offset(offsets, b, h, u)]) as usize;
    let list_base = head_offset(lists, b, h);
    for n in 0..count {
        let g = u32::cast_from(lists[list_base + (first + n) * lists.stride(2)]) as usize;
        let mut row = g * group_size;
        let end = if row + group_size < query_len {
            row + group_size
        } else {
            query_len
        };
        while row < end {
            let q_base = row_offset(q, b, h, row);
            let do_base = row_offset(d_out, b, h, row);
            let mut score = f32::new(0.0);
            let mut dp = f32::new(0.0);
            #[unroll(unroll)]
            for i in 0..per_lane {
                let d = lane + lanes * i;
                q_part[i] = f32::cast_from(q[q_base + d * q.stride(3)]);
                do_part[i] = f32::cast_from(d_out[do_base + d * d_out.stride(3)]);
                score += q_part[i] * k_part[i];
                dp += do_part[i] * v_part[i];
            }
            let score = lane_sum(score, lanes);
            let dp = lane_sum(dp, lanes);
            let row_lse = lse[row_offset(lse, b, h, row)];
            let row_delta = delta[row_offset(delta, b, h, row)];
            let p = (score * scale - row_lse).exp();
            let ds = p * (dp - row_delta) * scale;
            #[unroll(unroll)]
            for i in 0..per_lane {
                dk_acc[i] += ds * q_part[i];
                dv_acc[i] += p * do_part[i];
            }
            row += 1;
        }
    }
    let dk_base = b * dk.stride(0) + h * dk.stride(1) + key * dk.stride(2);
    let dv_base = b * dv.stride(0) + h * dv.stride(1) + key * dv.stride(2);
    let (dk_step, dv_step) = (dk.stride(3), dv.stride(3));
    #[unroll(unroll)]
    for i in 0..per_lane {
        let d = lane + lanes * i;
        dk[dk_base + d * dk_step] = F::cast_from(dk_acc[i]);
        dv[dv_base + d * dv_step] = F::cast_from(dv_acc[i]);
    }
}

/// Sum over the `lanes` neighbouring units that share a key (a butterfly of plane shuffles;
/// nothing to do for one lane).
#[cube]
fn lane_sum(value: f32, #[comptime] lanes: usize) -> f32 {
    let mut sum = value;
    let steps = comptime!(lanes.trailing_zeros());
    #[unroll]
    for step in 0..steps {
        sum += plane_shuffle_xor(sum, 1u32 << step);
    }
    sum
}

/// Units sharing one key in the dK/dV kernel: as many as the plane is wide (at most 32) and
/// divide the head dim, where the device has plane shuffles; else one.
pub(super) fn dkdv_lanes(client: &cubecl::client::Client, head_dim: usize) -> usize {
    if !has_plane_ops(client) {
        return 1;
    }
    let width = (client.properties().hardware.plane_size_min as usize).clamp(1, 32);
    [32, 16, 8, 4, 2]
        .into_iter()
        .find(|&l| l <= width && head_dim.is_multiple_of(l) && (UNITS as usize).is_multiple_of(l))
        .unwrap_or(1)
}
