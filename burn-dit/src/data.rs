//! A seeded synthetic "bouncing shapes" video set: no download, exact ground truth.

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Shapes drawn.
pub const SHAPES: [&str; 3] = ["square", "circle", "triangle"];
/// Colours drawn, as RGB in [0, 1].
pub const COLOURS: [(&str, [f32; 3]); 6] = [
    ("red", [1.0, 0.15, 0.15]),
    ("green", [0.15, 1.0, 0.15]),
    ("blue", [0.2, 0.35, 1.0]),
    ("yellow", [1.0, 1.0, 0.15]),
    ("cyan", [0.15, 1.0, 1.0]),
    ("magenta", [1.0, 0.2, 1.0]),
];

/// Conditioning token of a shape (0 is the null token).
pub fn shape_token(shape: usize) -> i64 {
    1 + shape as i64
}

/// Conditioning token of a colour.
pub fn colour_token(colour: usize) -> i64 {
    1 + SHAPES.len() as i64 + colour as i64
}

/// Conditioning tokens per clip.
pub const COND_TOKENS: usize = 2;

/// One clip with its labels and ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShapeClip {
    /// `[3, T, H, W]` in [-1, 1], channel-major.
    pub pixels: Vec<f32>,
    /// Index into [`SHAPES`].
    pub shape: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Half-size in pixels.
    pub radius: f32,
    /// Centre `(x, y)` in every frame.
    pub trajectory: Vec<(f32, f32)>,
}

/// Clip geometry of a [`BouncingShapes`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipShape {
    /// Frames.
    pub frames: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

/// Deterministic bouncing-shape clips: item `i` depends only on `(seed, i)`.
#[derive(Clone, Debug)]
pub struct BouncingShapes {
    clip: ClipShape,
    len: usize,
    seed: u64,
}

/// A small splittable generator (SplitMix64), so items are independent of access order.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// A tensor of standard normals on `device`, drawn from this generator: runs stay
    /// reproducible even when other threads use the device's own generator.
    pub fn normal_tensor<const D: usize>(&mut self, shape: [usize; D], device: &burn::tensor::Device) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new((0..n).map(|_| self.normal()).collect::<Vec<f32>>(), shape), device)
    }

    /// Uniform integer below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

impl BouncingShapes {
    /// `len` clips of `clip` geometry from `seed`.
    pub fn new(clip: ClipShape, len: usize, seed: u64) -> Self {
        assert!(clip.frames > 0 && clip.height >= 16 && clip.width >= 16, "BouncingShapes: clips need ≥ 1 frame and ≥ 16×16 pixels, got {clip:?}");
        Self { clip, len, seed }
    }

    /// The clip geometry.
    pub fn clip(&self) -> ClipShape {
        self.clip
    }

    /// Draws item `index`.
    pub fn generate(&self, index: usize) -> ShapeClip {
        let ClipShape { frames, height, width } = self.clip;
        let mut rng = SplitMix(self.seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let shape = rng.below(SHAPES.len());
        let colour = rng.below(COLOURS.len());
        let scale = width.min(height) as f32 / 32.0;
        let radius = (3.5 + 2.5 * rng.unit()) * scale;
        let (w, h) = (width as f32, height as f32);
        let mut pos = (radius + (w - 2.0 * radius) * rng.unit(), radius + (h - 2.0 * radius) * rng.unit());
        let speed = |rng: &mut SplitMix| (0.8 + 1.7 * rng.unit()) * scale * if rng.below(2) == 0 { -1.0 } else { 1.0 };
        let mut vel = (speed(&mut rng), speed(&mut rng));
        let mut trajectory = Vec::with_capacity(frames);
        for _ in 0..frames {
            trajectory.push(pos);
            pos.0 += vel.0;
            pos.1 += vel.1;
            // Reflect off the walls.
            if pos.0 < radius || pos.0 > w - radius {
                vel.0 = -vel.0;
                pos.0 = pos.0.clamp(radius, w - radius);
            }
            if pos.1 < radius || pos.1 > h - radius {
                vel.1 = -vel.1;
                pos.1 = pos.1.clamp(radius, h - radius);
            }
        }
        let rgb = COLOURS[colour].1;
        let mut pixels = vec![-1.0f32; 3 * frames * height * width];
        for (t, &(cx, cy)) in trajectory.iter().enumerate() {
            for y in 0..height {
                for x in 0..width {
                    let (dx, dy) = (x as f32 + 0.5 - cx, y as f32 + 0.5 - cy);
                    if inside(shape, dx, dy, radius) {
                        for (c, value) in rgb.iter().enumerate() {
                            pixels[((c * frames + t) * height + y) * width + x] = value * 2.0 - 1.0;
                        }
                    }
                }
            }
        }
        ShapeClip { pixels, shape, colour, radius, trajectory }
    }
}

/// Whether offset `(dx, dy)` from the centre lies inside the shape of half-size `r`.
pub fn inside(shape: usize, dx: f32, dy: f32, r: f32) -> bool {
    match shape {
        0 => dx.abs() <= r && dy.abs() <= r,
        1 => dx * dx + dy * dy <= r * r,
        // Upright isosceles triangle in the box [-r, r]².
        _ => dy <= r && dy >= -r && dx.abs() <= (dy + r) / 2.0,
    }
}

impl Dataset<ShapeClip> for BouncingShapes {
    fn get(&self, index: usize) -> Result<ShapeClip, DatasetError> {
        if index >= self.len {
            return Err(DatasetError::new(std::io::Error::other(format!(
                "BouncingShapes::get: `index` must be < {}, got {index}",
                self.len
            ))));
        }
        Ok(self.generate(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A batch of clips.
#[derive(Clone, Debug)]
pub struct ClipBatch {
    /// `[B, 3, T, H, W]` in [-1, 1].
    pub videos: Tensor<5>,
    /// Conditioning token ids `[B, COND_TOKENS]` (shape, colour).
    pub labels: Tensor<2, Int>,
}

/// Stacks clips into a [`ClipBatch`].
#[derive(Clone, Debug)]
pub struct ClipBatcher {
    clip: ClipShape,
}

impl ClipBatcher {
    /// A batcher for clips of this geometry.
    pub fn new(clip: ClipShape) -> Self {
        Self { clip }
    }
}

impl Batcher<ShapeClip, ClipBatch> for ClipBatcher {
    fn batch(&self, items: Vec<ShapeClip>, device: &Device) -> ClipBatch {
        let ClipShape { frames, height, width } = self.clip;
        let b = items.len();
        let labels: Vec<i64> = items.iter().flat_map(|c| [shape_token(c.shape), colour_token(c.colour)]).collect();
        let pixels: Vec<f32> = items.into_iter().flat_map(|c| c.pixels).collect();
        ClipBatch {
            videos: Tensor::from_data(TensorData::new(pixels, [b, 3, frames, height, width]), device),
            labels: Tensor::from_data(TensorData::new(labels, [b, COND_TOKENS]), device),
        }
    }
}
