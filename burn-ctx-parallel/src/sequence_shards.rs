//! A communicator as the sequence shards of a sharded DSV layer.

use burn::tensor::{Tensor, TensorData};
use burn_sparse_attn::dsv::SequenceShards;
use burn_sparse_attn::{CriticalKeys, SparseAttnError};

use crate::{Communicator, ring_attention, sparse_sequence_attention};

/// The ranks of the communicator hold the shards: dense attention runs as a ring, sparse
/// attention fetches only the selected remote keys ([`sparse_sequence_attention`]).
impl SequenceShards for Communicator {
    fn rank(&self) -> usize {
        Communicator::rank(self)
    }

    fn shard_lens(&self, len: usize) -> Result<Vec<usize>, SparseAttnError> {
        Ok(self.gather_sizes(len)?)
    }

    fn gather_sequence(&self, x: Tensor<4>) -> Result<Tensor<4>, SparseAttnError> {
        Ok(self.all_gather(x, 2)?)
    }

    fn dense_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> Result<Tensor<4>, SparseAttnError> {
        Ok(ring_attention(self, q, k, v, None)?)
    }

    fn sparse_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        keys: &CriticalKeys,
    ) -> Result<Tensor<4>, SparseAttnError> {
        Ok(sparse_sequence_attention(self, q, k, v, keys, None)?)
    }

    fn sum(&self, values: Vec<f32>) -> Result<Vec<f32>, SparseAttnError> {
        let n = values.len();
        let summed = self.all_reduce(Tensor::<1>::from_data(
            TensorData::new(values, [n]),
            self.device(),
        ))?;
        Ok(summed
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("f32 sums"))
    }
}
