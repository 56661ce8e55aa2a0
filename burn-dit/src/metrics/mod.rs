//! Network-free video metrics (VBench-style proxies) and object fidelity against the labels
//! and ground truth of the synthetic sets.

mod fidelity;
mod held_out;
mod objects;
mod temporal;

use serde::{Deserialize, Serialize};

pub use fidelity::{ObjectClassifier, ObjectFidelity, object_fidelity};
pub use held_out::HeldOut;
pub use objects::{Detection, MIN_REGION, classify_colour, classify_shape, detect, shape_ious};
pub use temporal::{
    ClipContinuity, clip_continuity, dynamic_degree, motion_smoothness, temporal_flickering,
};

use crate::data::SHAPES;
use crate::media::Frames;

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
