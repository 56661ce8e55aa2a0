//! Training: the run's configuration and folder, the training loop, its optimisers and EMA,
//! checkpoints and sampling of labelled clips.

mod checkpoint;
mod config;
mod ema;
mod finite;
mod generate;
pub mod optim;
mod parallelism;
pub mod report;
#[cfg(feature = "media")]
mod run;
mod run_dir;
mod step;
mod storage;
mod trainer;
mod validation;

pub use checkpoint::{CheckpointError, IfDamaged, load_for_sampling, saved_config};
pub use config::{DivergencePolicy, TrainConfig};
pub use ema::ema_update;
pub use generate::{
    SAMPLE_CHUNK, generate, generate_with_progress, generate_with_stats, label_ids,
};
pub use parallelism::Parallelism;
#[cfg(feature = "media")]
pub use run::{
    Evaluation, PrintProgress, REPORT_CLIPS, RunEnd, RunError, RunProgress, clock,
    sample_with_progress, write_video_set,
};
pub use run_dir::{RunDir, RunDirError, RunMode};
pub use storage::write_atomically;
pub use trainer::{SELF_CONDITION_RATE, StepLog, TrainError, Trainer};

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
