//! Exact top-k with a total order for the CPU selection kernel.

use alloc::vec::Vec;

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
    keys: Vec<i32>,
    inside: Vec<(i32, u32)>,
}

/// The bin holding the `rank`-th largest element (1-based) of a histogram, and how many
/// elements lie in the bins above it.
fn bin_holding(counts: &[u32], rank: usize) -> (usize, usize) {
    let mut above = 0;
    for (b, &c) in counts.iter().enumerate().rev() {
        if above + c as usize >= rank {
            return (b, above);
        }
        above += c as usize;
    }
    (0, above)
}

/// The k-th largest value of a NaN-free, finite `row` with `lo < hi` its min and max: a
/// value histogram between them finds the bin holding it, and an exact selection inside that
/// bin (a few elements for smooth score distributions) finishes. Two linear passes plus a
/// small select.
fn kth_largest_finite(row: &[f32], k: usize, lo: f32, hi: f32, scratch: &mut TopKScratch) -> f32 {
    debug_assert!(
        lo < hi,
        "kth_largest_finite: needs lo < hi, got {lo} and {hi}"
    );
    let scale = (BINS as f32 - 1.0) / (hi - lo);
    let bin = |s: f32| (((s - lo) * scale) as usize).min(BINS - 1);
    scratch.counts.clear();
    scratch.counts.resize(BINS, 0);
    for &s in row {
        scratch.counts[bin(s)] += 1;
    }
    let (target, above) = bin_holding(&scratch.counts, k);
    let candidates = &mut scratch.candidates;
    candidates.clear();
    candidates.extend(row.iter().copied().filter(|&s| bin(s) == target));
    let (_, &mut kth, _) = candidates.select_nth_unstable_by(k - above - 1, |a, b| b.total_cmp(a));
    kth
}

/// Writes the `k` best ids of `row` (higher score first, then lower id; NaN scores rank
/// last) into `out` in ascending id order, without sorting. A strided sample brackets the
/// k-th best value; one branch-free pass then splits the row into ids strictly above the
/// bracket and (value, id) candidates inside it, and a selection among the few candidates
/// finishes. When the sample misjudged the bracket, the exact histogram path runs instead.
pub(crate) fn top_k_ascending(row: &[f32], k: usize, scratch: &mut TopKScratch, out: &mut [i64]) {
    debug_assert!(k >= 1 && k <= row.len() && out.len() == k);
    if k == row.len() {
        out.iter_mut().enumerate().for_each(|(i, o)| *o = i as i64);
        return;
    }
    let (lo, hi) = sample_bracket(row, k, scratch);
    if !top_k_in_bracket(row, k, lo, hi, scratch, out) {
        top_k_by_histogram(row, k, scratch, out);
    }
}

/// Sample size of the bracket estimate: large enough that the bracket below rarely misses,
/// small next to the rows selection sees (thousands of keys).
const SAMPLE: usize = 256;

/// An integer that orders like `rank_key(s).total_cmp`: comparisons on it are exact for
/// ±0 and infinities, and vectorise.
#[inline(always)]
fn order_key(s: f32) -> i32 {
    let bits = rank_key(s).to_bits() as i32;
    bits ^ ((((bits >> 31) as u32) >> 1) as i32)
}

/// Keys `(lo, hi)` that bracket the k-th best score of `row` with high probability: the
/// sample's order statistics around rank `k·m/n`, widened by four standard deviations of a
/// sample quantile. Open-ended where the bracket would leave the sample.
fn sample_bracket(row: &[f32], k: usize, scratch: &mut TopKScratch) -> (i32, i32) {
    let n = row.len();
    let sample = &mut scratch.keys;
    sample.clear();
    sample.extend(
        row.iter()
            .step_by(n.div_ceil(SAMPLE))
            .map(|&s| order_key(s)),
    );
    let m = sample.len();
    let q = k as f64 / n as f64;
    let rank = q * m as f64;
    let spread = 4.0 * (m as f64 * q * (1.0 - q)).sqrt() + 2.0;
    let descending = |a: &i32, b: &i32| b.cmp(a);
    let (hi_rank, lo_rank) = (rank - spread, rank + spread);
    let hi = if hi_rank < 0.0 {
        i32::MAX
    } else {
        *sample
            .select_nth_unstable_by(hi_rank as usize, descending)
            .1
    };
    let lo = if lo_rank as usize >= m {
        i32::MIN
    } else {
        *sample
            .select_nth_unstable_by(lo_rank as usize, descending)
            .1
    };
    (lo, hi)
}

/// Elements whose bracket test makes one bit mask in [`top_k_in_bracket`].
const SPLIT_CHUNK: usize = 16;

