//! Network-free video metrics (VBench-style proxies) and bouncing-shape fidelity.

use serde::{Deserialize, Serialize};

use crate::data::{COLOURS, SHAPES};
use crate::media::Frames;

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).abs()).sum::<f64>() / a.len() as f64
}

/// VBench's temporal flickering: `(255 − mean |f_t − f_{t+1}|) / 255`, averaged (1 = steady).
pub fn temporal_flickering(video: &Frames) -> f64 {
    let pairs: Vec<f64> = video.frames.windows(2).map(|w| (255.0 - mean_abs_diff(&w[0], &w[1])) / 255.0).collect();
    if pairs.is_empty() { 1.0 } else { pairs.iter().sum::<f64>() / pairs.len() as f64 }
}

/// Motion smoothness proxy: how well each inner frame equals the mean of its neighbours,
/// `1 − mean |f_t − (f_{t−1} + f_{t+1})/2| / 255` (1 = perfectly linear motion).
pub fn motion_smoothness(video: &Frames) -> f64 {
    let triples: Vec<f64> = video
        .frames
        .windows(3)
        .map(|w| {
            let err = w[1].iter().zip(&w[0]).zip(&w[2]).map(|((&m, &a), &b)| (m as f64 - (a as f64 + b as f64) / 2.0).abs()).sum::<f64>();
            1.0 - err / w[1].len() as f64 / 255.0
        })
        .collect();
    if triples.is_empty() { 1.0 } else { triples.iter().sum::<f64>() / triples.len() as f64 }
}

/// Dynamic degree proxy: mean absolute frame difference on the 0–255 scale.
pub fn dynamic_degree(video: &Frames) -> f64 {
    let diffs: Vec<f64> = video.frames.windows(2).map(|w| mean_abs_diff(&w[0], &w[1])).collect();
    if diffs.is_empty() { 0.0 } else { diffs.iter().sum::<f64>() / diffs.len() as f64 }
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
pub fn clip_continuity(video: &Frames, clip_starts: &[usize], frame_patch: usize) -> ClipContinuity {
    let (mut across, mut within) = (Vec::new(), Vec::new());
    for t in (1..video.len()).filter(|t| t % frame_patch.max(1) == 0) {
        let diff = mean_abs_diff(&video.frames[t - 1], &video.frames[t]);
        if clip_starts.contains(&t) { across.push(diff) } else { within.push(diff) }
    }
    let mean = |v: &[f64]| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    ClipContinuity { across: mean(&across), within: mean(&within) }
}

/// What the detector finds of the single shape in one frame.
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
}

/// Finds the bright object on the dark background of a frame (`None` if nothing is lit).
pub fn detect(frame: &[u8], width: usize) -> Option<Detection> {
    let (mut n, mut sx, mut sy, mut rgb) = (0.0, 0.0, 0.0, [0.0f64; 3]);
    let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
    for (i, px) in frame.chunks_exact(3).enumerate() {
        if *px.iter().max().unwrap() < 128 {
            continue;
        }
        let (x, y) = (i % width, i / width);
        n += 1.0;
        sx += x as f64 + 0.5;
        sy += y as f64 + 0.5;
        for c in 0..3 {
            rgb[c] += px[c] as f64 / 255.0;
        }
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if n < 3.0 {
        return None;
    }
    let bbox = ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64;
    Some(Detection { centre: (sx / n, sy / n), area: n, fill: n / bbox, colour: rgb.map(|c| c / n) })
}

/// The label a fill ratio looks most like.
pub fn classify_shape(fill: f64) -> usize {
    let expected = [1.0, std::f64::consts::FRAC_PI_4, 0.5];
    (0..SHAPES.len()).min_by(|&a, &b| (fill - expected[a]).abs().total_cmp(&(fill - expected[b]).abs())).unwrap()
}

/// The palette colour nearest to an RGB value.
pub fn classify_colour(rgb: [f64; 3]) -> usize {
    let dist = |c: [f32; 3]| (0..3).map(|i| (rgb[i] - c[i] as f64).powi(2)).sum::<f64>();
    (0..COLOURS.len()).min_by(|&a, &b| dist(COLOURS[a].1).total_cmp(&dist(COLOURS[b].1))).unwrap()
}

/// Bouncing-shape fidelity of one video against the labels it was asked for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShapeFidelity {
    /// Frames with a detected object.
    pub detection_rate: f64,
    /// Whether the majority shape matches the label.
    pub shape_correct: bool,
    /// Whether the majority colour matches the label.
    pub colour_correct: bool,
    /// Coefficient of variation of the object's area over frames (0 for a rigid shape).
    pub area_variation: f64,
    /// Mean |second difference| of the centroid in pixels, away from walls (0 for
    /// constant-velocity motion).
    pub acceleration_px: f64,
    /// Mean centroid distance to the ground-truth trajectory, where one is known.
    pub trajectory_error_px: Option<f64>,
}

