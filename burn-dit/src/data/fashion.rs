//! Moving Fashion-MNIST: one tinted garment per clip bouncing over a dark background, from
//! the Fashion-MNIST files Debian ships (`apt install dataset-fashion-mnist`).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use super::{COLOURS, ClipShape, LabelledClip, SplitMix, bouncing_trajectory, out_of_range};

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's classes, in label order.
pub const FASHION_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// One split: `n` grey images of `side × side` bytes and their labels.
#[derive(Clone, Debug)]
struct Split {
    images: Arc<Vec<u8>>,
    labels: Arc<Vec<u8>>,
    side: usize,
}

impl Split {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn image(&self, i: usize) -> &[u8] {
        let n = self.side * self.side;
        &self.images[i * n..(i + 1) * n]
    }
}

/// The train and test images of Fashion-MNIST (or any set in its IDX format with labels
/// below 10), shared cheaply between data sets.
#[derive(Clone, Debug)]
pub struct FashionImages {
    train: Split,
    test: Split,
}

fn invalid(path: &Path, why: String) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {why}", path.display()),
    )
}

/// Reads a gzip-compressed IDX file: its dimensions and bytes.
fn read_idx(path: &Path, dims: usize) -> std::io::Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "{}: {e} (Debian: apt install dataset-fashion-mnist)",
                path.display()
            ),
        )
    })?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(path, format!("not a gzip file: {e}")))?;
    let header = 4 + 4 * dims;
    if bytes.len() < header || bytes[..3] != [0, 0, 8] || bytes[3] as usize != dims {
        return Err(invalid(
            path,
            format!(
                "expected an IDX file of unsigned bytes with {dims} dimension(s) (magic 0x0000080{dims})"
            ),
        ));
    }
    let shape: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    // Crafted dimensions can overflow the product: such a file cannot match any length.
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .and_then(|body| body.checked_add(header));
    if expected != Some(bytes.len()) {
        return Err(invalid(
            path,
            format!(
                "dimensions {shape:?} need {} bytes, the file has {}",
                expected.map_or("more than usize::MAX".into(), |n| n.to_string()),
                bytes.len()
            ),
        ));
    }
    bytes.drain(..header);
    Ok((shape, bytes))
}

fn load_split(dir: &Path, prefix: &str) -> std::io::Result<Split> {
    let image_path = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let label_path = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let (shape, images) = read_idx(&image_path, 3)?;
    let (label_shape, labels) = read_idx(&label_path, 1)?;
    if shape[1] != shape[2] || shape[1] == 0 || shape[0] == 0 {
        return Err(invalid(
            &image_path,
            format!("expected ≥ 1 square image, got dimensions {shape:?}"),
        ));
    }
    if label_shape[0] != shape[0] {
        return Err(invalid(
            &label_path,
            format!("{} labels for {} images", label_shape[0], shape[0]),
        ));
    }
    if let Some(bad) = labels
        .iter()
        .find(|&&l| l as usize >= FASHION_CLASSES.len())
    {
        return Err(invalid(
            &label_path,
            format!("labels must be < {}, found {bad}", FASHION_CLASSES.len()),
        ));
    }
    Ok(Split {
        images: Arc::new(images),
        labels: Arc::new(labels),
        side: shape[1],
    })
}

impl FashionImages {
    /// Loads `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz` and their `t10k-`
    /// siblings from `dir` ([`FASHION_DIR`] on Debian); the error names the file and what
    /// is wrong with it.
    pub fn load(dir: impl AsRef<Path>) -> std::io::Result<Self> {
        let dir = dir.as_ref();
        Ok(Self {
            train: load_split(dir, "train")?,
            test: load_split(dir, "t10k")?,
        })
    }

    /// Images in the train and the test split.
    pub fn len(&self) -> (usize, usize) {
        (self.train.len(), self.test.len())
    }
}

/// Deterministic moving Fashion-MNIST clips: item `i` (from `(seed, i)`) is one garment,
/// scaled to half the frame's side and tinted with one of [`COLOURS`], bouncing like
/// [`super::BouncingShapes`]. Items below `heldout_from` take train images, the rest test
/// images, so held-out clips show garments never trained on.
#[derive(Clone, Debug)]
pub struct MovingFashion {
    images: FashionImages,
    clip: ClipShape,
    len: usize,
    heldout_from: usize,
    seed: u64,
}

impl MovingFashion {
    /// `len` clips of `clip` geometry from `seed`.
    pub fn new(
        images: FashionImages,
        clip: ClipShape,
        len: usize,
        heldout_from: usize,
        seed: u64,
    ) -> Self {
        assert!(
            clip.frames > 0 && clip.height >= 16 && clip.width >= 16,
            "MovingFashion: clips need ≥ 1 frame and ≥ 16×16 pixels, got {clip:?}"
        );
        Self {
            images,
            clip,
            len,
            heldout_from,
            seed,
        }
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
        let split = if index < self.heldout_from {
            &self.images.train
        } else {
            &self.images.test
        };
        let image = rng.below(split.len());
        let colour = rng.below(COLOURS.len());
        let scale = width.min(height) as f32 / 32.0;
        let side = ((16.0 * scale).round() as usize).max(4);
        let glyph = resample(split.image(image), split.side, side);
        let radius = side as f32 / 2.0;
        let trajectory = bouncing_trajectory(&mut rng, self.clip, radius, scale);
        let rgb = COLOURS[colour].1;
        let mut pixels = vec![-1.0f32; 3 * frames * height * width];
        for (t, &(cx, cy)) in trajectory.iter().enumerate() {
            // The glyph's box sits on whole pixels, centred as near the trajectory as can be.
            let (x0, y0) = (
                (cx - radius).round() as isize,
                (cy - radius).round() as isize,
            );
            for gy in 0..side {
                for gx in 0..side {
                    let (x, y) = (x0 + gx as isize, y0 + gy as isize);
                    let value = glyph[gy * side + gx];
                    if value == 0.0 || x < 0 || y < 0 || x >= width as isize || y >= height as isize
                    {
                        continue;
                    }
                    for (c, tint) in rgb.iter().enumerate() {
                        pixels[((c * frames + t) * height + y as usize) * width + x as usize] =
                            2.0 * value * tint - 1.0;
                    }
                }
            }
        }
        LabelledClip {
            pixels,
            object: split.labels[image] as usize,
            colour,
            radius,
            trajectory,
        }
    }
}

/// Box-filters a `from × from` grey image to `to × to` values in [0, 1] (4×4 samples per
/// output pixel).
fn resample(image: &[u8], from: usize, to: usize) -> Vec<f32> {
    const SUB: usize = 4;
    let mut out = vec![0.0f32; to * to];
    for oy in 0..to {
        for ox in 0..to {
            let mut sum = 0.0;
            for sy in 0..SUB {
                for sx in 0..SUB {
                    let y = ((oy * SUB + sy) as f32 + 0.5) * from as f32 / (to * SUB) as f32;
                    let x = ((ox * SUB + sx) as f32 + 0.5) * from as f32 / (to * SUB) as f32;
                    sum += image[(y as usize).min(from - 1) * from + (x as usize).min(from - 1)]
                        as f32;
                }
            }
            out[oy * to + ox] = sum / (SUB * SUB) as f32 / 255.0;
        }
    }
    out
}

impl Dataset<LabelledClip> for MovingFashion {
    fn get(&self, index: usize) -> Result<LabelledClip, DatasetError> {
        if index >= self.len {
            return Err(out_of_range("MovingFashion", index, self.len));
        }
        Ok(self.generate(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}
