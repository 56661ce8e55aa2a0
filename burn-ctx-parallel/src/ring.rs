//! Sequence sharding (ring attention): K/V blocks travel around the ring and each rank merges
//! its partial attentions by log-sum-exp.

use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use crate::CommError;
use crate::Communicator;

/// Dense attention of one query block against one key block, with its log-sum-exp
/// (`[B, H, S_q, 1]`), from differentiable tensor ops.
fn partial_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: f64,
) -> (Tensor<4>, Tensor<4>) {
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

/// Attention over this rank's sequence shard `q, k, v: [B, H, S_r, D]` (shards in rank
/// order): `world − 1` ring steps pass every K/V block once round the ring; the output stays
/// sharded. Forward and backward (through autodiff and the collectives' transposes) equal
/// unsharded attention.
pub fn ring_attention(
    comm: &Communicator,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    scale: Option<f64>,
) -> Result<Tensor<4>, CommError> {
    const F: &str = "ring_attention";
    SparseAttnError::check(
        k.dims() == v.dims() && k.dims()[..2] == q.dims()[..2] && k.dims()[3] == q.dims()[3],
        F,
        "k",
        format!(
            "[{}, {}, S_r, {}] in k and v",
            q.dims()[0],
            q.dims()[1],
            q.dims()[3]
        ),
        format!("{:?}, {:?}", k.dims(), v.dims()),
    )?;
    let (world, rank) = (comm.world(), comm.rank());
    let d = q.dims()[3];
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let (next, prev) = ((rank + 1) % world, (rank + world - 1) % world);
    let mut acc = partial_attention(q.clone(), k.clone(), v.clone(), scale);
    // K and V travel together: one message per step.
    let mut kv = Tensor::cat(vec![k, v], 3);
    for _ in 1..world {
        kv = comm.send_recv(kv, next, prev, 2)?;
        let (k, v) = (kv.clone().narrow(3, 0, d), kv.clone().narrow(3, d, d));
        acc = merge(acc, partial_attention(q.clone(), k, v, scale));
    }
    Ok(acc.0)
}
