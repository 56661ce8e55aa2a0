//! CPU kernels on plain `f32` slices: parallel over query groups (rayon), each group's
//! selected K/V rows gathered into contiguous tiles, products through the `gemm` crate Flex
//! itself uses, a vectorised softmax, and no `[S, S]` buffer anywhere.

mod backward;
mod forward;
mod math;
mod select;
mod topk;

pub(crate) use backward::BackwardInputs;
pub(crate) use backward::sparse_attention_backward;
pub(crate) use forward::sparse_attention_forward;
pub(crate) use select::select_critical_keys;

use crate::layout::ProblemShape;

/// The selected unit ids of group `group` of head `bh`.
fn selected_units<'a>(
    shape: &ProblemShape,
    index: &'a [i64],
    bh: usize,
    group: usize,
) -> &'a [i64] {
    let row = bh * shape.groups() + group;
    &index[row * shape.budget..(row + 1) * shape.budget]
}

/// Calls `f(first_key, len)` for each run of consecutive keys a group selected.
fn for_each_key_run(shape: &ProblemShape, units: &[i64], mut f: impl FnMut(usize, usize)) {
    for &unit in units {
        let start = unit as usize * shape.key_block;
        let end = (start + shape.key_block).min(shape.key_len);
        f(start, end - start);
    }
}

/// Copies the rows a group selected from `src: [S_k, D]` into `dst`, returning how many.
fn gather_rows(shape: &ProblemShape, units: &[i64], src: &[f32], dst: &mut Vec<f32>) -> usize {
    let d = shape.head_dim;
    if shape.key_block == 1 {
        // Single keys: one row per unit into a buffer sized once, with the head dim known at
        // compile time where it is a common one; this gather runs per group and head in both
        // the forward and the backward.
        dst.resize(units.len() * d, 0.0);
        match d {
            64 => copy_rows::<64>(units, src, dst),
            128 => copy_rows::<128>(units, src, dst),
            _ => dst
                .chunks_exact_mut(d)
                .zip(units)
                .for_each(|(row, &u)| row.copy_from_slice(&src[u as usize * d..][..d])),
        }
        return units.len();
    }
    dst.clear();
    for_each_key_run(shape, units, |start, len| {
        dst.extend_from_slice(&src[start * d..(start + len) * d]);
    });
    dst.len() / d
}

/// Rows `units` of `src: [S_k, D]` into consecutive rows of `dst`, for a head dim `D` known
/// at compile time.
fn copy_rows<const D: usize>(units: &[i64], src: &[f32], dst: &mut [f32]) {
    for (row, &u) in dst.chunks_exact_mut(D).zip(units) {
        let from: &[f32; D] = src[u as usize * D..][..D]
            .try_into()
            .expect("a row of D values");
        let to: &mut [f32; D] = row.try_into().expect("a row of D values");
        *to = *from;
    }
}