/// The top-k of `row` when its k-th best key lies in `[lo, hi]`; false (and `out`
/// untouched) when it does not.
fn top_k_in_bracket(
    row: &[f32],
    k: usize,
    lo: i32,
    hi: i32,
    scratch: &mut TopKScratch,
    out: &mut [i64],
) -> bool {
    let n = row.len();
    let TopKScratch {
        counts,
        keys,
        above,
        inside,
        ..
    } = scratch;
    if above.len() <= n {
        above.resize(n + 1, 0);
        inside.resize(n + 1, (0, 0));
    }
    // Local slices: the loop then keeps its pointers in registers.
    let (above, inside) = (&mut above[..=n], &mut inside[..=n]);
    // Most keys lie below the bracket: a vectorised compare marks, per chunk, the few that do
    // not, and only those are visited. Each is written to both lists and advances the one it
    // belongs to, so the visit has no data-dependent branch.
    let (mut n_above, mut n_inside) = (0, 0);
    let mut keep = |mut mask: u32, chunk_keys: &[i32; SPLIT_CHUNK], first: usize| {
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let (key, id) = (chunk_keys[j], (first + j) as u32);
            above[n_above] = id;
            inside[n_inside] = (key, id);
            let is_above = key > hi;
            n_above += is_above as usize;
            n_inside += !is_above as usize;
        }
    };
    let mut chunks = row.chunks_exact(SPLIT_CHUNK);
    for (c, chunk) in (&mut chunks).enumerate() {
        let chunk_keys: [i32; SPLIT_CHUNK] = core::array::from_fn(|j| order_key(chunk[j]));
        keep(at_or_above(&chunk_keys, lo), &chunk_keys, c * SPLIT_CHUNK);
    }
    // The tail is padded to a whole chunk; the mask drops the padding.
    let tail = chunks.remainder();
    let tail_keys: [i32; SPLIT_CHUNK] =
        core::array::from_fn(|j| tail.get(j).map_or(i32::MIN, |&s| order_key(s)));
    keep(
        at_or_above(&tail_keys, lo) & ((1u32 << tail.len()) - 1),
        &tail_keys,
        n - tail.len(),
    );
    if n_above >= k || n_above + n_inside < k {
        return false;
    }
    let inside = &inside[..n_inside];
    let kth = kth_key_in_range(inside, k - n_above, lo, hi, counts, keys);
    // Candidates strictly above the k-th key, then the lowest-id ties: ascending ids.
    let strictly = inside.iter().filter(|&&(key, _)| key > kth).count();
    let mut ties = k - n_above - strictly;
    let chosen = inside.iter().filter(|&&(key, _)| {
        let take = key > kth || (key == kth && ties > 0);
        ties -= (key == kth && take) as usize;
        take
    });
    merge_ascending(&above[..n_above], chosen.map(|&(_, i)| i), out);
    true
}

/// Bit `j` set where `keys[j] ≥ lo`: one vector compare for the whole chunk.
#[inline(always)]
fn at_or_above(keys: &[i32; SPLIT_CHUNK], lo: i32) -> u32 {
    keys.iter()
        .enumerate()
        .fold(0u32, |mask, (j, &key)| mask | ((key >= lo) as u32) << j)
}

/// The `rank`-th largest key (1-based) of `items`, all inside `[lo, hi]`: a histogram over
/// that key range finds the bin holding it, a selection inside the bin finishes.
fn kth_key_in_range(
    items: &[(i32, u32)],
    rank: usize,
    lo: i32,
    hi: i32,
    counts: &mut Vec<u32>,
    keys: &mut Vec<i32>,
) -> i32 {
    let bins = (items.len() / 4).clamp(1, BINS);
    // Monotone in the key, which is all the walk below needs: a fixed-point multiply, with
    // no division or (scalar, saturating) float-to-int cast per element. `offset < range`
    // keeps the bin below `bins` and the product below 2⁴².
    let range = (i64::from(hi) - i64::from(lo) + 1) as u64;
    let step = ((bins as u64) << 32) / range;
    let bin = |key: i32| (((i64::from(key) - i64::from(lo)) as u64 * step) >> 32) as usize;
    counts.clear();
    counts.resize(bins, 0);
    for &(key, _) in items {
        counts[bin(key)] += 1;
    }
    let (target, above) = bin_holding(counts, rank);
    keys.clear();
    keys.extend(
        items
            .iter()
            .map(|&(key, _)| key)
            .filter(|&key| bin(key) == target),
    );
    *keys
        .select_nth_unstable_by(rank - above - 1, |a, b| b.cmp(a))
        .1
}

/// Writes the ascending union of two ascending, disjoint id lists into `out` (filled exactly).
fn merge_ascending(a: &[u32], b: impl Iterator<Item = u32>, out: &mut [i64]) {
    let mut a = a.iter().copied().peekable();
    let mut b = b.peekable();
    for o in out.iter_mut() {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x < y,
            (Some(_), None) => true,
            _ => false,
        };
        let id = if take_a { a.next() } else { b.next() };
        *o = id.expect("k ids exist") as i64;
    }
}

