//! A sequence split over a group of ranks, as a sharded DSV layer sees it.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use burn::tensor::Tensor;

use super::grid::{Reorder, TokenGrid};
use crate::{CriticalKeys, SparseAttnError};

/// The ranks of a group, each holding one contiguous shard of a sequence (shards in rank
/// order), and the exchanges a DSV layer needs to attend over the whole sequence from its own
/// shard ([`DsvAttention::forward_sharded`](super::DsvAttention::forward_sharded)).
/// `burn-ctx-parallel` implements it for its `Communicator` (threads or MPI processes).
///
/// Every method is collective: when one rank calls it, every rank calls it, in the same order.
pub trait SequenceShards {
    /// This rank's place in the group.
    fn rank(&self) -> usize;

    /// Every rank's shard length, in rank order, given this rank's.
    fn shard_lens(&self, len: usize) -> Result<Vec<usize>, SparseAttnError>;

    /// Every rank's `x: [B, H, S_r, D]` concatenated along the sequence (dim 2), in rank
    /// order; differentiable (the gradient of each part returns to its rank).
    fn gather_sequence(&self, x: Tensor<4>) -> Result<Tensor<4>, SparseAttnError>;

    /// Dense attention of this rank's queries `q` against every rank's `k` and `v`
    /// (`[B, H, S_r, D]` each); the gradient reaches every rank's keys and values.
    fn dense_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> Result<Tensor<4>, SparseAttnError>;

    /// Sparse attention of this rank's queries over `keys`, whose unit ids index the whole
    /// sequence (`key_len` = the sum of the shards); `k`, `v` are this rank's shard.
    fn sparse_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        keys: &CriticalKeys,
    ) -> Result<Tensor<4>, SparseAttnError>;

    /// The element-wise sum over ranks of `values` (the same length on every rank).
    fn sum(&self, values: Vec<f32>) -> Result<Vec<f32>, SparseAttnError>;
}

/// How a sequence is cut into shards, from one rank's view (one shard when unsharded).
pub(crate) struct ShardShape {
    /// Every shard's length and first token, in rank order.
    pub lens: Vec<usize>,
    pub offsets: Vec<usize>,
    rank: usize,
    height: usize,
    width: usize,
    cube: [usize; 3],
}

impl ShardShape {
    /// The shards of the ranks of `shards` (this rank's `len` tokens on `grid`), checked
    /// for what the cube order needs: whole frames, and whole query cubes in time in every
    /// shard but the last, so that the sequence's cube order is the shards' in turn.
    pub fn new(
        function: &'static str,
        grid: TokenGrid,
        cube: [usize; 3],
        shards: Option<&dyn SequenceShards>,
        len: usize,
    ) -> Result<Self, SparseAttnError> {
        let (lens, rank) = match shards {
            Some(shards) => (shards.shard_lens(len)?, shards.rank()),
            None => (vec![len], 0),
        };
        let plane = grid.height * grid.width;
        let cube_frames = cube[0].max(1);
        let last = lens.len() - 1;
        SparseAttnError::check(
            lens.iter().enumerate().all(|(i, l)| {
                l.is_multiple_of(plane) && (i == last || (l / plane).is_multiple_of(cube_frames))
            }),
            function,
            "grid",
            format!(
                "shards of whole {}×{} frames, all but the last a multiple of the query cube's \
                 {cube_frames} frames",
                grid.height, grid.width
            ),
            format!("shard lengths {lens:?}"),
        )?;
        let offsets = lens
            .iter()
            .scan(0, |acc, &l| {
                let o = *acc;
                *acc += l;
                Some(o)
            })
            .collect();
        Ok(Self {
            lens,
            offsets,
            rank,
            height: grid.height,
            width: grid.width,
            cube,
        })
    }

    /// This rank's first token in the sequence.
    pub fn offset(&self) -> usize {
        self.offsets[self.rank]
    }

    /// The sequence's length.
    pub fn total(&self) -> usize {
        self.lens.iter().sum()
    }

    /// The shortest shard's length.
    pub fn shortest(&self) -> usize {
        self.lens.iter().copied().min().unwrap_or(0)
    }

    fn grid(&self, shard: usize) -> TokenGrid {
        TokenGrid::new(
            self.lens[shard] / (self.height * self.width),
            self.height,
            self.width,
        )
    }

    /// `x: [B, H, S, D]`, every shard's tokens in turn, into the sequence's cube order; `own`
    /// is this rank's reorder (all of it when unsharded).
    pub fn in_cube_order(&self, x: Tensor<4>, own: &Reorder) -> Tensor<4> {
        if self.lens.len() == 1 {
            return own.apply(x);
        }
        let device = x.device();
        let parts = (0..self.lens.len())
            .map(|j| {
                let part = x.clone().narrow(2, self.offsets[j], self.lens[j]);
                if j == self.rank {
                    own.apply(part)
                } else {
                    Reorder::new(self.grid(j), self.cube, &device).apply(part)
                }
            })
            .collect();
        Tensor::cat(parts, 2)
    }

    /// The token (in the sequence) at each position of the sequence's cube order.
    pub fn key_order(&self) -> Vec<usize> {
        (0..self.lens.len())
            .flat_map(|j| {
                let offset = self.offsets[j];
                self.grid(j)
                    .cube_order(self.cube)
                    .into_iter()
                    .map(move |t| t + offset)
            })
            .collect()
    }
}