/// Measures one video; `trajectory` is the ground truth when the video is a real clip.
pub fn shape_fidelity(video: &Frames, shape: usize, colour: usize, trajectory: Option<&[(f32, f32)]>) -> ShapeFidelity {
    let detections: Vec<Option<Detection>> = video.frames.iter().map(|f| detect(f, video.width)).collect();
    let found: Vec<&Detection> = detections.iter().flatten().collect();
    let mut out = ShapeFidelity { detection_rate: found.len() as f64 / video.len().max(1) as f64, ..Default::default() };
    if found.is_empty() {
        return out;
    }
    let majority = |votes: Vec<usize>, classes: usize| (0..classes).max_by_key(|c| votes.iter().filter(|v| *v == c).count()).unwrap();
    out.shape_correct = majority(found.iter().map(|d| classify_shape(d.fill)).collect(), SHAPES.len()) == shape;
    out.colour_correct = majority(found.iter().map(|d| classify_colour(d.colour)).collect(), COLOURS.len()) == colour;
    let mean_area = found.iter().map(|d| d.area).sum::<f64>() / found.len() as f64;
    let var = found.iter().map(|d| (d.area - mean_area).powi(2)).sum::<f64>() / found.len() as f64;
    out.area_variation = var.sqrt() / mean_area;
    let margin = mean_area.sqrt();
    let away = |d: &Detection| d.centre.0 > margin && d.centre.0 < video.width as f64 - margin && d.centre.1 > margin && d.centre.1 < video.height as f64 - margin;
    let accels: Vec<f64> = detections
        .windows(3)
        .filter_map(|w| match (w[0], w[1], w[2]) {
            (Some(a), Some(b), Some(c)) if away(&a) && away(&b) && away(&c) => {
                Some(((a.centre.0 + c.centre.0 - 2.0 * b.centre.0).powi(2) + (a.centre.1 + c.centre.1 - 2.0 * b.centre.1).powi(2)).sqrt())
            }
            _ => None,
        })
        .collect();
    out.acceleration_px = if accels.is_empty() { 0.0 } else { accels.iter().sum::<f64>() / accels.len() as f64 };
    out.trajectory_error_px = trajectory.map(|gt| {
        let errs: Vec<f64> = detections.iter().zip(gt).filter_map(|(d, &(x, y))| d.map(|d| ((d.centre.0 - x as f64).powi(2) + (d.centre.1 - y as f64).powi(2)).sqrt())).collect();
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
    /// Share of videos showing the asked-for shape.
    pub shape_accuracy: f64,
    /// Share of videos showing the asked-for colour.
    pub colour_accuracy: f64,
    /// Mean area variation.
    pub area_variation: f64,
    /// Mean centroid acceleration in pixels.
    pub acceleration_px: f64,
    /// Mean distance to the ground-truth trajectory (real clips only).
    pub trajectory_error_px: Option<f64>,
}

/// Measures videos with their labels (and ground-truth trajectories for real clips).
pub fn measure(videos: &[Frames], labels: &[(usize, usize)], trajectories: Option<&[Vec<(f32, f32)>]>) -> VideoMetrics {
    let n = videos.len().max(1) as f64;
    let mut m = VideoMetrics { videos: videos.len(), ..Default::default() };
    let mut traj = Vec::new();
    for (i, (video, &(shape, colour))) in videos.iter().zip(labels).enumerate() {
        m.temporal_flickering += temporal_flickering(video) / n;
        m.motion_smoothness += motion_smoothness(video) / n;
        m.dynamic_degree += dynamic_degree(video) / n;
        let f = shape_fidelity(video, shape, colour, trajectories.map(|t| t[i].as_slice()));
        m.detection_rate += f.detection_rate / n;
        m.shape_accuracy += f.shape_correct as u8 as f64 / n;
        m.colour_accuracy += f.colour_correct as u8 as f64 / n;
        m.area_variation += f.area_variation / n;
        m.acceleration_px += f.acceleration_px / n;
        traj.extend(f.trajectory_error_px);
    }
    m.trajectory_error_px = (!traj.is_empty()).then(|| traj.iter().sum::<f64>() / traj.len() as f64);
    m
}
