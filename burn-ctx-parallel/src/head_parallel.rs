//! Head sharding (DeepSpeed-Ulysses): all-to-all from sequence shards to head shards, full
//! attention per head shard, all-to-all back.

use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use crate::group::{DeviceGroup, Transport};

/// Attention over sequence-sharded `q, k, v` (rank `r` holds `[B, H, S_r, D]`, shards in
/// sequence order) computed head-sharded: each rank attends over the whole sequence for
/// `H / world` heads with `attend(rank, q, k, v)` — dense, or sparse with that rank's heads'
/// index — and gets its sequence shard of the output back.
pub fn head_parallel_attention<T: Transport>(
    group: &DeviceGroup<T>,
    q: Vec<Tensor<4>>,
    k: Vec<Tensor<4>>,
    v: Vec<Tensor<4>>,
    attend: impl Fn(usize, Tensor<4>, Tensor<4>, Tensor<4>) -> Result<Tensor<4>, SparseAttnError>,
) -> Result<Vec<Tensor<4>>, SparseAttnError> {
    const F: &str = "head_parallel_attention";
    let world = group.world();
    SparseAttnError::check(q.len() == world && k.len() == world && v.len() == world, F, "q", format!("one shard per rank ({world}) in q, k and v"), format!("{}, {}, {}", q.len(), k.len(), v.len()))?;
    let heads = q[0].dims()[1];
    SparseAttnError::check(heads % world == 0, F, "q", format!("a head count divisible by the world size {world}"), heads)?;
    let seq: Vec<usize> = q.iter().map(|t| t.dims()[2]).collect();
    let head_split = vec![heads / world; world];
    let to_heads = |x: Vec<Tensor<4>>| group.all_to_all(x, 1, &head_split, 2);
    let (q, k, v) = (to_heads(q)?, to_heads(k)?, to_heads(v)?);
    let out = q
        .into_iter()
        .zip(k)
        .zip(v)
        .enumerate()
        .map(|(rank, ((q, k), v))| attend(rank, q, k, v))
        .collect::<Result<Vec<_>, _>>()?;
    group.all_to_all(out, 2, &seq, 1)
}

/// Bytes one rank sends in [`head_parallel_attention`] for `f32` q, k, v and output:
/// `4 · B · (H / N) · (S / N) · D · (N − 1)` elements of 4 bytes (DSV's formula, per device,
/// with equal shards).
pub fn head_parallel_bytes_per_rank(batch: usize, heads: usize, seq: usize, head_dim: usize, world: usize) -> u64 {
    (4 * batch * (heads / world) * (seq / world) * head_dim * (world - 1) * 4) as u64
}
