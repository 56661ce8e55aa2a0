//! The trainer and its step: flow matching with CFG dropout, DSV predictors trained
//! alongside, EMA, replicas and parallel ranks.

use std::borrow::Cow;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use burn_sparse_attn::dsv::{DsvGradients, DsvHost, DsvStage, DsvStepReport, DsvTape, DsvTrainer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::ema::ema_update;
use super::finite::first_non_finite;
use super::optim::DitOptimizer;
use super::parallelism::Parallelism;
use super::step::{ShareRun, StepBatch};
use super::{DivergencePolicy, TrainConfig, generate};
use crate::DitError;
use crate::VideoDit;
use crate::data::{ClipBatcher, ClipSet};
use crate::media::Frames;

/// One logged training step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    /// Step number (1-based).
    pub step: usize,
    /// Flow-matching loss (NaN or infinite on a step the divergence guard skipped: JSON
    /// writes it as null, read back as NaN).
    #[serde(deserialize_with = "nan_for_null")]
    pub loss: f32,
    /// Mean predictor loss over DSV layers (if any recorded one).
    pub predictor_loss: Option<f32>,
    /// DSV layers that ran sparse attention this step (in the sparse stage and sparse enough).
    pub sparse_layers: usize,
    /// Mean measured sparsity over DSV layers and heads.
    pub mean_sparsity: Option<f32>,
    /// Seconds the step took.
    pub seconds: f64,
    /// The divergence guard skipped this step: its loss or a gradient was not finite, and
    /// nothing was updated ([`DivergencePolicy::SkipStep`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// A float written by serde_json, which writes NaN and infinities as null.
fn nan_for_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f32, D::Error> {
    Ok(Option::<f32>::deserialize(deserializer)?.unwrap_or(f32::NAN))
}

/// Why a training step failed. The trainer's weights, optimiser and EMA are as they were
/// before the step.
#[derive(Debug)]
pub enum TrainError {
    /// The model rejected the step's inputs, or the group of ranks failed or disagrees.
    Dit(DitError),
    /// The loss or a gradient is NaN or infinite (the divergence guard).
    Diverged {
        /// The step (1-based) that diverged.
        step: usize,
        /// What is not finite: `loss`, or `gradient of <parameter path>`.
        quantity: String,
        /// The step's loss.
        loss: f32,
    },
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dit(e) => write!(f, "{e}"),
            Self::Diverged {
                step,
                quantity,
                loss,
            } => write!(
                f,
                "training diverged at step {step}: the {quantity} is not finite (loss {loss}); \
                 nothing from this step was applied or saved (lower the learning rate, or \
                 resume from the last checkpoint)"
            ),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<DitError> for TrainError {
    fn from(e: DitError) -> Self {
        Self::Dit(e)
    }
}

/// Share of training steps that self-condition (where the model does): the rest teach the
/// first sampling step, which has no estimate yet (Chen et al. 2022 use one half).
pub const SELF_CONDITION_RATE: f64 = 0.5;

/// A training run in progress.
pub struct Trainer {
    pub(super) config: TrainConfig,
    pub(super) device: Device,
    pub(super) model: VideoDit,
    pub(super) ema: VideoDit,
    pub(super) optimizer: DitOptimizer,
    pub(super) dsv: DsvTrainer,
    pub(super) step: usize,
    pub(super) history: Vec<StepLog>,
    pub(super) data: ClipSet,
    pub(super) batcher: ClipBatcher,
    /// How the ranks share each step.
    pub(super) parallelism: Parallelism,
    /// Factor on the scheduled learning rate, lowered by skipped steps.
    pub(super) lr_scale: f64,
    /// Steps skipped in a row by the divergence guard.
    pub(super) skipped_in_a_row: usize,
}

impl Trainer {
    /// A fresh run on `device` (an autodiff device is made from it); fails, naming the file,
    /// when the data set's files cannot be read.
    pub fn new(config: TrainConfig, device: &Device) -> std::io::Result<Self> {
        config.on_divergence.check().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("TrainConfig::on_divergence: {e}"),
            )
        })?;
        let data = config.data.open(
            config.clip,
            config.dataset_size,
            config.dataset_size,
            config.seed,
        )?;
        let device = device.clone().autodiff();
        device.seed(config.seed);
        let model = config.model.init(&device);
        let ema = model.clone().valid();
        Ok(Self {
            batcher: ClipBatcher::new(config.clip),
            optimizer: DitOptimizer::new(config.optimizer),
            dsv: DsvTrainer::new(config.predictor_lr),
            config,
            model,
            ema,
            step: 0,
            history: Vec::new(),
            data,
            parallelism: Parallelism::Single,
            device,
            lr_scale: 1.0,
            skipped_in_a_row: 0,
        })
    }

    /// The training clips; items from `config().dataset_size` on are the held-out ones.
    pub fn data(&self) -> &ClipSet {
        &self.data
    }

    /// Steps done.
    pub fn step(&self) -> usize {
        self.step
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Logged steps so far.
    pub fn history(&self) -> &[StepLog] {
        &self.history
    }

    /// The live (training) model.
    pub fn model(&self) -> &VideoDit {
        &self.model
    }

    /// Forces every DSV layer of the live model into `stage` (benchmarks, tests).
    pub fn set_dsv_stage(&mut self, stage: DsvStage) {
        for layer in self.model.dsv_layers_mut() {
            layer.set_stage(stage);
        }
    }

    /// The EMA weights, without autodiff: what sampling uses.
    pub fn ema(&self) -> &VideoDit {
        &self.ema
    }

    /// One optimisation step; everything random comes from a generator seeded by
    /// `(seed, step)`, so a resumed run repeats the same steps. Panics where
    /// [`Trainer::try_train_step`] returns an error.
    pub fn train_step(&mut self) -> StepLog {
        self.try_train_step()
            .unwrap_or_else(|e| panic!("training step {}: {e}", self.step + 1))
    }

    /// [`Trainer::train_step`], returning the data-parallel group's errors (a rank that
    /// failed or disagrees) and divergence: a non-finite loss or gradient, per the config's
    /// [`DivergencePolicy`], stops with [`TrainError::Diverged`] or skips the step.
    pub fn try_train_step(&mut self) -> Result<StepLog, TrainError> {
        let start = Instant::now();
        let batch = StepBatch::draw(
            &self.config,
            self.step,
            &self.data,
            &self.batcher,
            &self.device,
        );
        let grads = self.share_gradients(&batch)?;
        let grads = match self.parallelism.group() {
            Some(comm) => self.sum_over_ranks(comm, grads)?,
            None => grads,
        };
        // What this step ran, the same on every rank (ranks and replicas hold copies of one
        // schedule), decided before the update advances it.
        let sparse_layers = self.sparse_layers(&batch);
        // The divergence guard: every rank holds the same summed loss and gradients, so all
        // decide alike.
        if let Some(quantity) = non_finite_quantity(&self.model, &grads) {
            return self.skip_or_stop(quantity, grads.loss, start);
        }
        self.skipped_in_a_row = 0;
        let report = self.apply(grads)?;
        Ok(self.log(&report, sparse_layers, start))
    }

    /// This rank's gradients of the step: each of its shares of `batch` on the model or a
    /// replica, as tasks of the thread pool Flex's matmuls use (so the cores are shared, not
    /// oversubscribed), merged in share order, so the sum is the same whatever ran first.
    /// Where this rank records DSV's observations ([`Parallelism::records`]), the model
    /// itself takes the first share and records them; replicas record nothing.
    fn share_gradients(&self, batch: &StepBatch) -> Result<DsvGradients, DitError> {
        let shares = self.parallelism.shares(batch.size(), self.config.replicas);
        let records = self.parallelism.records();
        let models: Vec<Cow<VideoDit>> = (0..shares.len())
            .map(|i| match records && i == 0 {
                true => Cow::Borrowed(&self.model),
                false => Cow::Owned(DsvTrainer::replica(&self.model)),
            })
            .collect();
        let run = ShareRun {
            sequence: match &self.parallelism {
                Parallelism::Sequence { comm, frames } => Some((comm, frames)),
                _ => None,
            },
            recompute: self.config.checkpointing,
        };
        let grads: Vec<DsvGradients> = models
            .par_iter()
            .zip(shares)
            .enumerate()
            .map(|(i, (model, share))| {
                let tape = (records && i == 0).then(DsvTape::new);
                run.gradients(model, batch, share, tape)
            })
            .collect::<Result<_, _>>()?;
        let mut grads = grads.into_iter();
        let first = grads.next().expect("at least one share");
        Ok(grads.fold(first, |acc, other| acc.merge(other, &self.model)))
    }

    /// DSV layers that run sparse attention on `batch`'s clips.
    fn sparse_layers(&self, batch: &StepBatch) -> usize {
        let [_, _, frames, height, width] = batch.x_t.dims();
        let p = self.config.model.patch;
        let tokens = (frames / p[0]) * (height / p[1]) * (width / p[2]);
        self.model
            .dsv_layers()
            .iter()
            .filter(|l| l.runs_sparse(tokens))
            .count()
    }

    /// The optimiser's step on the summed gradients, then the EMA's; every rank of a group
    /// takes rank 0's DSV schedule.
    fn apply(&mut self, grads: DsvGradients) -> Result<DsvStepReport, DitError> {
        let lr = self.config.lr_at(self.step) * self.lr_scale;
        let model = self.model.clone();
        let optimizer = &mut self.optimizer;
        let (model, report) = self
            .dsv
            .apply_with(model, grads, |model, host| optimizer.step(lr, model, host));
        self.model = model;
        self.copy_dsv_schedule_from_rank_0()?;
        // EMA warm-up: early averages would otherwise be dominated by the initial weights.
        let decay = self
            .config
            .ema_decay
            .min((1 + self.step) as f64 / (10 + self.step) as f64);
        self.ema = ema_update(self.ema.clone(), &self.model, decay);
        self.step += 1;
        Ok(report)
    }

    /// The log of the step just applied.
    fn log(&mut self, report: &DsvStepReport, sparse_layers: usize, start: Instant) -> StepLog {
        let layers = self.model.dsv_layers();
        let stats: Vec<_> = layers.iter().map(|l| l.stats()).collect();
        let sparsities: Vec<f32> = stats
            .iter()
            .filter_map(|s| s.head_sparsity.as_ref())
            .flatten()
            .copied()
            .collect();
        let predictor: Vec<f32> = report.predictor_losses.iter().flatten().copied().collect();
        let log = StepLog {
            step: self.step,
            loss: report.loss,
            predictor_loss: (!predictor.is_empty())
                .then(|| predictor.iter().sum::<f32>() / predictor.len() as f32),
            sparse_layers,
            mean_sparsity: (!sparsities.is_empty())
                .then(|| sparsities.iter().sum::<f32>() / sparsities.len() as f32),
            seconds: start.elapsed().as_secs_f64(),
            skipped: false,
        };
        self.history.push(log.clone());
        log
    }

    /// The divergence guard's answer to a step whose `quantity` is not finite.
    fn skip_or_stop(
        &mut self,
        quantity: String,
        loss: f32,
        start: Instant,
    ) -> Result<StepLog, TrainError> {
        let diverged = TrainError::Diverged {
            step: self.step + 1,
            quantity,
            loss,
        };
        let DivergencePolicy::SkipStep {
            lr_factor,
            max_consecutive,
        } = self.config.on_divergence
        else {
            return Err(diverged);
        };
        if self.skipped_in_a_row >= max_consecutive {
            return Err(diverged);
        }
        self.skipped_in_a_row += 1;
        self.lr_scale *= lr_factor;
        self.step += 1;
        let log = StepLog {
            step: self.step,
            loss,
            predictor_loss: None,
            sparse_layers: 0,
            mean_sparsity: None,
            seconds: start.elapsed().as_secs_f64(),
            skipped: true,
        };
        self.history.push(log.clone());
        Ok(log)
    }

    /// Steps the divergence guard skipped so far.
    pub fn skipped_steps(&self) -> usize {
        self.history.iter().filter(|l| l.skipped).count()
    }

    /// Samples one clip per label with the EMA weights; `seed` fixes the noise.
    pub fn sample(&self, labels: &[(usize, usize)], seed: u64) -> Vec<Frames> {
        generate(
            &self.ema,
            self.config.clip,
            labels,
            self.config.sampler,
            seed,
        )
    }
}

/// What in a step's loss and gradients is NaN or infinite, if anything.
fn non_finite_quantity(model: &VideoDit, grads: &DsvGradients) -> Option<String> {
    if !grads.loss.is_finite() {
        return Some("loss".into());
    }
    let all = [grads.host_gradients(), grads.predictor_gradients()];
    first_non_finite(model, &all).map(|p| format!("gradient of `{p}`"))
}
