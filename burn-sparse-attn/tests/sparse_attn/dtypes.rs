//! Half-precision inputs (f16, bf16) on every backend that has the dtype: the output and the
//! gradients come back in the input dtype, the log-sum-exp in f32, and all of them follow
//! the f32 computation on the same (rounded) inputs within the dtype's precision; the
//! selection on half low-rank inputs picks the same keys as on f32; f32 on TF32 products
//! follows exact f32.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_sparse_attn::{
    F32Precision, SelectionConfig, SparseAttentionOptions, select_critical_keys, sparse_attention,
};

use crate::common::*;

/// The half dtypes and the relative error each allows after rounding its result: f16 keeps
/// 11 significant bits, bf16 8.
const HALVES: [(DType, f32); 2] = [(DType::F16, 5e-3), (DType::BF16, 3e-2)];

/// `data` rounded to `dtype` and back, as f32 on `device`.
fn rounded(data: &TensorData, dtype: DType, device: &Device) -> Tensor<4> {
    tensor(data, device).cast(dtype).cast(DType::F32)
}

fn forward_and_gradients_in_half_precision_follow_f32(device: &Device) {
    // (batch, heads, query len, key len, head dim, group, key block, budget): a partial last
    // group and block, batch > 1, every key selected, and a head dim off the fragment size.
    let cases = [
        (2, 2, 70, 70, 64, 32, 1, 20),
        (1, 3, 48, 80, 40, 16, 16, 5),
        (1, 1, 33, 33, 128, 8, 1, 33),
    ];
    for (dtype, tolerance) in HALVES {
        if !device.supports_dtype(dtype) {
            continue;
        }
        for (n, (b, h, sq, sk, d, g, block, budget)) in cases.into_iter().enumerate() {
            let seed = 9000 + 10 * n as u64;
            let data = gradient_case_data([b, h, sq, sk, d], seed);
            let ids =
                random_index_data([b, h, sq.div_ceil(g)], sk.div_ceil(block), budget, seed + 4);
            let what = format!("{dtype:?} case {n} on {device:?}");
            let run = |half: bool| {
                let device = device.clone().autodiff();
                let input = |i: usize| {
                    let x = rounded(&data[i], dtype, &device);
                    if half { x.cast(dtype) } else { x }.require_grad()
                };
                let [q, k, v] = [0, 1, 2].map(input);
                let keys = critical_keys(&ids, g, block, sq, sk, &device);
                let out = sparse(q.clone(), k.clone(), v.clone(), &keys).unwrap();
                let weights = rounded(&data[3], dtype, &device);
                let weights = if half { weights.cast(dtype) } else { weights };
                let grads = (out.output.clone() * weights).sum().backward();
                let grads = [&q, &k, &v].map(|x| x.grad(&grads).expect("gradient"));
                (out.output, out.lse.expect("sparse"), grads)
            };
            let (out, lse, grads) = run(true);
            let (want_out, want_lse, want_grads) = run(false);
            assert_eq!(out.dtype(), dtype, "output dtype of {what}");
            assert_eq!(lse.dtype(), DType::F32, "lse dtype of {what}");
            assert_close(out.cast(DType::F32), want_out, tolerance, &what);
            assert_close(lse, want_lse, tolerance, &format!("lse of {what}"));
            for ((name, got), want) in ["dq", "dk", "dv"].iter().zip(grads).zip(want_grads) {
                assert_eq!(got.dtype(), dtype, "{name} dtype of {what}");
                assert_close(
                    got.cast(DType::F32),
                    want,
                    2.0 * tolerance,
                    &format!("{name} of {what}"),
                );
            }
        }
    }
}

fn selection_on_half_inputs_picks_the_f32_keys(device: &Device) {
    // Eighths in [-1, 1] are exact in both half dtypes, and every partial sum of the scores
    // is exact in f32: the selection must agree id for id.
    let (b, h, s, r) = (2, 2, 96, 16);
    let (q_lr, k_lr) = (grid_data([b, h, s, r], 77), grid_data([b, h, s, r], 78));
    for config in [
        SelectionConfig::new(16, 12),
        SelectionConfig::new(32, 3).with_key_block(16),
    ] {
        let pick = |dtype: DType| {
            let keys = select_critical_keys(
                tensor(&q_lr, device).cast(dtype),
                tensor(&k_lr, device).cast(dtype),
                config,
            )
            .unwrap();
            let ids: &Tensor<4, Int> = keys.indices();
            ids.to_data().convert::<i64>().to_vec::<i64>().unwrap()
        };
        let want = pick(DType::F32);
        for (dtype, _) in HALVES {
            if device.supports_dtype(dtype) {
                assert_eq!(pick(dtype), want, "{dtype:?} {config:?} on {device:?}");
            }
        }
    }
}

fn tf32_products_follow_exact_f32(device: &Device) {
    // TF32 keeps 11 significant bits of each product's factors, as f16 does; devices without
    // TF32 matrix units run exact f32. (batch, heads, query len, key len, head dim, group, key
    // block, budget): single keys, and blocks of 16 (the tiled dK/dV).
    let cases = [(2, 2, 70, 70, 64, 32, 1, 20), (1, 3, 48, 80, 40, 16, 16, 5)];
    for (n, (b, h, sq, sk, d, g, block, budget)) in cases.into_iter().enumerate() {
        let seed = 9200 + 10 * n as u64;
        let data = gradient_case_data([b, h, sq, sk, d], seed);
        let ids = random_index_data([b, h, sq.div_ceil(g)], sk.div_ceil(block), budget, seed + 4);
        let run = |precision: F32Precision| {
            let device = device.clone().autodiff();
            let [q, k, v] = [0, 1, 2].map(|i| tensor(&data[i], &device).require_grad());
            let keys = critical_keys(&ids, g, block, sq, sk, &device);
            let options = SparseAttentionOptions::default().with_f32_precision(precision);
            let out = sparse_attention(q.clone(), k.clone(), v.clone(), &keys, None, options)
                .unwrap()
                .output;
            let grads = (out.clone() * tensor(&data[3], &device)).sum().backward();
            let grads = [&q, &k, &v].map(|x| x.grad(&grads).expect("gradient"));
            (out.inner(), grads)
        };
        let (out, grads) = run(F32Precision::Tf32);
        let (want_out, want_grads) = run(F32Precision::Exact);
        let what = format!("TF32 case {n} on {device:?}");
        assert_close(out, want_out, 5e-3, &what);
        for ((name, got), want) in ["dq", "dk", "dv"].iter().zip(grads).zip(want_grads) {
            assert_close(got, want, 1e-2, &format!("{name} of {what}"));
        }
    }
}

per_backend!(
    forward_and_gradients_in_half_precision_follow_f32,
    selection_on_half_inputs_picks_the_f32_keys,
    tf32_products_follow_exact_f32,
);
