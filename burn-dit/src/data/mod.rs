//! Seeded synthetic video sets with exact ground truth: bouncing shapes (no download) and
//! moving Fashion-MNIST (from Debian's `dataset-fashion-mnist` files), a Burn `Dataset` and
//! batcher for both.

mod fashion;
mod shapes;

use std::path::PathBuf;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use fashion::{FASHION_CLASSES, FASHION_DIR, FashionImages, MovingFashion};
pub use shapes::{BouncingShapes, SHAPES, inside};

/// Colours drawn, as RGB in [0, 1].
pub const COLOURS: [(&str, [f32; 3]); 6] = [
    ("red", [1.0, 0.15, 0.15]),
    ("green", [0.15, 1.0, 0.15]),
    ("blue", [0.2, 0.35, 1.0]),
    ("yellow", [1.0, 1.0, 0.15]),
    ("cyan", [0.15, 1.0, 1.0]),
    ("magenta", [1.0, 0.2, 1.0]),
];

/// Object classes of the largest set: the token layout leaves room for this many, so one
/// vocabulary serves every set.
pub const MAX_OBJECTS: usize = if SHAPES.len() > FASHION_CLASSES.len() {
    SHAPES.len()
} else {
    FASHION_CLASSES.len()
};

/// Conditioning vocabulary: the null token, the object tokens, the colour tokens.
pub const COND_VOCAB: usize = 1 + MAX_OBJECTS + COLOURS.len();

/// Conditioning token of an object class (0 is the null token).
pub fn object_token(object: usize) -> i64 {
    1 + object as i64
}

/// Conditioning token of a colour.
pub fn colour_token(colour: usize) -> i64 {
    1 + MAX_OBJECTS as i64 + colour as i64
}

/// Conditioning tokens per clip.
pub const COND_TOKENS: usize = 2;

/// One clip with its labels and ground truth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelledClip {
    /// `[3, T, H, W]` in [-1, 1], channel-major.
    pub pixels: Vec<f32>,
    /// Index into the set's classes ([`SHAPES`], [`FASHION_CLASSES`]).
    pub object: usize,
    /// Index into [`COLOURS`].
    pub colour: usize,
    /// Half-size of the object in pixels.
    pub radius: f32,
    /// Centre `(x, y)` in every frame.
    pub trajectory: Vec<(f32, f32)>,
}

/// Clip geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipShape {
    /// Frames.
    pub frames: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

/// A small splittable generator (SplitMix64), so items are independent of access order.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The generator of item `index` of a set seeded with `seed`.
    pub fn for_item(seed: u64, index: usize) -> Self {
        Self(seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03))
    }

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
    pub fn normal_tensor<const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &burn::tensor::Device,
    ) -> Tensor<D> {
        let n = shape.iter().product();
        Tensor::from_data(
            TensorData::new((0..n).map(|_| self.normal()).collect::<Vec<f32>>(), shape),
            device,
        )
    }

    /// Uniform integer below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Centres of an object of half-size `radius` moving at constant velocity and bouncing off
/// the walls of a `clip`; speeds scale with the frame (`scale` = side / 32).
pub(crate) fn bouncing_trajectory(
    rng: &mut SplitMix,
    clip: ClipShape,
    radius: f32,
    scale: f32,
) -> Vec<(f32, f32)> {
    let (w, h) = (clip.width as f32, clip.height as f32);
    let mut pos = (
        radius + (w - 2.0 * radius) * rng.unit(),
        radius + (h - 2.0 * radius) * rng.unit(),
    );
    let speed = |rng: &mut SplitMix| {
        (0.8 + 1.7 * rng.unit()) * scale * if rng.below(2) == 0 { -1.0 } else { 1.0 }
    };
    let mut vel = (speed(rng), speed(rng));
    let mut trajectory = Vec::with_capacity(clip.frames);
    for _ in 0..clip.frames {
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
    trajectory
}

/// Parses an `object:colour` label such as `circle:red` against the set's `classes`; the
/// error says which part is wrong and what it may be.
pub fn parse_label(pair: &str, classes: &[&str]) -> Result<(usize, usize), String> {
    let (object, colour) = pair
        .split_once(':')
        .ok_or_else(|| format!("expected object:colour, got `{pair}`"))?;
    let object_id = classes
        .iter()
        .position(|x| *x == object.trim())
        .ok_or_else(|| format!("unknown object `{object}` (one of {classes:?})"))?;
    let colour_id = COLOURS
        .iter()
        .position(|x| x.0 == colour.trim())
        .ok_or_else(|| {
            format!(
                "unknown colour `{colour}` (one of {:?})",
                COLOURS.map(|c| c.0)
            )
        })?;
    Ok((object_id, colour_id))
}

fn out_of_range(set: &str, index: usize, len: usize) -> DatasetError {
    DatasetError::new(std::io::Error::other(format!(
        "{set}::get: `index` must be < {len}, got {index}"
    )))
}

/// Which clips a run trains on; saved with the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum DataSource {
    /// [`BouncingShapes`]: generated, nothing to install.
    #[default]
    BouncingShapes,
    /// [`MovingFashion`] from the Fashion-MNIST files in `dir` (Debian:
    /// `apt install dataset-fashion-mnist`, [`FASHION_DIR`]).
    MovingFashion {
        /// Folder holding `train-images-idx3-ubyte.gz` and its three siblings.
        dir: PathBuf,
    },
}

