use burn::tensor::{Device, Int, Tensor, activation::softmax};
use burn_sparse_attn::{SelectionConfig, dense_attention_with_search};

use crate::common::*;

/// Each group's attention mass per key unit, from softmax weights on the host:
/// `[B·H·G][units]`, and each group's row count.
fn host_masses(
    probs: &[f32],
    [bh, sq, sk]: [usize; 3],
    group: usize,
    key_block: usize,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let groups = sq.div_ceil(group);
    let units = sk.div_ceil(key_block);
    let mut masses = Vec::new();
    let mut rows = Vec::new();
    for m in 0..bh {
        for g in 0..groups {
            let mut mass = vec![0.0f32; units];
            let range = g * group..sq.min((g + 1) * group);
            rows.push(range.len());
            for i in range {
                for j in 0..sk {
                    mass[j / key_block] += probs[(m * sq + i) * sk + j];
                }
            }
            masses.push(mass);
        }
    }
    (masses, rows)
}

fn search_is_dense_attention_and_keeps_the_heaviest_units(device: &Device) {
    // The search is Burn's dense matmul and softmax on the device.
    let tol = burn_matmul_tolerance(device);
    // (batch, heads, query len, key len, head dim, group, key block, budget)
    let cases = [
        (1, 2, 64, 64, 16, 16, 1, 8),
        (2, 3, 50, 45, 8, 8, 1, 45),
        (1, 1, 37, 41, 32, 4, 5, 3),
        (2, 2, 40, 40, 8, 8, 8, 5),
        // Two chunks of one group each (2²⁴ scores per chunk), the second one short.
        (1, 1, 4200, 4100, 4, 4096, 1, 410),
    ];
    for (n, (b, h, sq, sk, d, group, block, budget)) in cases.into_iter().enumerate() {
        let [q, k, v] = [[b, h, sq, d], [b, h, sk, d], [b, h, sk, d]]
            .map(|shape| random_data(shape, 700 + 10 * n as u64 + shape[2] as u64));
        let config = SelectionConfig::new(group, budget).with_key_block(block);
        let searched = dense_attention_with_search(
            tensor(&q, device),
            tensor(&k, device),
            tensor(&v, device),
            None,
            config,
            None,
        )
        .unwrap();
        let oracle = oracle_device();
        let scale = 1.0 / (d as f64).sqrt();
        let expected = burn_attention(
            tensor(&q, &oracle),
            tensor(&k, &oracle),
            tensor(&v, &oracle),
            None,
        );
        let what = format!("case {n}");
        assert_close(
            Tensor::<4>::from_data(searched.output.into_data(), &oracle),
            expected,
            tol,
            &format!("{what}: output"),
        );

        let scores = masked_scores(tensor(&q, &oracle), tensor(&k, &oracle), None, scale);
        let host_lse: Vec<f32> = scores
            .to_data()
            .as_slice::<f32>()
            .unwrap()
            .chunks_exact(sk)
            .map(|row| {
                let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                top + row.iter().map(|x| (x - top).exp()).sum::<f32>().ln()
            })
            .collect();
        assert_eq!(searched.lse.dims(), [b, h, sq]);
        let lse: Vec<f32> = searched.lse.to_data().convert::<f32>().to_vec().unwrap();
        for (row, (got, want)) in lse.iter().zip(&host_lse).enumerate() {
            assert!(
                (got - want).abs() < tol,
                "{what}: row {row} lse {got}, host {want}"
            );
        }
        let probs = softmax(scores, 3).into_data();
        let (masses, rows) = host_masses(
            probs.as_slice::<f32>().unwrap(),
            [b * h, sq, sk],
            group,
            block,
        );
        let keys = &searched.keys;
        assert_eq!(keys.indices().dims(), [b, h, sq.div_ceil(group), budget]);
        assert_eq!((keys.group_size(), keys.key_block()), (group, block));
        let ids: Vec<i64> = keys
            .indices()
            .to_data()
            .convert::<i64>()
            .try_to_vec()
            .unwrap();
        let mut recall = vec![0.0f64; b * h];
        for (row, (chosen, mass)) in ids.chunks_exact(budget).zip(&masses).enumerate() {
            assert!(
                chosen.windows(2).all(|w| w[0] < w[1]),
                "{what}: row {row} not ascending: {chosen:?}"
            );
            let lightest_kept = chosen
                .iter()
                .map(|&u| mass[u as usize])
                .fold(f32::INFINITY, f32::min);
            let heaviest_left = (0..mass.len() as i64)
                .filter(|u| !chosen.contains(u))
                .map(|u| mass[u as usize])
                .fold(0.0, f32::max);
            assert!(
                lightest_kept >= heaviest_left - tol * (1.0 + heaviest_left),
                "{what}: row {row} kept {lightest_kept} but left {heaviest_left}"
            );
            let kept: f32 = chosen.iter().map(|&u| mass[u as usize]).sum();
            recall[row / sq.div_ceil(group)] += (kept / rows[row] as f32) as f64;
        }
        let groups = sq.div_ceil(group) as f64;
        let recall: Vec<f64> = (0..h)
            .map(|head| (0..b).map(|bi| recall[bi * h + head]).sum::<f64>() / (b as f64 * groups))
            .collect();
        let measured: Vec<f32> = searched
            .recall
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap();
        for (head, (got, want)) in measured.iter().zip(&recall).enumerate() {
            assert!(
                (*got as f64 - want).abs() < tol as f64,
                "{what}: head {head} recall {got}, host {want}"
            );
        }
        if budget == sk.div_ceil(block) {
            assert!(measured.iter().all(|&r| (r - 1.0).abs() < 1e-5), "{what}");
        }
    }
}

