use burn::tensor::{Device, Tensor};
use burn_sparse_attn::{SelectionConfig, select_critical_keys, sparse_attention};

use crate::common::*;
use burn_sparse_attn::SparseAttentionOptions;

/// (batch, heads, query len, key len, head dim, group size, key block)
type Case = (usize, usize, usize, usize, usize, usize, usize);

/// Awkward on purpose: S not a multiple of the group or block, B > 1, several head dims,
/// a group larger than the sequence, queries and keys of different lengths, an odd group.
/// (group, head dim, key block) triples repeat those of `kernels::CASES` where they can: each
/// new triple is a new set of kernels for a Cube backend to compile.
const CASES: [Case; 8] = [
    (1, 2, 64, 64, 64, 32, 1),
    (2, 3, 50, 50, 128, 16, 1),
    (1, 1, 37, 37, 96, 32, 1),
    (2, 2, 33, 33, 32, 32, 16),
    (1, 2, 20, 20, 64, 64, 1),
    (1, 2, 45, 45, 64, 8, 8),
    (2, 1, 24, 40, 64, 32, 1),
    (1, 2, 30, 29, 32, 5, 4),
];

fn inputs(case: Case, seed: u64) -> [burn::tensor::TensorData; 3] {
    let (b, h, sq, sk, d, _, _) = case;
    [
        random_data([b, h, sq, d], seed),
        random_data([b, h, sk, d], seed + 1),
        random_data([b, h, sk, d], seed + 2),
    ]
}

fn all_keys_equals_burn_dense_attention(device: &Device) {
    for (n, case) in CASES.into_iter().enumerate() {
        let (_, _, _, sk, _, g, block) = case;
        let [q, k, v] = inputs(case, 10 * n as u64);
        let oracle = oracle_device();
        let expected = burn_attention(
            tensor(&q, &oracle),
            tensor(&k, &oracle),
            tensor(&v, &oracle),
            None,
        );
        {
            let device = device.clone();
            let (q, k, v) = (
                tensor(&q, &device),
                tensor(&k, &device),
                tensor(&v, &device),
            );
            // Budget = every unit: the selection keeps all keys whatever the scores.
            let units = sk.div_ceil(block);
            let config = SelectionConfig::new(g, units).with_key_block(block);
            let keys = select_critical_keys(q.clone(), k.clone(), config).unwrap();
            assert_eq!(keys.sparsity(), 0.0);
            let out = sparse_attention(q, k, v, &keys, None, SparseAttentionOptions::default())
                .map(|out| out.output)
                .unwrap();
            assert_close(
                out,
                expected.clone(),
                1e-4,
                &format!("case {case:?} on {device:?}"),
            );
        }
    }
}

fn random_index_equals_masked_dense_attention(device: &Device) {
    for (n, case) in CASES.into_iter().enumerate() {
        let (b, h, sq, sk, d, g, block) = case;
        let [q, k, v] = inputs(case, 100 + n as u64);
        let units = sk.div_ceil(block);
        let budget = (units / 3).max(1);
        let ids = random_index_data([b, h, sq.div_ceil(g)], units, budget, 7 + n as u64);
        let scale = 0.7 / (d as f64).sqrt();

        let oracle = oracle_device();
        let keys = critical_keys(&ids, g, block, sq, sk, &oracle);
        let mask = keys.dense_mask();
        let (oq, ok, ov) = (
            tensor(&q, &oracle),
            tensor(&k, &oracle),
            tensor(&v, &oracle),
        );
        let expected =
            dense_masked_attention(oq.clone(), ok.clone(), ov, Some(mask.clone()), scale);
        let expected_lse = masked_scores(oq, ok, Some(mask), scale)
            .exp()
            .sum_dim(3)
            .log()
            .reshape([b, h, sq]);

        {
            let device = device.clone();
            let keys = critical_keys(&ids, g, block, sq, sk, &device);
            let out = sparse_attention(
                tensor(&q, &device),
                tensor(&k, &device),
                tensor(&v, &device),
                &keys,
                None,
                SparseAttentionOptions::default().with_scale(scale),
            )
            .unwrap();
            let what = format!("case {case:?} on {device:?}");
            assert_close(out.output, expected.clone(), 1e-4, &what);
            assert_close(
                out.lse.expect("sparse"),
                expected_lse.clone(),
                1e-4,
                &format!("lse of {what}"),
            );
        }
    }
}

