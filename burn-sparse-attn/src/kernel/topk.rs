//! Exact top-k with a total order, shared by the reference and the CPU kernel.

use alloc::vec::Vec;
use core::cmp::Ordering;

/// NaN ranks below every number.
fn rank_key(s: f32) -> f32 {
    if s.is_nan() { f32::NEG_INFINITY } else { s }
}

/// Bins of the value histogram that narrows the search for the k-th score.
const BINS: usize = 1024;

/// Reusable buffers of [`top_k_ascending`].
#[derive(Default)]
pub(crate) struct TopKScratch {
    counts: Vec<u32>,
    candidates: Vec<f32>,
    above: Vec<u32>,
}

/// The k-th largest value of a NaN-free, finite `row`: a value histogram between the row's
/// min and max finds the bin holding it, and an exact selection inside that bin (a few
/// elements for smooth score distributions) finishes. Two linear passes plus a small select.
fn kth_largest_finite(row: &[f32], k: usize, lo: f32, hi: f32, scratch: &mut TopKScratch) -> f32 {
    let candidates = &mut scratch.candidates;
    candidates.clear();
    if hi <= lo {
        return hi;
    }
    let scale = (BINS as f32 - 1.0) / (hi - lo);
    let bin = |s: f32| (((s - lo) * scale) as usize).min(BINS - 1);
    scratch.counts.clear();
    scratch.counts.resize(BINS, 0);
    for &s in row {
        scratch.counts[bin(s)] += 1;
    }
    // Walk down from the top bin until it holds the k-th largest.
    let mut above = 0usize;
    let mut target = 0;
    for b in (0..BINS).rev() {
        let c = scratch.counts[b] as usize;
        if above + c >= k {
            target = b;
            break;
        }
        above += c;
    }
    candidates.extend(row.iter().copied().filter(|&s| bin(s) == target));
    let (_, &mut kth, _) = candidates.select_nth_unstable_by(k - above - 1, |a, b| b.total_cmp(a));
    kth
}

/// Writes the `k` best ids of `row` (higher score first, then lower id; NaN scores rank
/// last) into `out` in ascending id order, without sorting: find the k-th best value, then
/// one ascending scan takes every id above it, and the lowest ids equal to it fill the rest.
pub(crate) fn top_k_ascending(row: &[f32], k: usize, scratch: &mut TopKScratch, out: &mut [i64]) {
    debug_assert!(k >= 1 && k <= row.len() && out.len() == k);
    let (lo, hi) = row.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| (lo.min(s), hi.max(s)));
    let kth = if lo.is_finite() && hi.is_finite() && !row.iter().any(|s| s.is_nan()) {
        kth_largest_finite(row, k, lo, hi, scratch)
    } else {
        // NaN or infinities: an exact selection over everything.
        let all = &mut scratch.candidates;
        all.clear();
        all.extend(row.iter().map(|&s| rank_key(s)));
        let (_, &mut kth, _) = all.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        kth
    };
    // Strictly better ids, branch-free: write every id, advance only past the kept ones.
    let above = &mut scratch.above;
    above.clear();
    above.resize(row.len() + 1, 0);
    let mut n = 0;
    for (i, &s) in row.iter().enumerate() {
        above[n] = i as u32;
        n += (rank_key(s) > kth) as usize;
    }
    let ties = k - n;
    if ties == 0 {
        out.iter_mut().zip(&above[..k]).for_each(|(o, &i)| *o = i as i64);
        return;
    }
    // Merge the strictly better ids with the lowest `ties` ids equal to the k-th value.
    let mut equal = row.iter().enumerate().filter(|&(_, &s)| rank_key(s).total_cmp(&kth) == Ordering::Equal).map(|(i, _)| i as u32).take(ties);
    let mut better = above[..n].iter().copied();
    let (mut b, mut e) = (better.next(), equal.next());
    for o in out.iter_mut() {
        let take_better = match (b, e) {
            (Some(x), Some(y)) => x < y,
            (Some(_), None) => true,
            _ => false,
        };
        *o = if take_better {
            let x = b.unwrap();
            b = better.next();
            x as i64
        } else {
            let y = e.expect("k ids exist");
            e = equal.next();
            y as i64
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: sort (score desc, id asc), keep k, list ascending.
    fn by_sorting(row: &[f32], k: usize) -> Vec<i64> {
        let mut ids: Vec<usize> = (0..row.len()).collect();
        ids.sort_by(|&a, &b| rank_key(row[b]).total_cmp(&rank_key(row[a])).then(a.cmp(&b)));
        let mut chosen: Vec<i64> = ids[..k].iter().map(|&i| i as i64).collect();
        chosen.sort_unstable();
        chosen
    }

    #[test]
    fn matches_sorting_on_awkward_rows() {
        let mut state = 12345u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 100.0 - 5.0
        };
        let mut scratch = TopKScratch::default();
        let rows: Vec<Vec<f32>> = vec![
            (0..500).map(|_| next()).collect(),
            (0..300).map(|_| (next() * 2.0).round()).collect(), // many ties
            vec![1.0; 40],
            vec![f32::NAN, 2.0, f32::INFINITY, -1.0, f32::NEG_INFINITY, 2.0, f32::NAN],
            (0..257).map(|i| if i % 3 == 0 { 1e30 } else { -1e-30 }).collect(),
        ];
        for row in &rows {
            for k in [1, 2, row.len() / 3, row.len() - 1, row.len()] {
                let k = k.max(1);
                let mut out = vec![0i64; k];
                top_k_ascending(row, k, &mut scratch, &mut out);
                assert_eq!(out, by_sorting(row, k), "k = {k}, row {:?}", &row[..row.len().min(8)]);
            }
        }
    }
}