fn searched_keys_serve_sparse_attention_and_other_batches(device: &Device) {
    let [b, h, s, d] = [2, 2, 48, 8];
    let [q, k, v] = [1, 2, 3].map(|seed| tensor(&random_data([b, h, s, d], 900 + seed), device));
    let searched = dense_attention_with_search(
        q.clone(),
        k.clone(),
        v.clone(),
        None,
        SelectionConfig::new(8, 12),
        None,
    )
    .unwrap();
    let sparse = sparse(q.clone(), k.clone(), v.clone(), &searched.keys)
        .map(|out| out.output)
        .unwrap();
    let masked = burn_attention(q.clone(), k, v, Some(searched.keys.dense_mask()));
    assert_close(
        sparse,
        masked,
        burn_matmul_tolerance(device),
        "sparse attention on the searched keys",
    );

    let ids = |t: &Tensor<4, Int>| -> Vec<i64> { t.to_data().convert::<i64>().to_vec().unwrap() };
    let all = ids(searched.keys.indices());
    let second = searched.keys.narrow_batch(1, 1).unwrap();
    assert_eq!(ids(second.indices()), all[all.len() / 2..].to_vec());
    let twice = second.repeat_batch(2).unwrap();
    assert_eq!(twice.indices().dims(), [2, h, 6, 12]);
    assert_eq!(
        ids(twice.indices()),
        [&all[all.len() / 2..], &all[all.len() / 2..]].concat()
    );
    assert!(searched.keys.narrow_batch(1, 2).is_err());
    assert!(searched.keys.repeat_batch(0).is_err());
}

