//! The held-out evaluation protocol: samples of the held-out clips' labels measured against
//! those clips, with one object classifier for both.

use crate::data::ClipSet;
use crate::media::Frames;

use super::{ObjectClassifier, VideoMetrics, measure};

/// Training clips the object classifier of the protocol learns from.
const CLASSIFIER_CLIPS: usize = 2000;

/// The first `clips` held-out items of a data set (the items after its training set): their
/// labels, their frames and motion, and the object classifier of the set. Two runs evaluated
/// with the same set are compared on the same labels.
pub struct HeldOut {
    labels: Vec<(usize, usize)>,
    real: Vec<Frames>,
    trajectories: Vec<Vec<(f32, f32)>>,
    classifier: ObjectClassifier,
}

impl HeldOut {
    /// Items `training..training + clips` of `data`, whose first `training` items train.
    pub fn new(data: &ClipSet, training: usize, clips: usize) -> Self {
        let shape = data.clip();
        let real: Vec<_> = (training..training + clips)
            .map(|i| data.generate(i))
            .collect();
        Self {
            labels: real.iter().map(|r| (r.object, r.colour)).collect(),
            real: real
                .iter()
                .map(|r| Frames::from_chw(&r.pixels, shape.frames, shape.height, shape.width))
                .collect(),
            trajectories: real.iter().map(|r| r.trajectory.clone()).collect(),
            classifier: ObjectClassifier::for_set(data, CLASSIFIER_CLIPS),
        }
    }

    /// The `(object, colour)` labels to sample, one per held-out clip.
    pub fn labels(&self) -> &[(usize, usize)] {
        &self.labels
    }

    /// The metrics of the held-out clips themselves: what samples are measured against.
    pub fn real_metrics(&self) -> VideoMetrics {
        measure(
            &self.real,
            &self.labels,
            Some(&self.trajectories),
            &self.classifier,
        )
    }

    /// The metrics of `samples`, one per label.
    pub fn measure(&self, samples: &[Frames]) -> VideoMetrics {
        measure(samples, &self.labels, None, &self.classifier)
    }
}
