//! NaN and ±inf in q, k or v reach exactly the outputs and gradients they touch, on every
//! backend, as in dense attention: a diverging input shows instead of vanishing.

use burn::tensor::{Device, Tensor, TensorData};

use crate::common::*;

/// (batch, heads, length, head dim, group, key block, budget): the (group, head dim, block)
/// triple of a forward case, so a Cube backend compiles no extra kernels.
const CASE: (usize, usize, usize, usize, usize, usize, usize) = (2, 2, 45, 64, 8, 8, 3);

/// Which input is poisoned, where (batch, head, row, column), and with what.
#[derive(Clone, Copy, Debug)]
enum Poison {
    Q(usize, usize, usize, usize, f32),
    K(usize, usize, usize, usize, f32),
    V(usize, usize, usize, usize, f32),
}

const POISONS: [Poison; 5] = [
    Poison::Q(1, 0, 13, 5, f32::NAN),
    Poison::K(0, 1, 30, 0, f32::NAN),
    Poison::V(1, 1, 7, 3, f32::INFINITY),
    Poison::V(0, 0, 44, 63, f32::NEG_INFINITY),
    Poison::Q(0, 1, 44, 0, f32::INFINITY),
];

fn set(data: &TensorData, [b, h, row, col]: [usize; 4], value: f32) -> TensorData {
    let shape = data.shape().to_vec();
    let mut values = data.as_slice::<f32>().unwrap().to_vec();
    values[((b * shape[1] + h) * shape[2] + row) * shape[3] + col] = value;
    TensorData::new(values, shape)
}

/// Per (batch, head): which rows of `[B, H, S, D]` data hold a non-finite value.
fn non_finite_rows(data: TensorData) -> Vec<Vec<bool>> {
    let shape = data.shape().to_vec();
    let width: usize = shape[3..].iter().product::<usize>().max(1);
    let values = data.convert::<f32>();
    values
        .as_slice::<f32>()
        .unwrap()
        .chunks(shape[2] * width)
        .map(|head| {
            head.chunks(width)
                .map(|row| row.iter().any(|x| !x.is_finite()))
                .collect()
        })
        .collect()
}

/// Rows of `actual` that the poison does not reach equal `clean`'s; the others are exactly
/// `touched`.
fn assert_reaches_exactly(
    actual: TensorData,
    clean: TensorData,
    touched: &[Vec<bool>],
    what: &str,
) {
    let listed = |rows: &[Vec<bool>]| -> Vec<(usize, usize)> {
        let at = |(bh, head): (usize, &Vec<bool>)| {
            let rows = head
                .iter()
                .enumerate()
                .filter(|r| *r.1)
                .map(move |r| (bh, r.0));
            rows.collect::<Vec<_>>()
        };
        rows.iter().enumerate().flat_map(at).collect()
    };
    assert_eq!(
        listed(&non_finite_rows(actual.clone())),
        listed(touched),
        "{what}: (batch·heads + head, row) of the non-finite rows, and of the rows reached"
    );
    let shape = actual.shape().to_vec();
    let width = shape[3..].iter().product::<usize>().max(1);
    let (a, c) = (actual.convert::<f32>(), clean.convert::<f32>());
    let rows = a.as_slice::<f32>().unwrap().chunks(width);
    for (n, (row, clean_row)) in rows
        .zip(c.as_slice::<f32>().unwrap().chunks(width))
        .enumerate()
    {
        if !touched.concat()[n] {
            for (x, y) in row.iter().zip(clean_row) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{what}: row {n}: {x} ≠ {y}"
                );
            }
        }
    }
}

fn non_finite_inputs_reach_exactly_the_rows_they_touch(device: &Device) {
    let (b, h, s, d, g, block, budget) = CASE;
    let [q, k, v, w] = gradient_case_data([b, h, s, s, d], 4242);
    let ids = random_index_data([b, h, s.div_ceil(g)], s.div_ceil(block), budget, 4243);
    let selected = |bh: usize, row: usize, key: usize| {
        let id = ids.as_slice::<i64>().unwrap();
        let group = &id[(bh * s.div_ceil(g) + row / g) * budget..][..budget];
        group.contains(&((key / block) as i64))
    };
    let run = |[q, k, v]: [&TensorData; 3]| {
        let device = device.clone().autodiff();
        let (q, k, v) = (
            tensor(q, &device).require_grad(),
            tensor(k, &device).require_grad(),
            tensor(v, &device).require_grad(),
        );
        let keys = critical_keys(&ids, g, block, s, s, &device);
        let attended = sparse(q.clone(), k.clone(), v.clone(), &keys).expect("valid inputs");
        let (out, lse) = (attended.output, attended.lse.expect("sparse"));
        let grads = (out.clone() * tensor(&w, &device)).sum().backward();
        let grad = |x: &Tensor<4>| x.grad(&grads).expect("a gradient").into_data();
        [
            out.into_data(),
            lse.unsqueeze_dim::<4>(3).into_data(),
            grad(&q),
            grad(&k),
            grad(&v),
        ]
    };
    let clean = run([&q, &k, &v]);
    for poison in POISONS {
        let (mut pq, mut pk, mut pv) = (q.clone(), k.clone(), v.clone());
        let (bh, row, in_scores) = match poison {
            Poison::Q(pb, ph, r, c, x) => {
                pq = set(&q, [pb, ph, r, c], x);
                (pb * h + ph, r, true)
            }
            Poison::K(pb, ph, r, c, x) => {
                pk = set(&k, [pb, ph, r, c], x);
                (pb * h + ph, r, true)
            }
            Poison::V(pb, ph, r, c, x) => {
                pv = set(&v, [pb, ph, r, c], x);
                (pb * h + ph, r, false)
            }
        };
        // Query rows the poison reaches: the row itself (q), or the rows whose group selected
        // the poisoned key (k, v).
        let rows: Vec<Vec<bool>> = (0..b * h)
            .map(|x| {
                (0..s)
                    .map(|i| {
                        x == bh
                            && match poison {
                                Poison::Q(..) => i == row,
                                _ => selected(x, i, row),
                            }
                    })
                    .collect()
            })
            .collect();
        // Keys whose gradients those rows reach: every key a reached row selected.
        let keys: Vec<Vec<bool>> = (0..b * h)
            .map(|x| {
                (0..s)
                    .map(|j| (0..s).any(|i| rows[x][i] && selected(x, i, j)))
                    .collect()
            })
            .collect();
        assert!(
            rows.concat().contains(&true),
            "{poison:?} reaches no row: a vacuous case"
        );
        let none = vec![vec![false; s]; b * h];
        let poisoned = run([&pq, &pk, &pv]);
        let what = |t: &str| format!("{t} with {poison:?} on {device:?}");
        let [out, lse, dq, dk, dv] = poisoned;
        assert_reaches_exactly(out, clean[0].clone(), &rows, &what("out"));
        // v takes no part in the scores: a poisoned value leaves lse and dv (Σ P·dO) clean.
        let score_rows = if in_scores { &rows } else { &none };
        assert_reaches_exactly(lse, clean[1].clone(), score_rows, &what("lse"));
        assert_reaches_exactly(dq, clean[2].clone(), &rows, &what("dq"));
        assert_reaches_exactly(dk, clean[3].clone(), &keys, &what("dk"));
        let dv_keys = if in_scores { &keys } else { &none };
        assert_reaches_exactly(dv, clean[4].clone(), dv_keys, &what("dv"));
    }
}

per_backend!(non_finite_inputs_reach_exactly_the_rows_they_touch);
