use rayon::prelude::*;

use super::math::{Mat, exp_shifted, matmul};
use super::{for_each_key_run, gather_rows, selected_units};
use crate::layout::ProblemShape;

/// Per-thread scratch of the backward pass.
#[derive(Default)]
struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    probs: Vec<f32>,
    dprobs: Vec<f32>,
    delta: Vec<f32>,
    dkeys: Vec<f32>,
    dvalues: Vec<f32>,
}

/// Inputs of the backward pass, all `[B·H, S, D]` (or `[B·H, S_q]` for `lse`).
pub(crate) struct BackwardInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub out: &'a [f32],
    pub lse: &'a [f32],
    pub grad_out: &'a [f32],
    pub index: &'a [i64],
}

/// Sparse attention backward: writes `dq` (`[B·H, S_q, D]`), `dk` and `dv` (`[B·H, S_k, D]`).
///
/// Parallel over heads: a head owns its dK/dV rows, so groups of one head accumulate into
/// them in turn, without atomics.
pub(crate) fn sparse_attention_backward(
    shape: ProblemShape,
    x: BackwardInputs<'_>,
    scale: f32,
    [dq, dk, dv]: [&mut [f32]; 3],
) {
    let (sq, sk, d, g) = (
        shape.query_len,
        shape.key_len,
        shape.head_dim,
        shape.group_size,
    );
    dq.par_chunks_mut(sq * d)
        .zip(dk.par_chunks_mut(sk * d))
        .zip(dv.par_chunks_mut(sk * d))
        .enumerate()
        .for_each_init(Scratch::default, |s, (bh, ((dq, dk), dv))| {
            dk.fill(0.0);
            dv.fill(0.0);
            let q_rows = bh * sq * d..(bh + 1) * sq * d;
            let k_rows = bh * sk * d..(bh + 1) * sk * d;
            let (q, out, d_out) = (
                &x.q[q_rows.clone()],
                &x.out[q_rows.clone()],
                &x.grad_out[q_rows],
            );
            let (k, v) = (&x.k[k_rows.clone()], &x.v[k_rows]);
            let lse = &x.lse[bh * sq..(bh + 1) * sq];
            for (group, dq) in dq.chunks_mut(g * d).enumerate() {
                let rows = dq.len() / d;
                let span = group * g * d..(group * g + rows) * d;
                let units = selected_units(&shape, x.index, bh, group);
                let n = gather_rows(&shape, units, k, &mut s.keys);
                gather_rows(&shape, units, v, &mut s.values);
                let (q, out, d_out) = (&q[span.clone()], &out[span.clone()], &d_out[span]);
                let lse = &lse[group * g..group * g + rows];

                // P = e^(scale·Q·Kᵀ − lse), recomputed rather than stored.
                s.probs.resize(rows * n, 0.0);
                matmul(
                    &mut s.probs,
                    Mat::rows(q, rows, d),
                    Mat::transposed(&s.keys, d, n),
                    1.0,
                    false,
                );
                for (row, &lse) in s.probs.chunks_exact_mut(n).zip(lse) {
                    exp_shifted(row, scale, lse);
                }
                // dP = dO·Vᵀ; Δ_i = Σ_d dO_id·O_id; dS = P ∘ (dP − Δ).
                s.dprobs.resize(rows * n, 0.0);
                matmul(
                    &mut s.dprobs,
                    Mat::rows(d_out, rows, d),
                    Mat::transposed(&s.values, d, n),
                    1.0,
                    false,
                );
                s.delta.clear();
                s.delta.extend(
                    d_out
                        .chunks_exact(d)
                        .zip(out.chunks_exact(d))
                        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()),
                );
                for ((ds, p), delta) in s
                    .dprobs
                    .chunks_exact_mut(n)
                    .zip(s.probs.chunks_exact(n))
                    .zip(&s.delta)
                {
                    for (ds, p) in ds.iter_mut().zip(p) {
                        *ds = p * (*ds - delta);
                    }
                }
                // dQ = scale·dS·K; dK_sel = scale·dSᵀ·Q; dV_sel = Pᵀ·dO.
                matmul(
                    dq,
                    Mat::rows(&s.dprobs, rows, n),
                    Mat::rows(&s.keys, n, d),
                    scale,
                    false,
                );
                s.dkeys.resize(n * d, 0.0);
                s.dvalues.resize(n * d, 0.0);
                matmul(
                    &mut s.dkeys,
                    Mat::transposed(&s.dprobs, n, rows),
                    Mat::rows(q, rows, d),
                    scale,
                    false,
                );
                matmul(
                    &mut s.dvalues,
                    Mat::transposed(&s.probs, n, rows),
                    Mat::rows(d_out, rows, d),
                    1.0,
                    false,
                );
                scatter_add_rows(&shape, units, &s.dkeys, dk);
                scatter_add_rows(&shape, units, &s.dvalues, dv);
            }
        });
}

/// Adds the gathered rows back onto the key rows they came from.
fn scatter_add_rows(shape: &ProblemShape, units: &[i64], rows: &[f32], dst: &mut [f32]) {
    let d = shape.head_dim;
    let mut offset = 0;
    for_each_key_run(shape, units, |start, len| {
        let src = &rows[offset..offset + len * d];
        for (x, y) in dst[start * d..(start + len) * d].iter_mut().zip(src) {
            *x += y;
        }
        offset += len * d;
    });
}
