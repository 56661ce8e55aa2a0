//! Object fidelity against the labels and ground truth of the synthetic sets.

use serde::{Deserialize, Serialize};

use super::objects::{Detection, best_fit, classify_colour, classify_shape, detect, shape_ious};
use crate::data::{COLOURS, ClipSet, SHAPES};
use crate::media::Frames;

/// Side of the square a detected object is resampled to for template matching.
const TEMPLATE_SIDE: usize = 12;

/// The detected object's brightness (largest channel, 0–1) in its bounding box, fitted into
/// a `TEMPLATE_SIDE²` square keeping its aspect ratio, centred, zero-mean and unit-norm.
fn object_features(frame: &[u8], width: usize, d: &Detection) -> Vec<f64> {
    let [x0, y0, x1, y1] = d.bbox;
    let (w, h) = ((x1 - x0 + 1) as f64, (y1 - y0 + 1) as f64);
    let step = w.max(h) / TEMPLATE_SIDE as f64;
    let (ox, oy) = ((w.max(h) - w) / 2.0, (w.max(h) - h) / 2.0);
    let mut out = vec![0.0; TEMPLATE_SIDE * TEMPLATE_SIDE];
    for ty in 0..TEMPLATE_SIDE {
        for tx in 0..TEMPLATE_SIDE {
            let (fx, fy) = ((tx as f64 + 0.5) * step - ox, (ty as f64 + 0.5) * step - oy);
            if fx >= 0.0 && fy >= 0.0 && fx < w && fy < h {
                let i = (y0 + fy as usize) * width + x0 + fx as usize;
                out[ty * TEMPLATE_SIDE + tx] =
                    *frame[3 * i..3 * i + 3].iter().max().unwrap() as f64 / 255.0;
            }
        }
    }
    let mean = out.iter().sum::<f64>() / out.len() as f64;
    out.iter_mut().for_each(|v| *v -= mean);
    let norm = out.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-9);
    out.iter_mut().for_each(|v| *v /= norm);
    out
}

/// Names the object class a detection shows, without a network.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectClassifier {
    /// Bouncing shapes, by the best-fitting drawn shape ([`classify_shape`]).
    ShapeFit,
    /// Nearest class-mean template (correlation of the objects' cropped, scaled features):
    /// for sets whose classes no rule separates, such as Fashion-MNIST. Weak but honest: it scores real
    /// held-out clips too, for comparison.
    Templates(Vec<Vec<f64>>),
}

impl ObjectClassifier {
    /// The classifier for `set`; templates are the class means over the first frames of
    /// `items` training clips.
    pub fn for_set(set: &ClipSet, items: usize) -> Self {
        let ClipSet::Fashion(_) = set else {
            return Self::ShapeFit;
        };
        let mut sums: Vec<(Vec<f64>, usize)> = Vec::new();
        let g = set.clip();
        for i in 0..items {
            let clip = set.generate(i);
            let frames = Frames::from_chw(&clip.pixels, g.frames, g.height, g.width);
            let Some(d) = detect(&frames.frames[0], frames.width) else {
                continue;
            };
            if sums.len() <= clip.object {
                sums.resize(
                    clip.object + 1,
                    (vec![0.0; TEMPLATE_SIDE * TEMPLATE_SIDE], 0),
                );
            }
            let (sum, n) = &mut sums[clip.object];
            sum.iter_mut()
                .zip(object_features(&frames.frames[0], frames.width, &d))
                .for_each(|(s, f)| *s += f);
            *n += 1;
        }
        Self::Templates(
            sums.into_iter()
                .map(|(sum, n)| sum.into_iter().map(|s| s / n.max(1) as f64).collect())
                .collect(),
        )
    }

    /// The class `d` (found in `frame` of `width` pixels) looks most like.
    pub fn classify(&self, frame: &[u8], width: usize, d: &Detection) -> usize {
        match self {
            Self::ShapeFit => classify_shape(frame, width),
            Self::Templates(means) => {
                let f = object_features(frame, width, d);
                let score = |m: &Vec<f64>| m.iter().zip(&f).map(|(a, b)| a * b).sum::<f64>();
                (0..means.len())
                    .max_by(|&a, &b| score(&means[a]).total_cmp(&score(&means[b])))
                    .unwrap_or(0)
            }
        }
    }

    /// Classes this classifier can name.
    pub(super) fn classes(&self) -> usize {
        match self {
            Self::ShapeFit => SHAPES.len(),
            Self::Templates(means) => means.len(),
        }
    }
}

