//! Each backend's native ops against the reference bodies (`oracle`): random inputs, awkward
//! shapes, forward, log-sum-exp, gradients and selection. Oracles run on the oracle device,
//! where they are fast, except the selection oracle and one forward case, which run on the
//! backend itself: the reference bodies are also the Cube backends' fallback.

use burn::tensor::{Device, Int, Tensor};
use burn_sparse_attn::{SelectionConfig, oracle, select_critical_keys};

use crate::common::*;
use burn_sparse_attn::{SparseAttentionOptions, sparse_attention};

/// (batch, heads, query len, key len, head dim, group size, key block, budget)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

const CASES: [Case; 7] = [
    (1, 2, 256, 256, 64, 32, 1, 256),
    (2, 3, 301, 301, 64, 32, 1, 30),
    (1, 2, 200, 200, 128, 16, 1, 21),
    (2, 1, 150, 150, 96, 32, 1, 17),
    (1, 2, 190, 190, 32, 32, 16, 3),
    (1, 1, 97, 130, 64, 8, 8, 17),
    (1, 2, 64, 64, 64, 64, 1, 1),
];

fn forward_and_lse_match_the_reference(device: &Device) {
    for (n, (b, h, sq, sk, d, g, block, budget)) in CASES.into_iter().enumerate() {
        let seed = 5000 + 10 * n as u64;
        let [q, k, v] = [
            random_data([b, h, sq, d], seed),
            random_data([b, h, sk, d], seed + 1),
            random_data([b, h, sk, d], seed + 2),
        ];
        let ids = random_index_data([b, h, sq.div_ceil(g)], sk.div_ceil(block), budget, seed + 3);
        let scale = 1.3 / (d as f64).sqrt();
        {
            // The reference runs on the backend itself for one awkward case (it is the Cube
            // backends' fallback), elsewhere on the oracle device.
            let on = |device: &Device| {
                let keys = critical_keys(&ids, g, block, sq, sk, device);
                let [q, k, v] = [&q, &k, &v].map(|x| tensor(x, device));
                (q, k, v, keys)
            };
            let oracle_on = if n == 5 {
                device.clone()
            } else {
                oracle_device()
            };
            let (oq, ok, ov, okeys) = on(&oracle_on);
            let want = oracle::reference_attention(oq, ok, ov, &okeys, scale);
            let (q, k, v, keys) = on(device);
            let got = sparse_attention(
                q,
                k,
                v,
                &keys,
                None,
                SparseAttentionOptions::default().with_scale(scale),
            )
            .unwrap();
            let what = format!("case {n} on {device:?}");
            assert_close(got.output, want.output, 1e-4, &what);
            assert_close(
                got.lse.expect("sparse"),
                want.lse.expect("reference"),
                1e-5,
                &format!("lse of {what}"),
            );
        }
    }
}

fn gradients_match_the_reference_autodiff(device: &Device) {
    for (n, (b, h, sq, sk, d, g, block, budget)) in CASES.into_iter().enumerate() {
        let seed = 6000 + 10 * n as u64;
        let data = gradient_case_data([b, h, sq, sk, d], seed);
        let ids = random_index_data([b, h, sq.div_ceil(g)], sk.div_ceil(block), budget, seed + 4);
        {
            let run = |device: &Device, native: bool| {
                let device = device.clone().autodiff();
                let [q, k, v] = [0, 1, 2].map(|i| tensor(&data[i], &device).require_grad());
                let keys = critical_keys(&ids, g, block, sq, sk, &device);
                let out = if native {
                    sparse(q.clone(), k.clone(), v.clone(), &keys)
                        .unwrap()
                        .output
                } else {
                    let scale = 1.0 / (d as f64).sqrt();
                    oracle::reference_attention(q.clone(), k.clone(), v.clone(), &keys, scale)
                        .output
                };
                let grads = (out * tensor(&data[3], &device)).sum().backward();
                [&q, &k, &v].map(|x| x.grad(&grads).expect("gradient"))
            };
            let [want, got] = [run(&oracle_device(), false), run(device, true)];
            for ((name, got), want) in ["dq", "dk", "dv"].iter().zip(got).zip(want) {
                assert_close(
                    got,
                    want,
                    2e-4,
                    &format!("{name} of case {n} on {device:?}"),
                );
            }
        }
    }
}

fn selection_matches_the_reference_id_for_id(device: &Device) {
    // (batch, heads, query len, key len, rank, group size, key block, budget)
    let cases = [
        (1, 2, 256, 256, 16, 32, 1, 25),
        (2, 3, 300, 320, 8, 16, 1, 64),
        (1, 2, 129, 512, 16, 32, 16, 5),
        (1, 1, 64, 64, 4, 8, 1, 64),
    ];
    for (n, (b, h, sq, sk, r, g, block, budget)) in cases.into_iter().enumerate() {
        let q_lr = grid_data([b, h, sq, r], 7000 + n as u64);
        let k_lr = grid_data([b, h, sk, r], 7100 + n as u64);
        let config = SelectionConfig::new(g, budget).with_key_block(block);
        {
            let device = device.clone();
            let (q, k) = (tensor(&q_lr, &device), tensor(&k_lr, &device));
            let want = oracle::reference_selection(q.clone(), k.clone(), config);
            let got = select_critical_keys(q, k, config).unwrap();
            let ids =
                |t: &Tensor<4, Int>| t.to_data().convert::<i64>().try_to_vec::<i64>().unwrap();
            assert_eq!(
                ids(got.indices()),
                ids(want.indices()),
                "case {n} on {device:?}"
            );
        }
    }
}

#[test]
fn large_sequence_runs_without_dense_buffers() {
    // 8k tokens, 90% sparse, forward and backward: dense [S, S] score matrices for the two
    // heads would take 512 MiB.
    let Some(kib) =
        peak_of_case_alone("kernels::large_sequence_runs_without_dense_buffers", || {
            let (b, h, s, d, g) = (1, 2, 8192, 64, 64);
            let device = Device::flex().autodiff();
            let x = tensor(&random_data([b, h, s, d], 1), &device).require_grad();
            let keys = select_critical_keys(
                x.clone().narrow(3, 0, 16).detach(),
                x.clone().narrow(3, 0, 16).detach(),
                SelectionConfig::new(g, s / 10),
            )
            .unwrap();
            let out = sparse(x.clone(), x.clone(), x.clone(), &keys).unwrap();
            assert_eq!(out.output.dims(), [b, h, s, d]);
            let grads = out.output.sum().backward();
            let grad = x.grad(&grads).unwrap().abs().max().into_scalar::<f32>();
            assert!(grad.is_finite());
        })
    else {
        return;
    };
    println!(
        "8k tokens, sparse forward + backward: peak resident {} MiB",
        kib / 1024
    );
    // Inputs, gradients and the index are a few MiB; Burn and the test binary ~100 MiB.
    assert!(
        kib < 256 * 1024,
        "peak resident memory {} MiB: a dense buffer was made",
        kib / 1024
    );
}

per_backend!(
    forward_and_lse_match_the_reference,
    gradients_match_the_reference_autodiff,
    selection_matches_the_reference_id_for_id,
);
