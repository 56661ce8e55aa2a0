//! Temporal quality: flicker, smoothness, motion and continuity across clip boundaries.

use serde::{Deserialize, Serialize};

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
