//! `flash_attention` (every key selected, linear memory) is Burn's dense attention: the same
//! output, log-sum-exp and gradients, for lengths that are not multiples of its tiles and
//! queries and keys of different lengths.

use burn::tensor::Device;
use burn_sparse_attn::flash_attention;

use crate::common::*;

fn flash_attention_equals_dense_attention(device: &Device) {
    // (batch, heads, query len, key len, head dim)
    for (n, (b, h, sq, sk, d)) in [(2, 2, 100, 70, 32), (1, 3, 64, 200, 64), (1, 1, 5, 1, 16)]
        .into_iter()
        .enumerate()
    {
        let seed = 9500 + 10 * n as u64;
        let data = gradient_case_data([b, h, sq, sk, d], seed);
        let scale = 1.1 / (d as f64).sqrt();
        let run = |device: &Device, flash: bool| {
            let device = device.clone().autodiff();
            let [q, k, v] = [0, 1, 2].map(|i| tensor(&data[i], &device).require_grad());
            let (out, lse) = if flash {
                let out = flash_attention(q.clone(), k.clone(), v.clone(), Some(scale)).unwrap();
                (
                    out.output,
                    out.lse.expect("flash attention has no fallback"),
                )
            } else {
                let scores = masked_scores(q.clone(), k.clone(), None, scale);
                let lse = scores.clone().exp().sum_dim(3).log().squeeze_dim(3);
                (
                    dense_masked_attention(q.clone(), k.clone(), v.clone(), None, scale),
                    lse,
                )
            };
            let grads = (out.clone() * tensor(&data[3], &device)).sum().backward();
            let grads = [&q, &k, &v].map(|x| x.grad(&grads).expect("gradient"));
            (out.inner(), lse.inner(), grads)
        };
        let (out, lse, grads) = run(device, true);
        let (want_out, want_lse, want_grads) = run(&oracle_device(), false);
        let what = format!("case {n} on {device:?}");
        assert_close(out, want_out, 1e-4, &what);
        assert_close(lse, want_lse, 1e-4, &format!("lse of {what}"));
        for ((name, got), want) in ["dq", "dk", "dv"].iter().zip(grads).zip(want_grads) {
            assert_close(got, want, 2e-4, &format!("{name} of {what}"));
        }
    }
}

fn flash_attention_checks_its_arguments(device: &Device) {
    let q = tensor(&random_data([1, 1, 4, 8], 1), device);
    let k = tensor(&random_data([1, 1, 6, 8], 2), device);
    let err = flash_attention(q.clone(), k.clone().narrow(3, 0, 4), k.clone(), None).unwrap_err();
    assert_eq!(err.argument, "k", "{err}");
    let err = flash_attention(q.clone(), k.clone(), k.clone().narrow(2, 0, 5), None).unwrap_err();
    assert_eq!(err.argument, "v", "{err}");
    let out = flash_attention(q, k.clone(), k, Some(-1.0));
    assert!(out.is_err(), "a negative scale is refused");
}

#[test]
fn flash_attention_trains_without_a_score_matrix() {
    // 4k tokens, two heads, forward and backward of dense attention: one [S, S] f32 score
    // matrix of the two heads is 128 MiB, and an autodiff graph of the plain form keeps two.
    let Some(kib) = peak_of_case_alone(
        "flash::flash_attention_trains_without_a_score_matrix",
        || {
            let (b, h, s, d) = (1, 2, 4096, 64);
            let device = Device::flex().autodiff();
            let x = tensor(&random_data([b, h, s, d], 1), &device).require_grad();
            let out = flash_attention(x.clone(), x.clone(), x.clone(), None).unwrap();
            let grads = out.output.sum().backward();
            let grad = x.grad(&grads).unwrap().abs().max().into_scalar::<f32>();
            assert!(grad.is_finite());
        },
    ) else {
        return;
    };
    println!(
        "4k tokens, flash forward + backward: peak resident {} MiB",
        kib / 1024
    );
    // Inputs, gradients and the index are a few MiB, Burn and the test binary about 60 MiB:
    // one score matrix (128 MiB) would show.
    assert!(
        kib < 120 * 1024,
        "peak resident memory {} MiB: a score matrix was made",
        kib / 1024
    );
}

per_backend!(
    flash_attention_equals_dense_attention,
    flash_attention_checks_its_arguments,
);
