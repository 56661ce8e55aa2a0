use rayon::prelude::*;

use super::math::{Mat, matmul};
use super::topk::{TopKScratch, top_k_ascending};
use crate::layout::ProblemShape;

/// Groups scored against all units at once; bounds the score buffer to `CHUNK × units`.
const CHUNK: usize = 16;

/// Exact top-`budget` units per query group, ascending ids, ties to the lower id; writes
/// `[B·H, G, budget]`. Scores are made `CHUNK` groups at a time, never `[S, S]`.
pub(crate) fn select_critical_keys(
    shape: ProblemShape,
    q_lr: &[f32],
    k_lr: &[f32],
    out: &mut [i64],
) {
    let (sq, sk, r, g) = (
        shape.query_len,
        shape.key_len,
        shape.head_dim,
        shape.group_size,
    );
    let groups = sq.div_ceil(g);
    let units = sk.div_ceil(shape.key_block);
    let budget = shape.budget;
    out.par_chunks_mut(groups * budget)
        .enumerate()
        .for_each(|(bh, out)| {
            let q = &q_lr[bh * sq * r..][..sq * r];
            let k = &k_lr[bh * sk * r..][..sk * r];
            // Proxy = sum of the group's rows (the mean up to a positive factor: same ranking).
            let proxies = row_block_means(q, r, g, false);
            let unit_keys = row_block_means(k, r, shape.key_block, true);
            out.par_chunks_mut(CHUNK * budget)
                .enumerate()
                .for_each_init(
                    || (Vec::new(), TopKScratch::default()),
                    |(scores, scratch): &mut (Vec<f32>, TopKScratch), (chunk, out)| {
                        let rows = out.len() / budget;
                        let proxies = &proxies[chunk * CHUNK * r..][..rows * r];
                        scores.resize(rows * units, 0.0);
                        matmul(
                            scores,
                            Mat::rows(proxies, rows, r),
                            Mat::transposed(&unit_keys, r, units),
                            1.0,
                            false,
                        );
                        for (row, out) in
                            scores.chunks_exact(units).zip(out.chunks_exact_mut(budget))
                        {
                            top_k_ascending(row, budget, scratch, out);
                        }
                    },
                );
        });
}

/// Sums (or means) of consecutive blocks of `block` rows of an `[n, r]` matrix.
fn row_block_means(x: &[f32], r: usize, block: usize, mean: bool) -> Vec<f32> {
    if block == 1 {
        return x.to_vec();
    }
    let mut out = vec![0.0f32; (x.len() / r).div_ceil(block) * r];
    for (rows, acc) in x.chunks(block * r).zip(out.chunks_exact_mut(r)) {
        for row in rows.chunks_exact(r) {
            acc.iter_mut().zip(row).for_each(|(a, b)| *a += b);
        }
        if mean {
            let count = (rows.len() / r) as f32;
            acc.iter_mut().for_each(|a| *a /= count);
        }
    }
    out
}
