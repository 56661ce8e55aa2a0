use rayon::prelude::*;

use super::math::{Mat, exp_shifted, matmul, max};
use super::{gather_rows, selected_units};
use crate::layout::ProblemShape;

/// Per-thread scratch: the gathered K and V tiles, the group's scores and row sums.
#[derive(Default)]
struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
    sums: Vec<f32>,
}

/// Sparse attention forward on `[B·H, S, D]` buffers: writes `out` (`[B·H, S_q, D]`) and
/// `lse` (`[B·H, S_q]`).
pub(crate) fn sparse_attention_forward(
    shape: ProblemShape,
    [q, k, v]: [&[f32]; 3],
    index: &[i64],
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let (sq, sk, d, g) = (
        shape.query_len,
        shape.key_len,
        shape.head_dim,
        shape.group_size,
    );
    out.par_chunks_mut(sq * d)
        .zip(lse.par_chunks_mut(sq))
        .enumerate()
        .for_each(|(bh, (out, lse))| {
            let kv = [&k[bh * sk * d..][..sk * d], &v[bh * sk * d..][..sk * d]];
            out.par_chunks_mut(g * d)
                .zip(lse.par_chunks_mut(g))
                .enumerate()
                .for_each_init(Scratch::default, |scratch, (group, (out, lse))| {
                    let q = &q[(bh * sq + group * g) * d..][..lse.len() * d];
                    let units = selected_units(&shape, index, bh, group);
                    attend_group(shape, scratch, q, kv, units, scale, out, lse);
                });
        });
}

/// One query group against its gathered keys: flash-style maths on a tile that fits.
#[allow(clippy::too_many_arguments)]
fn attend_group(
    shape: ProblemShape,
    scratch: &mut Scratch,
    q: &[f32],
    [k, v]: [&[f32]; 2],
    units: &[i64],
    scale: f32,
    out: &mut [f32],
    lse: &mut [f32],
) {
    let d = shape.head_dim;
    let rows = lse.len();
    let n = gather_rows(&shape, units, k, &mut scratch.keys);
    gather_rows(&shape, units, v, &mut scratch.values);
    scratch.scores.resize(rows * n, 0.0);
    scratch.sums.clear();

    // S = Q·Kᵀ unscaled: the scale folds into the exponent.
    matmul(
        &mut scratch.scores,
        Mat::rows(q, rows, d),
        Mat::transposed(&scratch.keys, d, n),
        1.0,
        false,
    );
    for (row, lse) in scratch.scores.chunks_exact_mut(n).zip(lse.iter_mut()) {
        let shift = max(row) * scale;
        let sum = exp_shifted(row, scale, shift);
        *lse = shift + sum.ln();
        scratch.sums.push(sum);
    }
    // O = P·V, each row then divided by its softmax sum.
    matmul(
        out,
        Mat::rows(&scratch.scores, rows, n),
        Mat::rows(&scratch.values, n, d),
        1.0,
        false,
    );
    for (out, sum) in out.chunks_exact_mut(d).zip(&scratch.sums) {
        let inv = 1.0 / sum;
        out.iter_mut().for_each(|x| *x *= inv);
    }
}
