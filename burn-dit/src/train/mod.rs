//! Training: the run's configuration, the training loop, checkpoints and sampling of
//! labelled clips.

mod checkpoint;
mod config;
mod generate;
mod trainer;

pub use checkpoint::{CheckpointError, load_for_sampling, saved_config};
pub use config::TrainConfig;
pub use generate::{generate, label_ids};
pub use trainer::{SELF_CONDITION_RATE, StepLog, Trainer};

/// `(start, len)` of each of `replicas` shares of a batch of `b` (at least 1 clip each; the
/// first shares take the remainder).
pub(crate) fn batch_shares(b: usize, replicas: usize) -> Vec<(usize, usize)> {
    let r = replicas.clamp(1, b.max(1));
    let mut start = 0;
    (0..r)
        .map(|i| {
            let n = b / r + usize::from(i < b % r);
            start += n;
            (start - n, n)
        })
        .collect()
}
