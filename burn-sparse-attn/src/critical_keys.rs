use alloc::format;
use alloc::vec::Vec;

use burn::tensor::{Bool, Int, Tensor};

use crate::error::SparseAttnError;
use crate::{AttnLayout, F32Precision};

/// How an index of critical keys maps to queries and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexShape {
    /// Consecutive queries that share one row of the index.
    pub group_size: usize,
    /// Keys per unit id: 1 for single keys, more for key blocks (the last may be partial).
    pub key_block: usize,
    /// Queries the index was made for.
    pub query_len: usize,
    /// Keys the index was made for.
    pub key_len: usize,
}

impl IndexShape {
    /// Key units: `ceil(key_len / key_block)`.
    pub fn units(&self) -> usize {
        self.key_len.div_ceil(self.key_block)
    }

    /// Query groups: `ceil(query_len / group_size)`.
    pub fn groups(&self) -> usize {
        self.query_len.div_ceil(self.group_size)
    }

    /// Checks every field ≥ 1, naming it as an argument of `function`.
    fn check(&self, function: &'static str) -> Result<(), SparseAttnError> {
        for (name, value) in [
            ("shape.group_size", self.group_size),
            ("shape.key_block", self.key_block),
            ("shape.query_len", self.query_len),
            ("shape.key_len", self.key_len),
        ] {
            SparseAttnError::check(value >= 1, function, name, "≥ 1", value)?;
        }
        Ok(())
    }
}

/// The critical keys of every query group: what sparse attention attends to.
///
/// `indices: [B, H, G, k]` lists, for each of the `G = ceil(query_len / group_size)` query
/// groups, `k` distinct key units in ascending order; a unit is one key when
/// `key_block == 1`, else `key_block` consecutive keys (the last block may be partial).
/// Made by [`select_critical_keys`](crate::select_critical_keys), or from your own index
/// through [`CriticalKeys::new`], which checks every id.
#[derive(Clone, Debug)]
pub struct CriticalKeys {
    indices: Tensor<4, Int>,
    shape: IndexShape,
}

impl CriticalKeys {
    /// Wraps a user-made index after checking its shape and every id (reads it back once).
    pub fn new(indices: Tensor<4, Int>, shape: IndexShape) -> Result<Self, SparseAttnError> {
        const F: &str = "CriticalKeys::new";
        shape.check(F)?;
        let IndexShape {
            group_size,
            query_len,
            ..
        } = shape;
        let [_, _, groups, budget] = indices.dims();
        let units = shape.units();
        SparseAttnError::check(
            groups == query_len.div_ceil(group_size),
            F,
            "indices",
            format!(
                "[B, H, ceil(query_len / group_size) = {}, k]",
                query_len.div_ceil(group_size)
            ),
            format!("{:?}", indices.dims()),
        )?;
        SparseAttnError::check(
            (1..=units).contains(&budget),
            F,
            "indices",
            format!("k (last dim) in 1..={units} key units"),
            budget,
        )?;
        let ids: Vec<i64> = indices
            .to_data()
            .convert::<i64>()
            .try_into_vec()
            .expect("int data converts to i64");
        for (row, chunk) in ids.chunks_exact(budget).enumerate() {
            let sorted = chunk.windows(2).all(|w| w[0] < w[1]);
            let in_range = chunk[0] >= 0 && chunk[budget - 1] < units as i64;
            SparseAttnError::check(
                sorted && in_range,
                F,
                "indices",
                format!("distinct ascending unit ids in 0..{units} in every row"),
                format!("row {row} = {chunk:?}"),
            )?;
        }
        Ok(Self::trusted(indices, shape))
    }

    /// The index that selects every key: `units = ceil(key_len / key_block)` blocks for each of
    /// the `ceil(query_len / group_size)` groups, on `device`. With it, sparse attention is
    /// dense attention in `O(S)` memory (see [`flash_attention`](crate::flash_attention)).
    pub fn all_keys(
        [batch, heads]: [usize; 2],
        shape: IndexShape,
        device: &burn::tensor::Device,
    ) -> Result<Self, SparseAttnError> {
        const F: &str = "CriticalKeys::all_keys";
        for (name, value) in [("batch", batch), ("heads", heads)] {
            SparseAttnError::check(value >= 1, F, name, "≥ 1", value)?;
        }
        shape.check(F)?;
        let (units, groups) = (shape.units(), shape.groups());
        let indices = Tensor::<1, Int>::arange(0..units as i64, device)
            .reshape([1, 1, 1, units])
            .expand([batch, heads, groups, units]);
        Ok(Self::trusted(indices, shape))
    }

