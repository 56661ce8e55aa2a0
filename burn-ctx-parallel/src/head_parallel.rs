//! Head sharding (DeepSpeed-Ulysses): all-to-all from sequence shards to head shards, full
//! attention per head shard, all-to-all back.

use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use crate::CommError;
use crate::Communicator;

/// Attention over this rank's sequence shard `q, k, v: [B, H, S_r, D]` (shards in rank
/// order) computed head-sharded: this rank attends over the whole sequence for heads
/// `rank·H/world .. (rank+1)·H/world` with `attend(q, k, v)` — dense, or sparse with those
/// heads' index — and gets its sequence shard of the output back.
pub fn head_parallel_attention<E: Into<CommError>>(
    comm: &Communicator,
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    attend: impl FnOnce(Tensor<4>, Tensor<4>, Tensor<4>) -> Result<Tensor<4>, E>,
) -> Result<Tensor<4>, CommError> {
    const F: &str = "head_parallel_attention";
    let world = comm.world();
    let heads = q.dims()[1];
    SparseAttnError::check(
        heads.is_multiple_of(world),
        F,
        "q",
        format!("a head count divisible by the world size {world}"),
        heads,
    )?;
    SparseAttnError::check(
        k.dims() == q.dims() && v.dims() == q.dims(),
        F,
        "k",
        format!("the shape of q, {:?}, in k and v", q.dims()),
        format!("{:?}, {:?}", k.dims(), v.dims()),
    )?;
    let seq = comm.gather_sizes(q.dims()[2])?;
    let head_split = vec![heads / world; world];
    let to_heads = |x: Tensor<4>| comm.all_to_all(x, 1, &head_split, 2);
    let out = attend(to_heads(q)?, to_heads(k)?, to_heads(v)?).map_err(Into::into)?;
    comm.all_to_all(out, 2, &seq, 1)
}

/// Bytes one rank sends in [`head_parallel_attention`] for `f32` q, k, v and output:
/// `4 · B · (H / N) · (S / N) · D · (N − 1)` elements of 4 bytes (DSV's formula, per device,
/// with equal shards).
pub fn head_parallel_bytes_per_rank(
    batch: usize,
    heads: usize,
    seq: usize,
    head_dim: usize,
    world: usize,
) -> u64 {
    (4 * batch * (heads / world) * (seq / world) * head_dim * (world - 1) * 4) as u64
}
