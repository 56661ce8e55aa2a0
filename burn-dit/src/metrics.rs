//! Network-free video metrics (VBench-style proxies) and object fidelity against the labels
//! and ground truth of the synthetic sets.

use serde::{Deserialize, Serialize};

use crate::data::{COLOURS, ClipSet, SHAPES, inside};
use crate::media::Frames;

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

/// VBench's temporal flickering: `(255 − mean |f_t − f_{t+1}|) / 255`, averaged (1 = steady).
pub fn temporal_flickering(video: &Frames) -> f64 {
    let pairs: Vec<f64> = video
        .frames
        .windows(2)
        .map(|w| (255.0 - mean_abs_diff(&w[0], &w[1])) / 255.0)
        .collect();
    if pairs.is_empty() {
        1.0
    } else {
        pairs.iter().sum::<f64>() / pairs.len() as f64
    }
}

/// Motion smoothness proxy: how well each inner frame equals the mean of its neighbours,
/// `1 − mean |f_t − (f_{t−1} + f_{t+1})/2| / 255` (1 = perfectly linear motion).
pub fn motion_smoothness(video: &Frames) -> f64 {
    let triples: Vec<f64> = video
        .frames
        .windows(3)
        .map(|w| {
            let err = w[1]
                .iter()
                .zip(&w[0])
                .zip(&w[2])
                .map(|((&m, &a), &b)| (m as f64 - (a as f64 + b as f64) / 2.0).abs())
                .sum::<f64>();
            1.0 - err / w[1].len() as f64 / 255.0
        })
        .collect();
    if triples.is_empty() {
        1.0
    } else {
        triples.iter().sum::<f64>() / triples.len() as f64
    }
}

/// Dynamic degree proxy: mean absolute frame difference on the 0–255 scale.
pub fn dynamic_degree(video: &Frames) -> f64 {
    let diffs: Vec<f64> = video
        .frames
        .windows(2)
        .map(|w| mean_abs_diff(&w[0], &w[1]))
        .collect();
    if diffs.is_empty() {
        0.0
    } else {
        diffs.iter().sum::<f64>() / diffs.len() as f64
    }
}

/// How smoothly consecutive clips of a long video join: mean absolute frame difference
/// (0–255) across clip boundaries against within clips. Seamless clips give `across ≈ within`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipContinuity {
    /// Mean |f_b − f_{b−1}| over the first frames `b` of every clip but the first.
    pub across: f64,
    /// Mean |f_t − f_{t−1}| over the frames `t` inside clips that start a latent frame.
    pub within: f64,
}

/// [`ClipContinuity`] of `video` whose clips start at frames `clip_starts` (0 may be
/// included; it starts no boundary). With a temporal patch of `frame_patch` frames only
/// pairs that cross a latent-frame boundary (`t % frame_patch == 0`) are compared, as clip
/// boundaries always are: frames inside one patch come from one token and differ less.
pub fn clip_continuity(
    video: &Frames,
    clip_starts: &[usize],
    frame_patch: usize,
) -> ClipContinuity {
    let (mut across, mut within) = (Vec::new(), Vec::new());
    for t in (1..video.len()).filter(|t| t % frame_patch.max(1) == 0) {
        let diff = mean_abs_diff(&video.frames[t - 1], &video.frames[t]);
        if clip_starts.contains(&t) {
            across.push(diff)
        } else {
            within.push(diff)
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    ClipContinuity {
        across: mean(&across),
        within: mean(&within),
    }
}

/// What the detector finds of the object in one frame: the largest lit region.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// Centroid `(x, y)` in pixels.
    pub centre: (f64, f64),
    /// Foreground pixels.
    pub area: f64,
    /// Area over bounding-box area: 1 square, π/4 circle, 1/2 triangle.
    pub fill: f64,
    /// Mean foreground colour in [0, 1].
    pub colour: [f64; 3],
    /// Bounding box of the foreground, `[x0, y0, x1, y1]` inclusive.
    pub bbox: [usize; 4],
    /// Lit regions of at least [`MIN_REGION`] pixels in the frame: 1 for a clip of one object;
    /// a sample that grew its object in several places shows more.
    pub regions: usize,
}

/// Smallest lit region (8-connected pixels) the detector counts as an object.
pub const MIN_REGION: usize = 3;

/// The largest 8-connected region of lit pixels of `frame` (pixel indices; empty when no
/// region reaches [`MIN_REGION`] pixels) and how many regions reach [`MIN_REGION`].
fn largest_region(frame: &[u8], width: usize) -> (Vec<usize>, usize) {
    let pixels = frame.len() / 3;
    // Lit pixels not yet assigned to a region: a flood fill clears them as it goes.
    let mut unvisited: Vec<bool> = frame
        .chunks_exact(3)
        .map(|px| *px.iter().max().unwrap() >= 128)
        .collect();
    let (mut regions, mut best): (usize, Vec<usize>) = (0, Vec::new());
    let mut stack = Vec::new();
    for seed in 0..pixels {
        if !unvisited[seed] {
            continue;
        }
        let mut members = vec![seed];
        unvisited[seed] = false;
        stack.push(seed);
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            for (dx, dy) in [
                (-1, -1),
                (0, -1),
                (1, -1),
                (-1, 0),
                (1, 0),
                (-1, 1),
                (0, 1),
                (1, 1),
            ] {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= width as isize || ny as usize * width >= pixels {
                    continue;
                }
                let j = ny as usize * width + nx as usize;
                if unvisited[j] {
                    unvisited[j] = false;
                    members.push(j);
                    stack.push(j);
                }
            }
        }
        if members.len() >= MIN_REGION {
            regions += 1;
            if members.len() > best.len() {
                best = members;
            }
        }
    }
    (best, regions)
}