/// Object fidelity of one video against the labels it was asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectFidelity {
    /// Frames with a detected object.
    pub detection_rate: f64,
    /// Frames showing exactly one lit region (one object, nothing stray).
    pub single_object_rate: f64,
    /// Whether the majority object class matches the label.
    pub object_correct: bool,
    /// The majority object class over the frames with a detection (`None` without any).
    pub object_seen: Option<usize>,
    /// Whether the majority colour matches the label.
    pub colour_correct: bool,
    /// Mean over frames of the object's [`shape_ious`] with each shape (0 in frames without
    /// one); bouncing shapes only.
    pub shape_ious: Option<[f64; 3]>,
    /// Coefficient of variation of the object's area over frames (0 for a rigid shape).
    pub area_variation: f64,
    /// Mean |second difference| of the centroid in pixels, away from walls (0 for
    /// constant-velocity motion).
    pub acceleration_px: f64,
    /// Mean centroid distance to the ground-truth trajectory, where one is known.
    pub trajectory_error_px: Option<f64>,
}

/// Measures one video; `trajectory` is the ground truth when the video is a real clip.
pub fn object_fidelity(
    video: &Frames,
    object: usize,
    colour: usize,
    trajectory: Option<&[(f32, f32)]>,
    classifier: &ObjectClassifier,
) -> ObjectFidelity {
    let detections: Vec<Option<Detection>> = video
        .frames
        .iter()
        .map(|f| detect(f, video.width))
        .collect();
    let found: Vec<(usize, &Detection)> = detections
        .iter()
        .enumerate()
        .filter_map(|(t, d)| d.as_ref().map(|d| (t, d)))
        .collect();
    let frames = video.len().max(1) as f64;
    let mut out = ObjectFidelity {
        detection_rate: found.len() as f64 / frames,
        single_object_rate: found.iter().filter(|(_, d)| d.regions == 1).count() as f64 / frames,
        ..Default::default()
    };
    if found.is_empty() {
        return out;
    }
    let majority = |votes: Vec<usize>, classes: usize| {
        (0..classes)
            .max_by_key(|c| votes.iter().filter(|v| *v == c).count())
            .unwrap()
    };
    // Shapes: each frame's fit serves both the vote and the mean IoU.
    let fits: Option<Vec<[f64; 3]>> = (*classifier == ObjectClassifier::ShapeFit).then(|| {
        video
            .frames
            .iter()
            .map(|f| shape_ious(f, video.width))
            .collect()
    });
    let votes = found
        .iter()
        .map(|&(t, d)| match &fits {
            Some(fits) => best_fit(&fits[t]),
            None => classifier.classify(&video.frames[t], video.width, d),
        })
        .collect();
    let seen = majority(votes, classifier.classes());
    out.object_seen = Some(seen);
    out.object_correct = seen == object;
    out.shape_ious =
        fits.map(|fits| std::array::from_fn(|k| fits.iter().map(|f| f[k]).sum::<f64>() / frames));
    out.colour_correct = majority(
        found
            .iter()
            .map(|(_, d)| classify_colour(d.colour))
            .collect(),
        COLOURS.len(),
    ) == colour;
    let mean_area = found.iter().map(|(_, d)| d.area).sum::<f64>() / found.len() as f64;
    let var = found
        .iter()
        .map(|(_, d)| (d.area - mean_area).powi(2))
        .sum::<f64>()
        / found.len() as f64;
    out.area_variation = var.sqrt() / mean_area;
    let margin = mean_area.sqrt();
    let away = |d: &Detection| {
        d.centre.0 > margin
            && d.centre.0 < video.width as f64 - margin
            && d.centre.1 > margin
            && d.centre.1 < video.height as f64 - margin
    };
    let accels: Vec<f64> = detections
        .windows(3)
        .filter_map(|w| match (w[0], w[1], w[2]) {
            (Some(a), Some(b), Some(c)) if away(&a) && away(&b) && away(&c) => Some(
                ((a.centre.0 + c.centre.0 - 2.0 * b.centre.0).powi(2)
                    + (a.centre.1 + c.centre.1 - 2.0 * b.centre.1).powi(2))
                .sqrt(),
            ),
            _ => None,
        })
        .collect();
    out.acceleration_px = if accels.is_empty() {
        0.0
    } else {
        accels.iter().sum::<f64>() / accels.len() as f64
    };
    out.trajectory_error_px = trajectory.map(|gt| {
        let errs: Vec<f64> = detections
            .iter()
            .zip(gt)
            .filter_map(|(d, &(x, y))| {
                d.map(|d| {
                    ((d.centre.0 - x as f64).powi(2) + (d.centre.1 - y as f64).powi(2)).sqrt()
                })
            })
            .collect();
        errs.iter().sum::<f64>() / errs.len().max(1) as f64
    });
    out
}
