//! Exact top-k with a total order, shared by the reference and the CPU kernel.

use alloc::vec::Vec;

/// Writes the `k` best ids of `row` (higher score first, then lower id; NaN scores rank
/// last) into `out` in ascending id order. `order` is scratch.
pub(crate) fn top_k_ascending(row: &[f32], k: usize, order: &mut Vec<u32>, out: &mut [i64]) {
    let key = |i: u32| {
        let s = row[i as usize];
        if s.is_nan() { f32::NEG_INFINITY } else { s }
    };
    order.clear();
    order.extend(0..row.len() as u32);
    if k < row.len() {
        // A total order, so the selected set is unique.
        order.select_nth_unstable_by(k - 1, |a, b| key(*b).total_cmp(&key(*a)).then(a.cmp(b)));
    }
    let chosen = &mut order[..k];
    chosen.sort_unstable();
    out.iter_mut().zip(chosen.iter()).for_each(|(o, &i)| *o = i as i64);
}