/// Finds the bright object on the dark background of a frame: the largest 8-connected region
/// of lit pixels (`None` if no region reaches [`MIN_REGION`] pixels). Stray lit patches
/// elsewhere do not move its centre or spoil its shape; they are counted in `regions`.
pub fn detect(frame: &[u8], width: usize) -> Option<Detection> {
    let (best, regions) = largest_region(frame, width);
    if best.is_empty() {
        return None;
    }
    let n = best.len() as f64;
    let (mut sx, mut sy, mut rgb) = (0.0, 0.0, [0.0f64; 3]);
    let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
    for &i in &best {
        let (x, y) = (i % width, i / width);
        sx += x as f64 + 0.5;
        sy += y as f64 + 0.5;
        for c in 0..3 {
            rgb[c] += frame[3 * i + c] as f64 / 255.0;
        }
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let bbox = ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
    Some(Detection {
        centre: (sx / n, sy / n),
        area: n,
        fill: n / bbox,
        colour: rgb.map(|c| c / n),
        bbox: [x0, y0, x1, y1],
        regions,
    })
}

/// Intersection over union of the largest lit region of `frame` with each shape of
/// [`SHAPES`] drawn as the data set draws it ([`inside`]) and fitted to the region: the same
/// area, centred on its centroid (a triangle's box sits a third of its half-size above it),
/// then the best of shifts up to a pixel and sizes ±10%, so that a ragged edge pixel does not
/// decide. A clean shape scores near 1 with its own class; a square drawn as a blob scores
/// low with the square. All zeros when nothing is detected.
pub fn shape_ious(frame: &[u8], width: usize) -> [f64; 3] {
    let (region, _) = largest_region(frame, width);
    if region.is_empty() {
        return [0.0; 3];
    }
    let height = frame.len() / 3 / width;
    let mut lit = vec![false; width * height];
    let (mut cx, mut cy) = (0.0, 0.0);
    for &i in &region {
        lit[i] = true;
        cx += (i % width) as f64 + 0.5;
        cy += (i / width) as f64 + 0.5;
    }
    let n = region.len() as f64;
    let (cx, cy) = (cx / n, cy / n);
    // Half-size giving area n: 4r² (square), πr² (circle), 2r² (triangle).
    let half_size = [
        (n / 4.0).sqrt(),
        (n / std::f64::consts::PI).sqrt(),
        (n / 2.0).sqrt(),
    ];
    let iou = |shape: usize, bx: f64, by: f64, r: f64| {
        let (mut inter, mut drawn) = (0.0, 0.0);
        let (xs, ys) = (
            ((bx - r - 1.0).max(0.0) as usize)..((bx + r + 1.0).min(width as f64) as usize),
            ((by - r - 1.0).max(0.0) as usize)..((by + r + 1.0).min(height as f64) as usize),
        );
        for y in ys {
            for x in xs.clone() {
                if inside(
                    shape,
                    (x as f64 + 0.5 - bx) as f32,
                    (y as f64 + 0.5 - by) as f32,
                    r as f32,
                ) {
                    drawn += 1.0;
                    inter += lit[y * width + x] as u8 as f64;
                }
            }
        }
        inter / (n + drawn - inter)
    };
    let offsets = [-1.0, -0.5, 0.0, 0.5, 1.0];
    std::array::from_fn(|shape| {
        let mut best = 0.0f64;
        for scale in [0.9, 1.0, 1.1] {
            let r = half_size[shape] * scale;
            let lift = if shape == 2 { r / 3.0 } else { 0.0 };
            for dy in offsets {
                for dx in offsets {
                    best = best.max(iou(shape, cx + dx, cy + dy - lift, r));
                }
            }
        }
        best
    })
}

/// The shape a frame's object fits best ([`shape_ious`]).
pub fn classify_shape(frame: &[u8], width: usize) -> usize {
    best_fit(&shape_ious(frame, width))
}

/// The shape with the highest IoU.
fn best_fit(ious: &[f64; 3]) -> usize {
    (0..SHAPES.len())
        .max_by(|&a, &b| ious[a].total_cmp(&ious[b]))
        .unwrap()
}

/// The palette colour nearest to an RGB value, compared at full brightness (a dim garment
/// or a faded sample keeps its hue).
pub fn classify_colour(rgb: [f64; 3]) -> usize {
    let peak = rgb.iter().copied().fold(1e-6, f64::max);
    let dist = |c: [f32; 3]| {
        (0..3)
            .map(|i| (rgb[i] / peak - c[i] as f64).powi(2))
            .sum::<f64>()
    };
    (0..COLOURS.len())
        .min_by(|&a, &b| dist(COLOURS[a].1).total_cmp(&dist(COLOURS[b].1)))
        .unwrap()
}

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
    fn classes(&self) -> usize {
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

/// Averages of the metrics over a set of videos.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VideoMetrics {
    /// Videos measured.
    pub videos: usize,
    /// Mean temporal flickering score (1 = steady).
    pub temporal_flickering: f64,
    /// Mean motion smoothness (1 = linear motion).
    pub motion_smoothness: f64,
    /// Mean frame difference (0–255).
    pub dynamic_degree: f64,
    /// Mean detection rate.
    pub detection_rate: f64,
    /// Mean share of frames showing exactly one object.
    pub single_object_rate: f64,
    /// Share of videos showing the asked-for object class.
    pub object_accuracy: f64,
    /// Videos by asked-for object class (row) and the class the classifier saw (column; the
    /// last column counts videos with no object detected in any frame).
    #[serde(default)]
    pub object_confusion: Vec<Vec<usize>>,
    /// Share of videos showing the asked-for colour.
    pub colour_accuracy: f64,
    /// Mean [`ObjectFidelity::shape_ious`] with the asked-for shape (bouncing shapes only).
    #[serde(default)]
    pub shape_iou: Option<f64>,
    /// Mean [`ObjectFidelity::shape_ious`] by asked-for shape (row) and drawn shape
    /// (column): whether samples asked for a square are more square than the others.
    #[serde(default)]
    pub shape_iou_by_class: Vec<Vec<f64>>,
    /// Mean area variation.
    pub area_variation: f64,
    /// Mean centroid acceleration in pixels.
    pub acceleration_px: f64,
    /// Mean distance to the ground-truth trajectory (real clips only).
    pub trajectory_error_px: Option<f64>,
}

/// Measures videos with their `(object, colour)` labels (and ground-truth trajectories for
/// real clips), naming objects with `classifier`.
pub fn measure(
    videos: &[Frames],
    labels: &[(usize, usize)],
    trajectories: Option<&[Vec<(f32, f32)>]>,
    classifier: &ObjectClassifier,
) -> VideoMetrics {
    let n = videos.len().max(1) as f64;
    let mut m = VideoMetrics {
        videos: videos.len(),
        ..Default::default()
    };
    let (mut traj, mut ious) = (Vec::new(), Vec::new());
    let classes = classifier
        .classes()
        .max(labels.iter().map(|l| l.0 + 1).max().unwrap_or(0));
    let mut by_class = vec![Vec::new(); classes];
    m.object_confusion = vec![vec![0; classes + 1]; classes];
    for (i, (video, &(object, colour))) in videos.iter().zip(labels).enumerate() {
        m.temporal_flickering += temporal_flickering(video) / n;
        m.motion_smoothness += motion_smoothness(video) / n;
        m.dynamic_degree += dynamic_degree(video) / n;
        let f = object_fidelity(
            video,
            object,
            colour,
            trajectories.map(|t| t[i].as_slice()),
            classifier,
        );
        m.detection_rate += f.detection_rate / n;
        m.single_object_rate += f.single_object_rate / n;
        m.object_accuracy += f.object_correct as u8 as f64 / n;
        m.object_confusion[object][f.object_seen.unwrap_or(classes)] += 1;
        m.colour_accuracy += f.colour_correct as u8 as f64 / n;
        m.area_variation += f.area_variation / n;
        m.acceleration_px += f.acceleration_px / n;
        traj.extend(f.trajectory_error_px);
        if let Some(fit) = f.shape_ious {
            ious.push(fit[object]);
            by_class[object].push(fit);
        }
    }
    m.shape_iou = (!ious.is_empty()).then(|| ious.iter().sum::<f64>() / ious.len() as f64);
    if m.shape_iou.is_some() {
        m.shape_iou_by_class = by_class
            .iter()
            .map(|fits| {
                (0..SHAPES.len())
                    .map(|k| fits.iter().map(|f| f[k]).sum::<f64>() / fits.len().max(1) as f64)
                    .collect()
            })
            .collect();
    }
    m.trajectory_error_px =
        (!traj.is_empty()).then(|| traj.iter().sum::<f64>() / traj.len() as f64);
    m
}