#[test]
fn dense_mask_keeps_exactly_the_selected_keys() {
    // 2 groups of 3 queries over 7 keys in blocks of 3: block 2 holds key 6 only.
    let device = oracle_device();
    let ids = burn::tensor::TensorData::new(vec![0i64, 2, 1, 2], [1, 1, 2, 2]);
    let keys = critical_keys(&ids, 3, 3, 5, 7, &device);
    let mask: Vec<bool> = keys.dense_mask().into_data().try_to_vec().unwrap();
    let allowed = |q: usize, key: usize| {
        let blocks: &[usize] = if q < 3 { &[0, 2] } else { &[1, 2] };
        blocks.contains(&(key / 3))
    };
    for q in 0..5 {
        for key in 0..7 {
            assert_eq!(!mask[q * 7 + key], allowed(q, key), "query {q}, key {key}");
        }
    }
    assert!((keys.sparsity() - (1.0 - 6.0 / 7.0)).abs() < 1e-12);
}

/// The backend computes on its own device.
fn tensors_live_on_the_backend(device: &Device) {
    let x = Tensor::<4>::ones([1, 1, 2, 2], device);
    assert_eq!(&x.device(), device);
    assert_eq!(x.sum().into_scalar::<f32>(), 4.0, "{device:?}");
}

fn auto_mode_falls_back_to_dense_with_the_same_result(device: &Device) {
    use burn_sparse_attn::DenseFallback;
    let (b, h, s, d, g) = (1, 2, 96, 32, 8);
    let [q, k, v] = [1, 2, 3].map(|seed| random_data([b, h, s, d], 40 + seed));
    let scale = Some(0.8 / (d as f64).sqrt());
    let always_sparse = DenseFallback {
        min_sparse_len: 0,
        max_density: 1.0,
    };
    let always_dense = DenseFallback {
        min_sparse_len: 10_000,
        max_density: 1.0,
    };
    {
        let device = device.clone();
        for budget in [s, 60, 9] {
            let ids = random_index_data([b, h, s.div_ceil(g)], s, budget, 50 + budget as u64);
            let keys = critical_keys(&ids, g, 1, s, s, &device);
            let (q, k, v) = (
                tensor(&q, &device),
                tensor(&k, &device),
                tensor(&v, &device),
            );
            assert!(!always_sparse.prefers_dense(&keys) && always_dense.prefers_dense(&keys));
            // A per-key bias (a scope bias) takes the same path as no bias.
            let key_bias = tensor(&random_data([b, 1, 1, s], 60 + budget as u64), &device);
            for bias in [None, Some(key_bias)] {
                let attend = |fallback| {
                    let options = SparseAttentionOptions {
                        scale,
                        fallback,
                        ..SparseAttentionOptions::default()
                    };
                    sparse_attention(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        &keys,
                        bias.clone(),
                        options,
                    )
                    .unwrap()
                };
                let sparse = attend(None).output;
                for fallback in [
                    always_sparse,
                    always_dense,
                    DenseFallback::for_device(&device),
                ] {
                    let auto = attend(Some(fallback));
                    // The dense fallback is Burn's attention, which has no log-sum-exp.
                    assert_eq!(auto.lse.is_none(), fallback.prefers_dense(&keys));
                    assert_close(
                        auto.output,
                        sparse.clone(),
                        burn_matmul_tolerance(&device),
                        &format!(
                            "budget {budget}, bias {}, {fallback:?} on {device:?}",
                            bias.is_some()
                        ),
                    );
                }
            }
            // Denser than 60% of the keys runs dense under a 0.6 density cap.
            let capped = DenseFallback {
                min_sparse_len: 0,
                max_density: 0.6,
            };
            assert_eq!(capped.prefers_dense(&keys), budget > 57, "budget {budget}");
            // The dense path checks its arguments like the sparse one.
            let err = sparse_attention(
                q.clone(),
                k.clone(),
                v.narrow(3, 0, 8),
                &keys,
                None,
                SparseAttentionOptions {
                    scale,
                    fallback: Some(always_dense),
                    ..SparseAttentionOptions::default()
                },
            )
            .map(|out| out.output)
            .unwrap_err();
            assert_eq!(err.argument, "v");
        }
    }
    // The measured CPU crossover: sequences this short run dense on Flex.
    assert!(
        DenseFallback::for_device(&Device::flex()).prefers_dense(&critical_keys(
            &random_index_data([1, 1, 8], 64, 6, 3),
            8,
            1,
            64,
            64,
            &Device::flex()
        ))
    );
}

per_backend!(
    tensors_live_on_the_backend,
    all_keys_equals_burn_dense_attention,
    random_index_equals_masked_dense_attention,
    auto_mode_falls_back_to_dense_with_the_same_result,
);
