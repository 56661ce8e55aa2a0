//! What a training run is made of: model, data, optimiser, schedule and sampler.

use serde::{Deserialize, Serialize};

use crate::config::VideoDitConfig;
use crate::data::{ClipShape, DataSource};
use crate::flow::SigmaSampling;
use crate::sample::SamplerConfig;
use crate::train::optim::OptimizerKind;

/// Everything a training run is made of; saved in every checkpoint. A serde struct rather
/// than a Burn `Config`: it must read the configs of earlier runs, whose later fields take
/// their defaults here (`#[serde(default)]`), which Burn's derive does not offer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model.
    #[serde(deserialize_with = "model_with_later_options")]
    pub model: VideoDitConfig,
    /// The clips trained on.
    pub data: DataSource,
    /// Clip geometry.
    pub clip: ClipShape,
    /// Training clips (the held-out set follows them).
    pub dataset_size: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// Clips per step.
    pub batch_size: usize,
    /// Model replicas that train on shares of each batch in parallel, their gradients summed
    /// into one update ([`DsvTrainer::replica`](burn_sparse_attn::dsv::DsvTrainer::replica)).
    /// Flex runs most ops on one core, so on a 2-core CPU two replicas keep both busy. The DSV predictors and profiler learn from the
    /// first share only. 0 counts as 1, more than `batch_size` as `batch_size`. Configs
    /// written before this field existed trained with 1.
    #[serde(default = "one")]
    pub replicas: usize,
    /// Per-block activation checkpointing: each step keeps only the blocks' inputs and
    /// recomputes a block's activations for its backward
    /// ([`VideoDit::checkpointed_gradients`](crate::VideoDit::checkpointed_gradients)); the
    /// same gradients in less memory, for one more forward of the blocks. Configs written
    /// before this field existed trained without.
    #[serde(default)]
    pub checkpointing: bool,
    /// Optimiser of the DiT (configs written before this field existed used AdamW).
    #[serde(default)]
    pub optimizer: OptimizerKind,
    /// Peak learning rate of the DiT.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Learning rate at the last step as a fraction of `lr`, reached by a cosine after the
    /// warm-up (1 = constant). A short run ends sharper when the rate has come down.
    pub final_lr_fraction: f64,
    /// Learning rate of the DSV predictors.
    pub predictor_lr: f64,
    /// EMA decay of the sampling weights.
    pub ema_decay: f64,
    /// Noise-level distribution.
    pub sigma: SigmaSampling,
    /// Probability of dropping the conditioning (classifier-free guidance).
    pub cond_dropout: f64,
    /// Steps between sample GIFs (0 = never).
    pub sample_every: usize,
    /// Steps between checkpoints (0 = only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk, the newest (0 = all; configs written before this field
    /// existed keep all).
    #[serde(default)]
    pub keep_checkpoints: usize,
    /// What a step whose loss or gradient is NaN or infinite does (configs written before
    /// this field existed stop).
    #[serde(default)]
    pub on_divergence: DivergencePolicy,
    /// Steps between log lines.
    pub log_every: usize,
    /// Sampler settings.
    #[serde(deserialize_with = "sampler_with_later_options")]
    pub sampler: SamplerConfig,
    /// Seed of data order, noise and dropout.
    pub seed: u64,
}