impl DataSource {
    /// Opens the set: `len` clips from `seed`, of which those from `heldout_from` on are
    /// held out (for Fashion-MNIST they use the test images). Fails with the path and the
    /// reason when the files are missing or malformed.
    pub fn open(
        &self,
        clip: ClipShape,
        len: usize,
        heldout_from: usize,
        seed: u64,
    ) -> std::io::Result<ClipSet> {
        Ok(match self {
            Self::BouncingShapes => ClipSet::Shapes(BouncingShapes::new(clip, len, seed)),
            Self::MovingFashion { dir } => ClipSet::Fashion(MovingFashion::new(
                FashionImages::load(dir)?,
                clip,
                len,
                heldout_from,
                seed,
            )),
        })
    }

    /// Names of the object classes.
    pub fn classes(&self) -> &'static [&'static str] {
        match self {
            Self::BouncingShapes => &SHAPES,
            Self::MovingFashion { .. } => &FASHION_CLASSES,
        }
    }
}

/// An opened [`DataSource`].
#[derive(Clone, Debug)]
pub enum ClipSet {
    /// Bouncing shapes.
    Shapes(BouncingShapes),
    /// Moving Fashion-MNIST.
    Fashion(MovingFashion),
}

impl ClipSet {
    /// The clip geometry.
    pub fn clip(&self) -> ClipShape {
        match self {
            Self::Shapes(set) => set.clip(),
            Self::Fashion(set) => set.clip(),
        }
    }

    /// Draws item `index` (any index: the set's length only bounds [`Dataset::get`]).
    pub fn generate(&self, index: usize) -> LabelledClip {
        match self {
            Self::Shapes(set) => set.generate(index),
            Self::Fashion(set) => set.generate(index),
        }
    }
}

impl Dataset<LabelledClip> for ClipSet {
    fn get(&self, index: usize) -> Result<LabelledClip, DatasetError> {
        match self {
            Self::Shapes(set) => set.get(index),
            Self::Fashion(set) => set.get(index),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Shapes(set) => set.len(),
            Self::Fashion(set) => set.len(),
        }
    }
}

/// A batch of clips.
#[derive(Clone, Debug)]
pub struct ClipBatch {
    /// `[B, 3, T, H, W]` in [-1, 1].
    pub videos: Tensor<5>,
    /// Conditioning token ids `[B, COND_TOKENS]` (object, colour).
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

impl Batcher<LabelledClip, ClipBatch> for ClipBatcher {
    fn batch(&self, items: Vec<LabelledClip>, device: &Device) -> ClipBatch {
        let ClipShape {
            frames,
            height,
            width,
        } = self.clip;
        let b = items.len();
        let labels: Vec<i64> = items
            .iter()
            .flat_map(|c| [object_token(c.object), colour_token(c.colour)])
            .collect();
        let pixels: Vec<f32> = items.into_iter().flat_map(|c| c.pixels).collect();
        ClipBatch {
            videos: Tensor::from_data(
                TensorData::new(pixels, [b, 3, frames, height, width]),
                device,
            ),
            labels: Tensor::from_data(TensorData::new(labels, [b, COND_TOKENS]), device),
        }
    }
}