    /// Wraps an index that an op of this crate produced (no read-back).
    pub(crate) fn trusted(indices: Tensor<4, Int>, shape: IndexShape) -> Self {
        Self { indices, shape }
    }

    /// The index of batch rows `start..start + len` (a sampler's conditional half).
    pub fn narrow_batch(&self, start: usize, len: usize) -> Result<Self, SparseAttnError> {
        let batch = self.indices.dims()[0];
        SparseAttnError::check(
            len >= 1 && start + len <= batch,
            "CriticalKeys::narrow_batch",
            "start..start + len",
            format!("a non-empty range within the batch of {batch}"),
            format!("{start}..{}", start + len),
        )?;
        Ok(self.with_indices(self.indices.clone().narrow(0, start, len)))
    }

    /// The index with its batch repeated `times` times (one selection serving both guidance
    /// branches).
    pub fn repeat_batch(&self, times: usize) -> Result<Self, SparseAttnError> {
        SparseAttnError::check(
            times >= 1,
            "CriticalKeys::repeat_batch",
            "times",
            "≥ 1",
            times,
        )?;
        Ok(self.with_indices(self.indices.clone().repeat_dim(0, times)))
    }

    fn with_indices(&self, indices: Tensor<4, Int>) -> Self {
        Self::trusted(indices, self.shape)
    }

    /// The index `[B, H, G, k]`.
    pub fn indices(&self) -> &Tensor<4, Int> {
        &self.indices
    }

    /// How the index maps to queries and keys.
    pub fn shape(&self) -> IndexShape {
        self.shape
    }

    /// Queries per group.
    pub fn group_size(&self) -> usize {
        self.shape.group_size
    }

    /// Keys per selected unit.
    pub fn key_block(&self) -> usize {
        self.shape.key_block
    }

    /// The layout the attention ops read this index with, at softmax scale `scale`, with f32
    /// inputs multiplied at `f32_precision`.
    pub fn layout(&self, scale: f64, f32_precision: F32Precision) -> AttnLayout {
        AttnLayout {
            group_size: self.shape.group_size,
            key_block: self.shape.key_block,
            scale,
            f32_precision,
        }
    }

    /// Units selected per group (`k`).
    pub fn budget(&self) -> usize {
        self.indices.dims()[3]
    }

    /// Query sequence length the index was made for.
    pub fn query_len(&self) -> usize {
        self.shape.query_len
    }

    /// Key sequence length the index was made for.
    pub fn key_len(&self) -> usize {
        self.shape.key_len
    }

    /// Fraction of the keys a query skips (exact for `key_block == 1`; with blocks, counts
    /// every selected block as full).
    pub fn sparsity(&self) -> f64 {
        let IndexShape {
            key_block, key_len, ..
        } = self.shape;
        let attended = (self.budget() * key_block).min(key_len);
        1.0 - attended as f64 / key_len as f64
    }

    /// The equivalent dense mask `[B, H, query_len, key_len]`, `true` where a query may
    /// **not** attend (Burn's convention for `module::attention`). Memory `O(S²)`: for tests,
    /// debugging and short sequences.
    pub fn dense_mask(&self) -> Tensor<4, Bool> {
        let [b, h, groups, budget] = self.indices.dims();
        let IndexShape {
            group_size,
            key_block,
            query_len,
            key_len,
        } = self.shape;
        let units = self.shape.units();
        let device = self.indices.device();
        let picked = Tensor::<4, Int>::zeros([b, h, groups, units], &device).scatter(
            3,
            self.indices.clone(),
            Tensor::ones([b, h, groups, budget], &device),
            burn::tensor::IndexingUpdateOp::Add,
        );
        let per_key = if key_block == 1 {
            picked
        } else {
            picked
                .reshape([b, h, groups, units, 1])
                .expand([b, h, groups, units, key_block])
                .reshape([b, h, groups, units * key_block])
                .slice([0..b, 0..h, 0..groups, 0..key_len])
        };
        per_key
            .reshape([b, h, groups, 1, key_len])
            .expand([b, h, groups, group_size, key_len])
            .reshape([b, h, groups * group_size, key_len])
            .slice([0..b, 0..h, 0..query_len, 0..key_len])
            .equal_elem(0)
    }
}