impl TrainConfig {
    /// The main job (`scripts/main.sh`) with `model`, usually
    /// `VideoDitConfig::tiny().with_attention(AttentionKind::tiny_dsv())` (or `Dense`):
    /// 2700 steps on 8×32×32 bouncing-shape clips, batch 8 in two replicas, about ten
    /// minutes on 2 CPU cores. Its figures are in `docs/benchmarks.md`.
    pub fn tiny(model: VideoDitConfig) -> Self {
        Self {
            model,
            data: DataSource::BouncingShapes,
            clip: ClipShape {
                frames: 8,
                height: 32,
                width: 32,
            },
            dataset_size: 4096,
            steps: 2700,
            batch_size: 8,
            // Flex runs most ops on one core: two replicas keep a 2-core CPU busy.
            replicas: 2,
            checkpointing: false,
            // Muon on the block matrices: lower loss and solid objects sooner than AdamW, for
            // a little more time per step.
            optimizer: OptimizerKind::Muon,
            lr: 2e-3,
            warmup_steps: 50,
            final_lr_fraction: 0.1,
            predictor_lr: 2e-3,
            ema_decay: 0.99,
            // Mid-to-high noise, where the object's place and shape are decided, drawn more
            // often than under the sampler's shift-2 schedule.
            sigma: SigmaSampling::LogitNormal {
                mean: 0.5,
                std: 1.0,
            },
            cond_dropout: 0.1,
            sample_every: 1350,
            checkpoint_every: 1350,
            keep_checkpoints: 3,
            on_divergence: DivergencePolicy::Stop,
            log_every: 10,
            // Strong guidance: colour and shape follow the label more often than at 1.5.
            sampler: SamplerConfig {
                steps: 20,
                guidance: 5.0,
                shift: 2.0,
                guidance_max_sigma: 1.0,
                stochasticity: 0.0,
                faster_cache: None,
                free_init: None,
                online_sparse: None,
            },
            seed: 42,
        }
    }

    /// The same run with `steps` steps; sample GIFs and checkpoints at the half-way point.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self.sample_every = (steps / 2).max(1);
        self.checkpoint_every = (steps / 2).max(1);
        self
    }

    /// Learning rate of step `step` (0-based): a linear warm-up to `lr`, then a cosine down to
    /// `lr · final_lr_fraction` at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        let warm = self.warmup_steps.max(1);
        if step + 1 < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        let progress = (step + 1 - warm) as f64 / self.steps.saturating_sub(warm).max(1) as f64;
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos());
        self.lr * (self.final_lr_fraction + (1.0 - self.final_lr_fraction) * cosine)
    }
}

/// What a training step whose loss or gradient is NaN or infinite does. Either way nothing
/// from that step reaches the weights, the optimiser, the EMA or a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum DivergencePolicy {
    /// Stop the run with [`TrainError::Diverged`](super::TrainError::Diverged).
    #[default]
    Stop,
    /// Skip the step (no update; the data moves on) and scale the learning rate by
    /// `lr_factor` from then on; stop after `max_consecutive` skipped steps in a row.
    SkipStep {
        /// Factor in (0, 1] applied to the learning rate at every skipped step.
        lr_factor: f64,
        /// Skipped steps in a row before the run stops (≥ 1).
        max_consecutive: usize,
    },
}

impl DivergencePolicy {
    /// Checks the policy's numbers; the error names the field and its range.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Self::Stop => Ok(()),
            Self::SkipStep {
                lr_factor,
                max_consecutive,
            } => {
                if !(lr_factor > 0.0 && lr_factor <= 1.0) {
                    return Err(format!("lr_factor must be in (0, 1], got {lr_factor}"));
                }
                if max_consecutive == 0 {
                    return Err("max_consecutive must be ≥ 1, got 0".into());
                }
                Ok(())
            }
        }
    }
}

/// A model config as saved, with the options added since filled in as off (Burn's `Config`
/// requires every field).
/// A `T` whose missing fields take their values from `defaults`: Burn's `Config` derive
/// reads only complete configs, and a run folder may hold one written before a field existed.
fn with_later_fields<'de, D: serde::Deserializer<'de>, T: serde::de::DeserializeOwned>(
    deserializer: D,
    defaults: serde_json::Value,
) -> Result<T, D::Error> {
    let mut value = serde_json::Value::deserialize(deserializer)?;
    if let (Some(fields), serde_json::Value::Object(defaults)) = (value.as_object_mut(), defaults) {
        for (name, default) in defaults {
            fields.entry(name).or_insert(default);
        }
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}

fn model_with_later_options<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<VideoDitConfig, D::Error> {
    let defaults = serde_json::json!({ "parallel_block": false, "feature_aggregation": false });
    with_later_fields(deserializer, defaults)
}

fn sampler_with_later_options<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SamplerConfig, D::Error> {
    let defaults = serde_json::to_value(SamplerConfig::default()).expect("a config serialises");
    with_later_fields(deserializer, defaults)
}

fn one() -> usize {
    1
}