/// A bias as dual-scope attention makes one: a finite per-key bias for each sample plus −∞
/// where a row cannot see a key; rows of a group see different keys in the second case.
fn search_with_a_bias_keeps_only_keys_every_row_of_its_group_sees(device: &Device) {
    let tol = burn_matmul_tolerance(device);
    let [b, h, sq, sk, d, group] = [2, 2, 24, 30, 8, 4];
    // (row, key) → hidden: the same for a group's rows (later groups see fewer keys), or
    // row by row.
    type Hidden = fn(usize, usize) -> bool;
    let patterns: [(&str, Hidden); 2] = [
        ("per group", |i, j| (i / 4 + j) % 3 == 0 || j < i / 4),
        ("per row", |i, j| (i + j) % 5 == 0),
    ];
    for (n, (what, hidden)) in patterns.into_iter().enumerate() {
        let [q, k, v] = [[b, h, sq, d], [b, h, sk, d], [b, h, sk, d]]
            .map(|shape| random_data(shape, 40 + 10 * n as u64 + shape[2] as u64));
        let mut rng = Rng::new(5 + n as u64);
        let key_bias: Vec<Vec<f32>> = (0..b)
            .map(|_| (0..sk).map(|_| 2.0 * rng.uniform()).collect())
            .collect();
        let bias_at = |bi: usize, i: usize, j: usize| match hidden(i, j) {
            true => f32::NEG_INFINITY,
            false => key_bias[bi][j],
        };
        let bias: Vec<f32> = (0..b * sq * sk)
            .map(|x| bias_at(x / (sq * sk), x / sk % sq, x % sk))
            .collect();
        let bias = burn::tensor::TensorData::new(bias, [b, 1, sq, sk]);
        let oracle = oracle_device();
        let scale = 1.0 / (d as f64).sqrt();
        let scores = masked_scores(tensor(&q, &oracle), tensor(&k, &oracle), None, scale)
            + tensor(&bias, &oracle).expand([b, h, sq, sk]);
        let probs = softmax(scores, 3);
        let expected = probs.clone().matmul(tensor(&v, &oracle));
        // Units every row of group g sees: the budget is cut to the fewest of them.
        let open = |g: usize| -> Vec<usize> {
            (0..sk)
                .filter(|&j| (g * group..(g + 1) * group).all(|i| !hidden(i, j)))
                .collect()
        };
        let fewest = (0..sq / group).map(|g| open(g).len()).min().unwrap();
        let searched = dense_attention_with_search(
            tensor(&q, device),
            tensor(&k, device),
            tensor(&v, device),
            Some(tensor(&bias, device)),
            SelectionConfig::new(group, sk),
            None,
        )
        .unwrap();
        assert_close(
            Tensor::<4>::from_data(searched.output.into_data(), &oracle),
            expected,
            tol,
            &format!("{what}: output"),
        );
        assert_eq!(
            searched.keys.indices().dims(),
            [b, h, sq / group, fewest],
            "{what}: budget cut to the fewest open units"
        );
        let (masses, _) = host_masses(
            probs.into_data().as_slice::<f32>().unwrap(),
            [b * h, sq, sk],
            group,
            1,
        );
        let ids: Vec<i64> = searched
            .keys
            .indices()
            .to_data()
            .convert::<i64>()
            .to_vec()
            .unwrap();
        for (row, (chosen, mass)) in ids.chunks_exact(fewest).zip(&masses).enumerate() {
            let open = open(row % (sq / group));
            assert!(
                chosen.iter().all(|&j| open.contains(&(j as usize))),
                "{what}: group row {row} chose a key one of its rows cannot see: {chosen:?}"
            );
            let lightest_kept = chosen
                .iter()
                .map(|&u| mass[u as usize])
                .fold(f32::INFINITY, f32::min);
            let heaviest_left = open
                .iter()
                .filter(|&&u| !chosen.contains(&(u as i64)))
                .map(|&u| mass[u])
                .fold(0.0, f32::max);
            assert!(
                lightest_kept >= heaviest_left - tol * (1.0 + heaviest_left),
                "{what}: group row {row} kept {lightest_kept} but left {heaviest_left}"
            );
        }
    }
}

per_backend!(
    search_is_dense_attention_and_keeps_the_heaviest_units,
    searched_keys_serve_sparse_attention_and_other_batches,
    search_with_a_bias_keeps_only_keys_every_row_of_its_group_sees,
);
