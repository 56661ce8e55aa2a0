//! What the ops share: the tensors and layout of one attention call, and the sizes of a call.

use burn::backend::{
    Backend, ExtensionType, TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::Shape;

use crate::SelectionConfig;

/// How an index ties query rows to key rows, and the softmax scale: the non-tensor arguments
/// of the attention ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnLayout {
    /// Consecutive queries sharing one row of the index.
    pub group_size: usize,
    /// Keys per selected unit (1: single keys).
    pub key_block: usize,
    /// Factor on `q·k` before the softmax.
    pub scale: f64,
    /// How f32 inputs are multiplied.
    pub f32_precision: F32Precision,
}

/// How the attention kernels multiply f32 inputs (half inputs always run their own dtype's
/// tensor cores where the device has them, accumulating in f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum F32Precision {
    /// f32 products: the reference's results to rounding.
    #[default]
    Exact,
    /// TF32 tensor cores (10-bit mantissas in the products, f32 accumulation) where the device
    /// has them, as Burn's own f32 matmuls on CUDA; exact elsewhere (CPU backends, devices
    /// without TF32 matrix units).
    Tf32,
}

/// The inputs of one sparse attention call as the backend ops take them: `q: [B, H, S_q, D]`,
/// `k, v: [B, H, S_k, D]`, `index: [B, H, G, k]` and their layout. Build it through the
/// validated functions of this crate; the ops trust it.
#[derive(ExtensionType, Clone, Debug)]
#[extension_type(fusion: cfg(feature = "fusion"))]
pub struct AttnInputs<B: Backend> {
    /// Queries.
    pub q: FloatTensor<B>,
    /// Keys.
    pub k: FloatTensor<B>,
    /// Values.
    pub v: FloatTensor<B>,
    /// Selected key units of each query group, ascending.
    pub index: IntTensor<B>,
    /// Grouping, key blocks and scale.
    pub layout: AttnLayout,
}

impl<B: Backend> AttnInputs<B> {
    /// The sizes of this call.
    pub(crate) fn shape(&self) -> ProblemShape {
        ProblemShape::new(
            self.q.shape().dims::<4>(),
            self.k.shape()[2],
            self.layout.group_size,
            self.layout.key_block,
            self.index.shape()[3],
        )
    }
}

/// The sizes of one op call: queries `[B, H, S_q, C]` (`C` the head dim, or the rank of the
/// low-rank projections for selection), `S_k` keys, and how the index groups them. The one
/// shape type of the reference, the CPU kernels and the Cube launchers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProblemShape {
    pub batch: usize,
    pub heads: usize,
    pub query_len: usize,
    pub key_len: usize,
    /// Columns of q and k (head dim, or rank).
    pub head_dim: usize,
    pub group_size: usize,
    pub key_block: usize,
    /// Units selected per group.
    pub budget: usize,
}

impl ProblemShape {
    pub(crate) fn new(
        q: [usize; 4],
        key_len: usize,
        group_size: usize,
        key_block: usize,
        budget: usize,
    ) -> Self {
        let [batch, heads, query_len, head_dim] = q;
        Self {
            batch,
            heads,
            query_len,
            key_len,
            head_dim,
            group_size,
            key_block,
            budget,
        }
    }

    /// The sizes of a selection call on `q_lr`, `k_lr` of these shapes.
    pub(crate) fn of_selection(q_lr: &Shape, k_lr: &Shape, selection: &SelectionConfig) -> Self {
        Self::new(
            q_lr.dims::<4>(),
            k_lr[2],
            selection.group_size,
            selection.key_block,
            selection.budget,
        )
    }

    /// `batch · heads`: the leading dimension once the two are folded.
    pub(crate) fn bh(&self) -> usize {
        self.batch * self.heads
    }

    /// Query groups (the last may be partial).
    pub(crate) fn groups(&self) -> usize {
        self.query_len.div_ceil(self.group_size)
    }

    /// Key units (the last block may be partial).
    pub(crate) fn units(&self) -> usize {
        self.key_len.div_ceil(self.key_block)
    }

    /// Query rows once padded to whole groups.
    pub(crate) fn padded_queries(&self) -> usize {
        self.groups() * self.group_size
    }
}
