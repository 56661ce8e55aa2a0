use burn::tensor::{Device, TensorData};
use burn_sparse_attn::{CriticalKeys, SelectionConfig, select_critical_keys};

use crate::common::*;

/// Low-rank scores computed on the host from the definition: the group proxy is the mean of
/// its queries, a unit key the mean of its keys. `[B·H·G][units]`.
fn host_scores(
    q: &[f32],
    k: &[f32],
    [bh, sq, sk, r]: [usize; 4],
    group_size: usize,
    key_block: usize,
) -> Vec<Vec<f32>> {
    let groups = sq.div_ceil(group_size);
    let units = sk.div_ceil(key_block);
    let mean_rows = |x: &[f32], rows: std::ops::Range<usize>| -> Vec<f32> {
        let n = rows.len() as f32;
        (0..r)
            .map(|c| rows.clone().map(|i| x[i * r + c]).sum::<f32>() / n)
            .collect()
    };
    let mut out = Vec::new();
    for m in 0..bh {
        let qm = &q[m * sq * r..(m + 1) * sq * r];
        let km = &k[m * sk * r..(m + 1) * sk * r];
        let unit_keys: Vec<Vec<f32>> = (0..units)
            .map(|u| mean_rows(km, u * key_block..sk.min((u + 1) * key_block)))
            .collect();
        for gi in 0..groups {
            let proxy = mean_rows(qm, gi * group_size..sq.min((gi + 1) * group_size));
            out.push(
                unit_keys
                    .iter()
                    .map(|key| key.iter().zip(&proxy).map(|(a, b)| a * b).sum())
                    .collect(),
            );
        }
    }
    out
}

fn ids_of(keys: &CriticalKeys) -> Vec<i64> {
    keys.indices()
        .to_data()
        .convert::<i64>()
        .try_to_vec()
        .unwrap()
}

fn selection_is_the_exact_top_k_of_the_low_rank_scores(device: &Device) {
    // (batch, heads, query len, key len, rank, group size, key block, budget)
    let cases = [
        (1, 2, 64, 64, 16, 8, 1, 6),
        (2, 3, 50, 50, 8, 16, 1, 11),
        (1, 1, 37, 41, 4, 4, 1, 41),
        (2, 2, 45, 45, 16, 8, 8, 3),
        (1, 2, 33, 30, 8, 5, 7, 5),
    ];
    for (n, (b, h, sq, sk, r, g, block, budget)) in cases.into_iter().enumerate() {
        let q_lr = random_data([b, h, sq, r], 300 + n as u64);
        let k_lr = random_data([b, h, sk, r], 400 + n as u64);
        let scores = host_scores(
            q_lr.as_slice::<f32>().unwrap(),
            k_lr.as_slice::<f32>().unwrap(),
            [b * h, sq, sk, r],
            g,
            block,
        );
        {
            let device = device.clone();
            let config = SelectionConfig::new(g, budget).with_key_block(block);
            let keys = select_critical_keys(tensor(&q_lr, &device), tensor(&k_lr, &device), config)
                .unwrap();
            assert_eq!(keys.indices().dims(), [b, h, sq.div_ceil(g), budget]);
            let ids = ids_of(&keys);
            for (row, (chosen, row_scores)) in ids.chunks_exact(budget).zip(&scores).enumerate() {
                assert!(
                    chosen.windows(2).all(|w| w[0] < w[1]),
                    "row {row} not ascending: {chosen:?}"
                );
                let picked = |u: usize| chosen.contains(&(u as i64));
                let worst_in = chosen
                    .iter()
                    .map(|&u| row_scores[u as usize])
                    .fold(f32::INFINITY, f32::min);
                let best_out = (0..row_scores.len())
                    .filter(|&u| !picked(u))
                    .map(|u| row_scores[u])
                    .fold(f32::NEG_INFINITY, f32::max);
                // Host and backend round differently: allow one ulp-scale slack.
                assert!(
                    worst_in >= best_out - 1e-5,
                    "case {n} row {row} on {device:?}: kept a unit scoring {worst_in} but dropped one scoring {best_out}"
                );
            }
        }
    }
}

fn ties_go_to_the_lower_id(device: &Device) {
    let (b, h, s, r) = (1, 2, 20, 4);
    // Keys all equal: every score ties, so each group must get units 0..budget.
    let q_lr = random_data([b, h, s, r], 1);
    let k_lr = TensorData::new(vec![0.5f32; b * h * s * r], [b, h, s, r]);
    {
        let device = device.clone();
        for (block, budget) in [(1, 7), (3, 4)] {
            let config = SelectionConfig::new(4, budget).with_key_block(block);
            let keys = select_critical_keys(tensor(&q_lr, &device), tensor(&k_lr, &device), config)
                .unwrap();
            for chosen in ids_of(&keys).chunks_exact(budget) {
                assert_eq!(
                    chosen,
                    (0..budget as i64).collect::<Vec<_>>(),
                    "block {block} on {device:?}"
                );
            }
        }
    }
}

#[test]
fn planted_keys_are_found() {
    // Group i's queries point along axis i; key j scores highest for the group j / 4.
    let (s, r, g, budget) = (16, 4, 4, 4);
    let mut q = vec![0.0f32; s * r];
    let mut k = vec![0.0f32; s * r];
    for t in 0..s {
        q[t * r + t / g] = 1.0;
        k[t * r + t / 4] = 1.0 + t as f32 * 0.01;
    }
    let q = TensorData::new(q, [1, 1, s, r]);
    let k = TensorData::new(k, [1, 1, s, r]);
    let device = Device::flex();
    let keys = select_critical_keys(
        tensor(&q, &device),
        tensor(&k, &device),
        SelectionConfig::new(g, budget),
    )
    .unwrap();
    let ids = ids_of(&keys);
    for (gi, chosen) in ids.chunks_exact(budget).enumerate() {
        let expected: Vec<i64> = (4 * gi as i64..4 * gi as i64 + 4).collect();
        assert_eq!(chosen, expected, "group {gi}");
    }
    assert!((keys.sparsity() - 0.75).abs() < 1e-12);
}

per_backend!(
    selection_is_the_exact_top_k_of_the_low_rank_scores,
    ties_go_to_the_lower_id,
);
