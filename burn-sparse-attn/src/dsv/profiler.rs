//! Measures how sparse attention really is, on sampled query rows.

use burn::tensor::{Bool, Tensor, activation::softmax};

/// Exact attention probabilities of sampled query rows: `q_rows: [B, H, n, D]` against all
/// keys `k: [B, H, S, D]` → `[B, H, n, S]`.
pub(crate) fn row_probabilities(q_rows: Tensor<4>, k: Tensor<4>, scale: f64) -> Tensor<4> {
    softmax(q_rows.matmul(k.swap_dims(2, 3)) * scale, 3)
}

/// Critical keys of each row: the smallest set whose probability mass reaches `theta`
/// (`true` = critical), and the per-head sparsity (mean fraction of non-critical keys).
pub(crate) fn critical_sets(probs: Tensor<4>, theta: f64) -> (Tensor<4, Bool>, Tensor<1>) {
    let [b, h, n, s] = probs.dims();
    let sorted = probs.clone().sort_descending(3);
    // A key is critical while the mass of strictly larger keys is still below θ.
    let before = sorted.clone().cumsum(3) - sorted.clone();
    let needed = before
        .clone()
        .lower_elem(theta)
        .float()
        .sum_dim(3)
        .clamp_min(1.0);
    // Threshold probability: the smallest probability still needed.
    let index = (needed.clone() - 1.0).int();
    let threshold = sorted.gather(3, index);
    let critical = probs.greater_equal(threshold.expand([b, h, n, s]));
    let sparsity = (needed / s as f64)
        .neg()
        .add_scalar(1.0)
        .mean_dim(3)
        .mean_dim(2)
        .mean_dim(0)
        .reshape([h]);
    (critical, sparsity)
}

/// Fraction of the critical mass that a predicted key set covers, per head.
/// `selected: [B, H, n, S]` (`true` = predicted).
pub(crate) fn critical_recall(
    probs: Tensor<4>,
    critical: Tensor<4, Bool>,
    selected: Tensor<4, Bool>,
) -> Tensor<1> {
    let h = probs.dims()[1];
    let critical_mass = probs.clone().mask_fill(critical.clone().bool_not(), 0.0);
    let covered = critical_mass
        .clone()
        .mask_fill(selected.bool_not(), 0.0)
        .sum_dim(3);
    let total = critical_mass.sum_dim(3).clamp_min(1e-12);
    (covered / total).mean_dim(2).mean_dim(0).reshape([h])
}