/// The exact fallback: the k-th best value by a value histogram (or a full selection when
/// the row holds NaN or infinities), then one ascending scan.
fn top_k_by_histogram(row: &[f32], k: usize, scratch: &mut TopKScratch, out: &mut [i64]) {
    let (lo, hi) = row
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &s| {
            (lo.min(s), hi.max(s))
        });
    let kth = if lo.is_finite() && hi.is_finite() && lo < hi && !row.iter().any(|s| s.is_nan()) {
        kth_largest_finite(row, k, lo, hi, scratch)
    } else {
        // NaN, infinities or one value (perhaps zeros of both signs, which the total order
        // tells apart and a value histogram does not): an exact selection over everything.
        let all = &mut scratch.candidates;
        all.clear();
        all.extend(row.iter().map(|&s| rank_key(s)));
        let (_, &mut kth, _) = all.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        kth
    };
    // Strictly better ids, branch-free: write every id, advance only past the kept ones.
    let kth = order_key(kth);
    let above = &mut scratch.above;
    above.clear();
    above.resize(row.len() + 1, 0);
    let mut n = 0;
    for (i, &s) in row.iter().enumerate() {
        above[n] = i as u32;
        n += (order_key(s) > kth) as usize;
    }
    // The lowest `k − n` ids equal to the k-th value complete the set.
    let equal = row
        .iter()
        .enumerate()
        .filter(|&(_, &s)| order_key(s) == kth)
        .map(|(i, _)| i as u32)
        .take(k - n);
    merge_ascending(&above[..n], equal, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition: sort (score desc, id asc), keep k, list ascending.
    fn by_sorting(row: &[f32], k: usize) -> Vec<i64> {
        let mut ids: Vec<usize> = (0..row.len()).collect();
        ids.sort_by(|&a, &b| {
            rank_key(row[b])
                .total_cmp(&rank_key(row[a]))
                .then(a.cmp(&b))
        });
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
            vec![
                f32::NAN,
                2.0,
                f32::INFINITY,
                -1.0,
                f32::NEG_INFINITY,
                2.0,
                f32::NAN,
            ],
            (0..257)
                .map(|i| if i % 3 == 0 { 1e30 } else { -1e-30 })
                .collect(),
        ];
        let mut rows = rows;
        // Long rows, where the sampled bracket decides: smooth scores, many ties, signed
        // zeros, and a row whose sampled positions all hold the largest values (the bracket
        // misses and the histogram path answers).
        rows.push((0..5000).map(|_| next()).collect());
        rows.push((0..4097).map(|_| next().round()).collect());
        rows.push(
            (0..3000)
                .map(|i| if i % 2 == 0 { 0.0 } else { -0.0 })
                .collect(),
        );
        let stride = 6000usize.div_ceil(SAMPLE);
        rows.push(
            (0..6000)
                .map(|i| {
                    if i % stride == 0 {
                        100.0 + next()
                    } else {
                        next()
                    }
                })
                .collect(),
        );
        for row in &rows {
            let n = row.len();
            for k in [1, 2, n / 10, n / 3, n - 1, n] {
                let k = k.max(1);
                let want = by_sorting(row, k);
                let mut out = vec![0i64; k];
                top_k_ascending(row, k, &mut scratch, &mut out);
                assert_eq!(out, want, "k = {k}, n = {n}, row {:?}", &row[..n.min(8)]);
                // The fallback on its own, which the sampled bracket rarely reaches.
                if k < n {
                    top_k_by_histogram(row, k, &mut scratch, &mut out);
                    assert_eq!(out, want, "histogram path, k = {k}, n = {n}");
                }
            }
        }
    }

    #[test]
    fn bracket_misses_are_reported_not_answered() {
        let row: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let mut scratch = TopKScratch::default();
        let mut out = vec![-1i64; 10];
        // The 10 best are 990..999: a bracket below them, or one holding too few, fails.
        assert!(!top_k_in_bracket(
            &row,
            10,
            order_key(0.0),
            order_key(500.0),
            &mut scratch,
            &mut out
        ));
        assert!(!top_k_in_bracket(
            &row,
            10,
            order_key(995.0),
            order_key(999.0),
            &mut scratch,
            &mut out
        ));
        assert!(out.iter().all(|&i| i == -1));
        assert!(top_k_in_bracket(
            &row,
            10,
            order_key(985.0),
            order_key(995.0),
            &mut scratch,
            &mut out
        ));
        assert_eq!(out, (990..1000).collect::<Vec<i64>>());
    }

    #[test]
    fn order_key_orders_like_total_cmp() {
        let values = [
            f32::NEG_INFINITY,
            -1e30,
            -1.0,
            -1e-40,
            -0.0,
            0.0,
            1e-40,
            1.0,
            1e30,
            f32::INFINITY,
        ];
        for pair in values.windows(2) {
            assert!(
                order_key(pair[0]) < order_key(pair[1]),
                "{} !< {}",
                pair[0],
                pair[1]
            );
        }
        assert_eq!(order_key(f32::NAN), order_key(f32::NEG_INFINITY));
    }
}
