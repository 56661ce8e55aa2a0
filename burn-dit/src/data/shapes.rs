//! Bouncing shapes: one coloured square, circle or triangle per clip, no download.

use burn::data::dataset::{Dataset, DatasetError};

use super::{COLOURS, ClipShape, LabelledClip, SplitMix, bouncing_trajectory, out_of_range};

/// Shapes drawn.
pub const SHAPES: [&str; 3] = ["square", "circle", "triangle"];

/// Range of the objects' half-size in pixels of a 32-pixel frame (scaled with the frame):
/// 10–16 pixels across, a third to a half of the side, about Moving MNIST's proportion. With
/// 7–12 pixels (2–3 patches of 4) a 900-step CPU run drew one object in 38% of its sample
/// frames; with these, 62% (README, the main job).
pub const RADIUS: (f32, f32) = (5.0, 8.0);

/// Deterministic bouncing-shape clips: item `i` depends only on `(seed, i)`.
#[derive(Clone, Debug)]
pub struct BouncingShapes {
    clip: ClipShape,
    len: usize,
    seed: u64,
}

impl BouncingShapes {
    /// `len` clips of `clip` geometry from `seed`.
    pub fn new(clip: ClipShape, len: usize, seed: u64) -> Self {
        assert!(
            clip.frames > 0 && clip.height >= 16 && clip.width >= 16,
            "BouncingShapes: clips need ≥ 1 frame and ≥ 16×16 pixels, got {clip:?}"
        );
        Self { clip, len, seed }
    }

    /// The clip geometry.
    pub fn clip(&self) -> ClipShape {
        self.clip
    }

    /// Draws item `index`.
    pub fn generate(&self, index: usize) -> LabelledClip {
        let ClipShape {
            frames,
            height,
            width,
        } = self.clip;
        let mut rng = SplitMix::for_item(self.seed, index);
        let shape = rng.below(SHAPES.len());
        let colour = rng.below(COLOURS.len());
        let scale = width.min(height) as f32 / 32.0;
        let radius = (RADIUS.0 + (RADIUS.1 - RADIUS.0) * rng.unit()) * scale;
        let trajectory = bouncing_trajectory(&mut rng, self.clip, radius, scale);
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
        LabelledClip {
            pixels,
            object: shape,
            colour,
            radius,
            trajectory,
        }
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

impl Dataset<LabelledClip> for BouncingShapes {
    fn get(&self, index: usize) -> Result<LabelledClip, DatasetError> {
        if index >= self.len {
            return Err(out_of_range("BouncingShapes", index, self.len));
        }
        Ok(self.generate(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}
