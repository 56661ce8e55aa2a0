//! Sequence sharding (ring attention): K/V blocks travel around the ring and each rank merges
//! its partial attentions by log-sum-exp.

use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use crate::group::{DeviceGroup, Transport};

/// Dense attention of one query block against one key block, with its log-sum-exp
/// (`[B, H, S_q, 1]`), from differentiable tensor ops.
fn partial_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64) -> (Tensor<4>, Tensor<4>) {
    let scores = q.matmul(k.swap_dims(2, 3)) * scale;
    let max = scores.clone().max_dim(3).detach();
    let weights = (scores - max.clone()).exp();
    let sum = weights.clone().sum_dim(3);
    let out = weights.matmul(v) / sum.clone();
    (out, max + sum.log())
}

/// Merges two partial attentions over disjoint key sets.
fn merge(a: (Tensor<4>, Tensor<4>), b: (Tensor<4>, Tensor<4>)) -> (Tensor<4>, Tensor<4>) {
    let (out_a, lse_a) = a;
    let (out_b, lse_b) = b;
    let max = lse_a.clone().max_pair(lse_b.clone()).detach();
    let (wa, wb) = ((lse_a - max.clone()).exp(), (lse_b - max.clone()).exp());
    let total = wa.clone() + wb.clone();
    let out = (out_a * wa + out_b * wb) / total.clone();
    (out, max + total.log())
}

/// Attention over sequence-sharded `q, k, v` (rank `r` holds `[B, H, S_r, D]`): `world − 1`
/// ring steps pass every K/V block once round the ring; outputs stay sharded. Forward and
/// backward (through autodiff) equal unsharded attention.
pub fn ring_attention<T: Transport>(group: &DeviceGroup<T>, q: Vec<Tensor<4>>, k: Vec<Tensor<4>>, v: Vec<Tensor<4>>, scale: Option<f64>) -> Result<Vec<Tensor<4>>, SparseAttnError> {
    const F: &str = "ring_attention";
    let world = group.world();
    SparseAttnError::check(q.len() == world && k.len() == world && v.len() == world, F, "q", format!("one shard per rank ({world}) in q, k and v"), format!("{}, {}, {}", q.len(), k.len(), v.len()))?;
    let d = q[0].dims()[3];
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let mut acc: Vec<Option<(Tensor<4>, Tensor<4>)>> = vec![None; world];
    let (mut k_blocks, mut v_blocks) = (k, v);
    for step in 0..world {
        for r in 0..world {
            let part = partial_attention(q[r].clone(), k_blocks[r].clone(), v_blocks[r].clone(), scale);
            acc[r] = Some(match acc[r].take() {
                Some(prev) => merge(prev, part),
                None => part,
            });
        }
        if step + 1 < world {
            // Each rank passes the block it holds to the next rank.
            let pass = |blocks: Vec<Tensor<4>>| -> Vec<Tensor<4>> {
                let mut next: Vec<Option<Tensor<4>>> = vec![None; world];
                for (r, b) in blocks.into_iter().enumerate() {
                    next[(r + 1) % world] = Some(group.send(b, r, (r + 1) % world));
                }
                next.into_iter().map(|b| b.expect("every rank receives a block")).collect()
            };
            k_blocks = pass(k_blocks);
            v_blocks = pass(v_blocks);
        }
    }
    Ok(acc.into_iter().map(|a| a.expect("world ≥ 1").0).collect())
}
