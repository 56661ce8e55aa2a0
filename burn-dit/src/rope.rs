//! 3D rotary position embedding over (frame, row, column), Wan2.1's split of the head dim.

use burn::tensor::{Device, Tensor, TensorData};

/// Per-token rotation angles for a token grid; frames count from a global offset so a clip
/// of a longer video keeps its true positions.
#[derive(Clone, Debug)]
pub struct Rope3d {
    /// `[S, D/2]` cosines and sines of each rotated pair.
    cos: Tensor<2>,
    sin: Tensor<2>,
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
    pub fn new(head_dim: usize, [frames, height, width]: [usize; 3], frame_offset: usize, theta: f64, device: &Device) -> Self {
        assert!(head_dim % 2 == 0 && head_dim >= 6, "Rope3d: head_dim must be even and ≥ 6, got {head_dim}");
        let parts = rope_split(head_dim);
        let half = head_dim / 2;
        let n = frames * height * width;
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for t in 0..frames {
            for y in 0..height {
                for x in 0..width {
                    let pos = [(t + frame_offset) as f64, y as f64, x as f64];
                    for (axis, &dims) in parts.iter().enumerate() {
                        for j in 0..dims / 2 {
                            let freq = theta.powf(-2.0 * j as f64 / dims as f64);
                            let angle = pos[axis] * freq;
                            cos.push(angle.cos() as f32);
                            sin.push(angle.sin() as f32);
                        }
                    }
                }
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [n, half]), device),
            sin: Tensor::from_data(TensorData::new(sin, [n, half]), device),
        }
    }

    /// Rotates `x: [B, H, S, D]` (pairs `(2i, 2i+1)`).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let pairs = x.reshape([b, h, s, d / 2, 2]);
        let even = pairs.clone().narrow(4, 0, 1).reshape([b, h, s, d / 2]);
        let odd = pairs.narrow(4, 1, 1).reshape([b, h, s, d / 2]);
        let cos = self.cos.clone().reshape([1, 1, s, d / 2]);
        let sin = self.sin.clone().reshape([1, 1, s, d / 2]);
        let re = even.clone() * cos.clone() - odd.clone() * sin.clone();
        let im = even * sin + odd * cos;
        Tensor::stack::<5>(vec![re, im], 4).reshape([b, h, s, d])
    }
}
