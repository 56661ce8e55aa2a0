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
    dst.clear();
    for_each_key_run(shape, units, |start, len| {
        dst.extend_from_slice(&src[start * d..(start + len) * d]);
    });
    dst.len() / d
}
