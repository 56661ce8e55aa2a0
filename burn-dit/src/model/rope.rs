//! 3D rotary position embedding over (frame, row, column), Wan2.1's split of the head dim.

use burn::tensor::{Device, Tensor, TensorData};

/// Per-token rotation angles for a token grid; frames count from a global offset so a clip
/// of a longer video keeps its true positions.
#[derive(Clone, Debug)]
pub struct Rope3d {
    /// `[S, D]`: each pair's cosine at both of its places.
    cos: Tensor<2>,
    /// `[S, D]`: each pair's sine, negated at its first place.
    sin: Tensor<2>,
    /// `[D, D]` permutation that swaps the two halves of every pair.
    swap: Tensor<2>,
}

/// How a head dimension `d` splits between time, height and width (pairs of each part
/// rotate together): `t = d − 4⌊d/6⌋`, `h = w = 2⌊d/6⌋`.
pub fn rope_split(head_dim: usize) -> [usize; 3] {
    let hw = 2 * (head_dim / 6);
    [head_dim - 2 * hw, hw, hw]
}

impl Rope3d {
    /// Angles for a `frames × height × width` grid whose first frame is global frame
    /// `frame_offset`; `theta` is the RoPE base (1e4).
    pub fn new(
        head_dim: usize,
        [frames, height, width]: [usize; 3],
        frame_offset: usize,
        theta: f64,
        device: &Device,
    ) -> Self {
        assert!(
            head_dim.is_multiple_of(2) && head_dim >= 6,
            "Rope3d: head_dim must be even and ≥ 6, got {head_dim}"
        );
        let parts = rope_split(head_dim);
        let half = head_dim / 2;
        let n = frames * height * width;
        let (mut cos, mut sin) = (
            Vec::with_capacity(n * head_dim),
            Vec::with_capacity(n * head_dim),
        );
        for t in 0..frames {
            for y in 0..height {
                for x in 0..width {
                    let pos = [(t + frame_offset) as f64, y as f64, x as f64];
                    for (axis, &dims) in parts.iter().enumerate() {
                        for j in 0..dims / 2 {
                            let freq = theta.powf(-2.0 * j as f64 / dims as f64);
                            let angle = pos[axis] * freq;
                            let (c, s) = (angle.cos() as f32, angle.sin() as f32);
                            cos.extend([c, c]);
                            sin.extend([-s, s]);
                        }
                    }
                }
            }
        }
        let mut swap = vec![0f32; head_dim * head_dim];
        for i in 0..half {
            swap[2 * i * head_dim + 2 * i + 1] = 1.0;
            swap[(2 * i + 1) * head_dim + 2 * i] = 1.0;
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [n, head_dim]), device),
            sin: Tensor::from_data(TensorData::new(sin, [n, head_dim]), device),
            swap: Tensor::from_data(TensorData::new(swap, [head_dim, head_dim]), device),
        }
    }

    /// The same angles without autodiff (they are constants either way).
    pub(crate) fn without_autodiff(&self) -> Self {
        Self {
            cos: self.cos.clone().without_autodiff(),
            sin: self.sin.clone().without_autodiff(),
            swap: self.swap.clone().without_autodiff(),
        }
    }

    /// Rotates `x: [B, H, S, D]` (pairs `(2i, 2i+1)`): `x·cos + swap(x)·sin`, with the pair
    /// swap as one small matmul rather than slicing and re-interleaving the halves (four ops
    /// instead of ten, each with its backward). Same values for finite inputs: the swap only moves elements.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, s, d] = x.dims();
        let swapped = x.clone().matmul(self.swap.clone().reshape([1, 1, d, d]));
        x * self.cos.clone().reshape([1, 1, s, d])
            + swapped * self.sin.clone().reshape([1, 1, s, d])
    }
}
