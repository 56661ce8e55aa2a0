//! Video tokens on a 3D grid and their reordering into query cubes.

use alloc::vec::Vec;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::{SparseAttnError, error::ensure};

/// The token grid of a video: `frames × height × width` tokens, flattened frame-major
/// (`t·H·W + y·W + x`), which is how patch embeddings lay them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrid {
    /// Tokens along time.
    pub frames: usize,
    /// Tokens along height.
    pub height: usize,
    /// Tokens along width.
    pub width: usize,
}

impl TokenGrid {
    /// A grid of `frames × height × width` tokens.
    pub fn new(frames: usize, height: usize, width: usize) -> Self {
        Self { frames, height, width }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.frames * self.height * self.width
    }

    /// Whether the grid holds no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frame-major token ids listed cube by cube: cubes of `cube = [t, h, w]` tokens in
    /// frame-major cube order, tokens frame-major inside each cube. Cubes at the far edges
    /// are cut where the grid does not divide, so every token appears once.
    pub fn cube_order(&self, cube: [usize; 3]) -> Vec<usize> {
        let [ct, ch, cw] = cube.map(|c| c.max(1));
        let mut order = Vec::with_capacity(self.len());
        for t0 in (0..self.frames).step_by(ct) {
            for y0 in (0..self.height).step_by(ch) {
                for x0 in (0..self.width).step_by(cw) {
                    for t in t0..(t0 + ct).min(self.frames) {
                        for y in y0..(y0 + ch).min(self.height) {
                            for x in x0..(x0 + cw).min(self.width) {
                                order.push((t * self.height + y) * self.width + x);
                            }
                        }
                    }
                }
            }
        }
        order
    }

    pub(crate) fn check_len(&self, function: &'static str, seq: usize) -> Result<(), SparseAttnError> {
        ensure(
            self.len() == seq,
            function,
            "grid",
            alloc::format!("a token grid with frames·height·width = {seq} tokens"),
            alloc::format!("{}×{}×{} = {}", self.frames, self.height, self.width, self.len()),
        )
    }
}

/// A permutation of the sequence axis and its inverse, as index tensors on a device.
#[derive(Clone, Debug)]
pub(crate) struct Reorder {
    forward: Tensor<1, Int>,
    inverse: Tensor<1, Int>,
}

impl Reorder {
    pub(crate) fn new(order: &[usize], device: &Device) -> Self {
        let mut inverse = alloc::vec![0i64; order.len()];
        for (pos, &token) in order.iter().enumerate() {
            inverse[token] = pos as i64;
        }
        let forward: Vec<i64> = order.iter().map(|&t| t as i64).collect();
        let n = order.len();
        Self {
            forward: Tensor::from_data(TensorData::new(forward, [n]), device),
            inverse: Tensor::from_data(TensorData::new(inverse, [n]), device),
        }
    }

    /// Reorders `x` along `dim` into cube order.
    pub(crate) fn apply<const D: usize>(&self, x: Tensor<D>, dim: usize) -> Tensor<D> {
        x.select(dim, self.forward.clone())
    }

    /// Undoes [`Reorder::apply`].
    pub(crate) fn undo<const D: usize>(&self, x: Tensor<D>, dim: usize) -> Tensor<D> {
        x.select(dim, self.inverse.clone())
    }
}
