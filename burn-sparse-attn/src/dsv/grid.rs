//! Video tokens on a 3D grid and their reordering into query cubes.

use alloc::vec::Vec;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::SparseAttnError;

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
        Self {
            frames,
            height,
            width,
        }
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

    pub(crate) fn check_len(
        &self,
        function: &'static str,
        seq: usize,
    ) -> Result<(), SparseAttnError> {
        SparseAttnError::check(
            self.len() == seq,
            function,
            "grid",
            alloc::format!("a token grid with frames·height·width = {seq} tokens"),
            alloc::format!(
                "{}×{}×{} = {}",
                self.frames,
                self.height,
                self.width,
                self.len()
            ),
        )
    }
}

/// A permutation of the sequence axis of `[B, H, S, D]` tensors into the cube order of
/// [`TokenGrid::cube_order`], and back: how [`DsvAttention`](super::DsvAttention) groups
/// queries that share their selected keys.
///
/// Where the cube divides the grid the permutation is a reshape and an axis permutation,
/// whose backward is the same cheap copy; otherwise an index select, whose backward is a
/// scatter-add (on Flex, 4% of a training step of the tiny DiT).
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant, reason = "one per layer, cached")]
pub enum Reorder {
    /// Whole cubes: `[Tc, ct, Yc, ch, Xc, cw]` ↔ `[Tc, Yc, Xc, ct, ch, cw]` on the token axis.
    Axes {
        /// Cubes along time, height and width.
        cubes: [usize; 3],
        /// Tokens per cube along time, height and width.
        cube: [usize; 3],
    },
    /// Cut cubes at the edges: index tensors of the order and its inverse.
    Indices {
        /// Token id at each cube-order position.
        forward: Tensor<1, Int>,
        /// Cube-order position of each token.
        inverse: Tensor<1, Int>,
    },
}

impl Reorder {
    /// The reorder of `grid` into cubes of `cube = [t, h, w]` tokens.
    pub fn new(grid: TokenGrid, cube: [usize; 3], device: &Device) -> Self {
        let cube = cube.map(|c| c.max(1));
        let dims = [grid.frames, grid.height, grid.width];
        if (0..3).all(|i| dims[i].is_multiple_of(cube[i])) {
            return Self::Axes {
                cubes: core::array::from_fn(|i| dims[i] / cube[i]),
                cube,
            };
        }
        let order = grid.cube_order(cube);
        let mut inverse = alloc::vec![0i64; order.len()];
        for (pos, &token) in order.iter().enumerate() {
            inverse[token] = pos as i64;
        }
        let forward: Vec<i64> = order.iter().map(|&t| t as i64).collect();
        let n = order.len();
        Self::Indices {
            forward: Tensor::from_data(TensorData::new(forward, [n]), device),
            inverse: Tensor::from_data(TensorData::new(inverse, [n]), device),
        }
    }

    /// Reorders the tokens of `x: [B, H, S, D]` into cube order.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        self.reorder(x, true)
    }

    /// Undoes [`Reorder::apply`].
    pub fn undo(&self, x: Tensor<4>) -> Tensor<4> {
        self.reorder(x, false)
    }

    fn reorder(&self, x: Tensor<4>, into_cubes: bool) -> Tensor<4> {
        match self {
            &Self::Axes {
                cubes: [tc, yc, xc],
                cube: [ct, ch, cw],
            } => {
                let [b, h, s, d] = x.dims();
                // Token axis as (time cube, t, row cube, y, column cube, x) ↔ (cubes, t, y, x).
                let (split, perm) = if into_cubes {
                    ([ct, yc, ch, xc, cw], [0, 2, 4, 1, 3, 5, 6])
                } else {
                    ([yc, xc, ct, ch, cw], [0, 3, 1, 4, 2, 5, 6])
                };
                x.reshape([
                    b * h * tc,
                    split[0],
                    split[1],
                    split[2],
                    split[3],
                    split[4],
                    d,
                ])
                .permute(perm)
                .reshape([b, h, s, d])
            }
            Self::Indices { forward, inverse } => x.select(
                2,
                if into_cubes {
                    forward.clone()
                } else {
                    inverse.clone()
                },
            ),
        }
    }
}
