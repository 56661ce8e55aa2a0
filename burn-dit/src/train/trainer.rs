//! The training loop: flow matching with CFG dropout, DSV predictors trained alongside, EMA,
//! replicas and data-parallel ranks.

use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use burn_ctx_parallel::{Communicator, all_reduce_gradients, broadcast_module};
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::{DsvGradients, DsvHost, DsvStage, DsvTape, DsvTrainer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::checkpoint::differences;
use super::finite::first_non_finite;
use super::{DivergencePolicy, TrainConfig, batch_shares, generate};
use crate::config::AttentionKind;
use crate::data::{ClipBatcher, ClipSet, SplitMix};
use crate::ema::ema_update;
use crate::flow::{add_noise, velocity_target};
use crate::media::Frames;
use crate::model::{Video, VideoDit};
use crate::optim::DitOptimizer;

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
    /// The data-parallel group failed or disagrees.
    Group(SparseAttnError),
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
            Self::Group(e) => write!(f, "{e}"),
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

impl From<SparseAttnError> for TrainError {
    fn from(e: SparseAttnError) -> Self {
        Self::Group(e)
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
    /// The data-parallel group (one rank unless [`Trainer::with_communicator`]), or the
    /// sequence-parallel one ([`Trainer::with_sequence_parallel`]).
    pub(super) comm: Communicator,
    /// This rank's frames `(first, count)` of every clip when training sequence-parallel.
    pub(super) sequence: Option<(usize, usize)>,
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
            comm: Communicator::single(device.clone()),
            sequence: None,
            device,
            lr_scale: 1.0,
            skipped_in_a_row: 0,
        })
    }

    /// Trains data-parallel over the ranks of `comm` (threads or MPI processes, each with its
    /// own `Trainer` made from the same config): every rank draws the same global batch,
    /// takes its shares of it (`world × replicas` shares in all, rank `r` the `r`-th run of
    /// them), and the gradients are summed over the ranks before every update, so all ranks
    /// keep the same weights and the run equals one process training with
    /// `replicas = world × replicas` up to the order of float sums. The first share, on
    /// rank 0, trains the DSV predictors and profiles sparsity, and every rank copies rank
    /// 0's DSV schedule after each step. Every rank starts from rank 0's weights (call it
    /// after [`Trainer::resume`]; optimiser states start equal when they start empty or from
    /// one checkpoint). Fails on every rank when the ranks' configurations or steps differ
    /// (naming the first setting that does and both values), or when the batch has fewer
    /// clips than ranks.
    pub fn with_communicator(mut self, comm: Communicator) -> Result<Self, SparseAttnError> {
        self.check_same_run(&comm, "Trainer::with_communicator")?;
        let world = comm.world();
        SparseAttnError::check(
            self.config.batch_size >= world,
            "Trainer::with_communicator",
            "comm",
            format!("at most batch_size ({}) ranks", self.config.batch_size),
            world,
        )?;
        // One initialisation (or resumed state) for all: ranks that are threads of one
        // process share the device's random generator, so their own inits differ.
        self.model = broadcast_module(&comm, self.model, 0)?;
        self.ema = broadcast_module(&comm, self.ema, 0)?;
        self.comm = comm;
        Ok(self)
    }

    /// Trains sequence-parallel over the ranks of `comm` (threads or MPI processes, each with
    /// its own `Trainer` made from the same config): every rank draws the same batch and
    /// takes its run of every clip's frames (contiguous shards in rank order, cut in units of
    /// the frame patch and, with DSV, of its query cube in time); self-attention spans the
    /// whole clip ([`VideoDit::forward_sequence_shard`]: a ring for dense attention, DSV's
    /// sharded layer) and the gradients are summed over the ranks, so the run equals one
    /// process training on whole clips up to the order of float sums while each rank holds
    /// the activations of its shard only. Every rank's DSV layers learn and profile on their
    /// own rows against all keys; rank 0's schedule is copied after each step. Validation
    /// and sampling run on whole videos. Every rank starts from rank 0's weights. Needs
    /// `replicas` ≤ 1, dense or DSV attention and at least one unit of frames per rank, and
    /// the same configuration and step on every rank (as [`Trainer::with_communicator`]).
    pub fn with_sequence_parallel(mut self, comm: Communicator) -> Result<Self, SparseAttnError> {
        const F: &str = "Trainer::with_sequence_parallel";
        self.check_same_run(&comm, F)?;
        let c = &self.config;
        SparseAttnError::check(
            c.replicas <= 1,
            F,
            "config.replicas",
            "at most 1 (every rank holds one model)",
            c.replicas,
        )?;
        SparseAttnError::check(
            !matches!(c.model.attention, AttentionKind::DualScope(_)),
            F,
            "config.model.attention",
            "dense or DSV attention (dual-scope models span ranks in sampling)",
            "dual-scope",
        )?;
        let cube_frames = match &c.model.attention {
            AttentionKind::Dsv(policy) => policy.query_cube[0].max(1),
            _ => 1,
        };
        let (world, rank) = (comm.world(), comm.rank());
        let unit = c.model.patch[0] * cube_frames;
        let units = c.clip.frames / unit;
        SparseAttnError::check(
            units >= world,
            F,
            "comm",
            format!(
                "at most {units} ranks (clips of {} frames in units of {unit})",
                c.clip.frames
            ),
            world,
        )?;
        let first = rank * units / world * unit;
        let end = match rank + 1 == world {
            true => c.clip.frames,
            false => (rank + 1) * units / world * unit,
        };
        self.model = broadcast_module(&comm, self.model, 0)?;
        self.ema = broadcast_module(&comm, self.ema, 0)?;
        self.comm = comm;
        self.sequence = Some((first, end - first));
        Ok(self)
    }

    /// Fails, on every rank alike, unless every rank of `comm` has rank 0's configuration
    /// and step: ranks that disagree on a setting that keeps tensor shapes (learning rate,
    /// optimiser, steps) would otherwise train a silently wrong run or leave a peer waiting.
    fn check_same_run(
        &self,
        comm: &Communicator,
        function: &'static str,
    ) -> Result<(), SparseAttnError> {
        if comm.world() == 1 {
            return Ok(());
        }
        let run = serde_json::json!({ "config": self.config, "step": self.step });
        let ranks = comm.all_gather_bytes(&serde_json::to_vec(&run).expect("config serialises"))?;
        let parse = |rank: usize| {
            serde_json::from_slice::<serde_json::Value>(&ranks[rank]).map_err(|e| SparseAttnError {
                function,
                argument: "comm",
                expected: "ranks that send their run configuration as JSON".into(),
                actual: format!("rank {rank}: {e}"),
            })
        };
        let lead = parse(0)?;
        for rank in 1..ranks.len() {
            let differ = differences("", &lead, &parse(rank)?);
            let Some((field, lead_value, value)) = differ.first() else {
                continue;
            };
            let name = |field: &str| field.trim_start_matches('.').to_string();
            let also = match differ.len() {
                1 => String::new(),
                _ => format!(
                    " (also {})",
                    differ[1..]
                        .iter()
                        .map(|d| format!("`{}`", name(&d.0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            return Err(SparseAttnError {
                function,
                argument: "comm",
                expected: format!(
                    "ranks that train the same run: `{}` is {lead_value} on rank 0",
                    name(field)
                ),
                actual: format!("{value} on rank {rank}{also}"),
            });
        }
        Ok(())
    }

    /// The data-parallel group this trainer is a rank of.
    pub fn communicator(&self) -> &Communicator {
        &self.comm
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
        let c = &self.config;
        let b = c.batch_size;
        let mut rng = SplitMix(c.seed ^ (self.step as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        let items = (0..b)
            .map(|_| {
                self.data
                    .get(rng.below(c.dataset_size))
                    .expect("index below len")
            })
            .collect();
        let batch = self.batcher.batch(items, &self.device);
        // Classifier-free guidance: drop the whole conditioning of some clips to the null id.
        let keep: Vec<f32> = (0..b)
            .map(|_| {
                if (rng.unit() as f64) < c.cond_dropout {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let keep = Tensor::<1>::from_data(TensorData::new(keep, [b]), &self.device)
            .int()
            .reshape([b, 1]);
        let labels = batch.labels * keep;

        let x0 = batch.videos;
        let noise = rng.normal_tensor(x0.dims(), &self.device);
        let sigma = c.sigma.sample(b, &mut rng, &self.device);
        let x_t = add_noise(x0.clone(), noise.clone(), sigma.clone());
        let target = velocity_target(x0, noise);
        // Self-conditioning: on some steps the model first estimates the clean video without
        // gradient (and without counting a DSV step), then refines with the estimate in view.
        let self_condition = c.model.self_condition && (rng.unit() as f64) < SELF_CONDITION_RATE;
        // This rank's run of the group's shares; rank 0 holds the first. Sequence-parallel
        // ranks all hold the whole batch (their own frames of it).
        let (world, rank) = (self.comm.world(), self.comm.rank());
        let sequence = self.sequence.map(|frames| (&self.comm, frames));
        let all_shares = batch_shares(b, world * c.replicas.max(1));
        let n = all_shares.len();
        let shares: Vec<(usize, usize)> = match sequence {
            Some(_) => vec![(0, b)],
            None => (0..n)
                .filter(|i| i * world / n == rank)
                .map(|i| all_shares[i])
                .collect(),
        };
        // Squared errors per sample of the whole video.
        let per_sample = target.dims()[1..].iter().product::<usize>();
        // Each replica's share of the batch: its loss, weighted by the share, and gradients.
        // The model's share records its DSV layers' observations; replicas record none.
        let replica_grads = |model: &VideoDit,
                             (start, n): (usize, usize),
                             tape: Option<DsvTape>|
         -> Result<DsvGradients, SparseAttnError> {
            let frames = |t: Tensor<5>| match sequence {
                Some((_, (first, count))) => t.narrow(2, first, count),
                None => t,
            };
            let x_t = frames(x_t.clone().narrow(0, start, n));
            let sigma = sigma.clone().narrow(0, start, n);
            let cond = model.embed_labels(labels.clone().narrow(0, start, n));
            let comm = sequence.map(|(comm, _)| comm);
            let estimate = match self_condition {
                true => {
                    let frozen = model.clone().valid();
                    let video = Video {
                        x: x_t.clone().inner(),
                        sigma: sigma.clone().inner(),
                        cond: cond.clone().inner(),
                        estimate: None,
                    };
                    let v = frozen.forward_video(comm, video, None)?;
                    let x_t = x_t.clone().inner();
                    Some((x_t - v * sigma.clone().inner().reshape([n, 1, 1, 1, 1])).autodiff())
                }
                false => None,
            };
            let target = frames(target.clone().narrow(0, start, n));
            // A shard's part of the batch mean: the ranks' losses sum to it.
            let loss = |pred: Tensor<5>| match sequence {
                Some(_) => (pred - target).square().sum() / (b * per_sample) as f64,
                None => (pred - target).square().mean() * (n as f64 / b as f64),
            };
            let video = Video {
                x: x_t,
                sigma,
                cond,
                estimate,
            };
            if c.checkpointing {
                let step = model.checkpointed(comm, video, tape.as_ref(), loss)?;
                return Ok(DsvTrainer::backward_segmented(
                    model,
                    step.loss,
                    step.gradients,
                    tape.unwrap_or_default(),
                ));
            }
            let pred = model.forward_video(comm, video, tape.as_ref())?;
            Ok(DsvTrainer::backward(
                model,
                loss(pred),
                tape.unwrap_or_default(),
            ))
        };
        // The model takes the first share, replicas the others, as tasks of the thread pool
        // Flex's matmuls use (so the cores are shared, not oversubscribed); the results come
        // back in share order, so the sum is the same whatever ran first. Other data-parallel
        // ranks run replicas only: the model itself counts DSV steps and profiles. Every
        // sequence-parallel rank runs the model and records: its DSV layers' exchanges need
        // every rank.
        let own = usize::from(self.trains_predictors());
        let replicas: Vec<VideoDit> = shares[own..]
            .iter()
            .map(|_| DsvTrainer::replica(&self.model))
            .collect();
        let models: Vec<&VideoDit> = (own == 1)
            .then_some(&self.model)
            .into_iter()
            .chain(&replicas)
            .collect();
        let grads: Vec<DsvGradients> = models
            .into_par_iter()
            .zip(shares)
            .enumerate()
            .map(|(i, (model, share))| {
                let tape = (own == 1 && i == 0).then(DsvTape::new);
                replica_grads(model, share, tape)
            })
            .collect::<Result<_, _>>()?;
        let mut grads = grads.into_iter();
        let first = grads.next().expect("at least one share");
        let mut grads = grads.fold(first, |acc, other| acc.merge(other, &self.model));
        if world > 1 {
            grads = self.sum_over_ranks(grads)?;
        }

        // What this step ran, the same on every rank (ranks and replicas hold copies of one
        // schedule), decided before the update advances it.
        let [_, _, frames, height, width] = x_t.dims();
        let p = c.model.patch;
        let tokens = (frames / p[0]) * (height / p[1]) * (width / p[2]);
        let sparse_layers = self
            .model
            .dsv_layers()
            .iter()
            .filter(|l| l.runs_sparse(tokens))
            .count();

        // The divergence guard: every rank holds the same summed loss and gradients, so all
        // decide alike.
        if let Some(quantity) = non_finite_quantity(&self.model, &grads) {
            return self.skip_or_stop(quantity, grads.loss, start);
        }
        self.skipped_in_a_row = 0;

        let lr = self.config.lr_at(self.step) * self.lr_scale;
        let model = self.model.clone();
        let optimizer = &mut self.optimizer;
        let (model, report) = self
            .dsv
            .apply_with(model, grads, |model, host| optimizer.step(lr, model, host));
        self.model = model;
        if world > 1 {
            self.copy_dsv_schedule_from_rank_0()?;
        }
        // EMA warm-up: early averages would otherwise be dominated by the initial weights.
        let decay = self
            .config
            .ema_decay
            .min((1 + self.step) as f64 / (10 + self.step) as f64);
        self.ema = ema_update(self.ema.clone(), &self.model, decay);
        self.step += 1;

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
        Ok(log)
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

    /// Whether this rank's own model trains the DSV predictors and records their
    /// observations: rank 0 of a data-parallel group, every sequence-parallel rank (each
    /// holds a weighted part of every layer's predictor loss).
    fn trains_predictors(&self) -> bool {
        self.comm.rank() == 0 || self.sequence.is_some()
    }

    /// Every rank's gradients and host loss summed; the predictor losses of rank 0 (the only
    /// data-parallel rank that trains the predictors), or of all sequence-parallel ranks.
    fn sum_over_ranks(&self, grads: DsvGradients) -> Result<DsvGradients, SparseAttnError> {
        let comm = &self.comm;
        let mut grads =
            grads.try_map_gradients(&self.model, |g| all_reduce_gradients(comm, &self.model, g))?;
        // [loss, predictor losses…]: other ranks add zeros to rank 0's (NaN where it has none).
        let mut values = vec![grads.loss];
        let own = self.trains_predictors();
        values.extend(
            grads
                .predictor_losses
                .iter()
                .map(|l| if own { l.unwrap_or(f32::NAN) } else { 0.0 }),
        );
        let n = values.len();
        let summed = comm.all_reduce(Tensor::<1>::from_data(
            TensorData::new(values, [n]),
            comm.device(),
        ))?;
        let summed: Vec<f32> = summed
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("f32 losses");
        grads.loss = summed[0];
        grads.predictor_losses = summed[1..]
            .iter()
            .map(|&l| (!l.is_nan()).then_some(l))
            .collect();
        Ok(grads)
    }

    /// Rank 0's DSV stage, step count, predictor loss and sparsity profile on every rank.
    fn copy_dsv_schedule_from_rank_0(&mut self) -> Result<(), SparseAttnError> {
        let states: Vec<Tensor<1>> = self
            .model
            .dsv_layers()
            .iter()
            .map(|l| l.schedule_state())
            .collect();
        if states.is_empty() {
            return Ok(());
        }
        let sizes: Vec<usize> = states.iter().map(|s| s.dims()[0]).collect();
        let all = self.comm.broadcast(Tensor::cat(states, 0), 0)?;
        let mut at = 0;
        for (layer, n) in self.model.dsv_layers_mut().into_iter().zip(sizes) {
            layer.set_schedule_state(all.clone().narrow(0, at, n))?;
            at += n;
        }
        Ok(())
    }

    /// Held-out flow-matching loss of the live weights: each of the first `clips` held-out
    /// clips (the items after the training set), with its own labels, noised at every noise
    /// level in `sigmas` by noise drawn from `seed`. The inputs depend only on the arguments
    /// and the data, so two runs that trained differently (dense and DSV attention, say) are
    /// compared on the same examples, free of the noise of their batch-by-batch training
    /// losses. Runs without gradient; DSV layers attend as they train now (dense or sparse)
    /// and count no step.
    pub fn validation_loss(
        &self,
        clips: usize,
        sigmas: &[f64],
        seed: u64,
    ) -> Result<f32, SparseAttnError> {
        self.held_out_loss(
            "Trainer::validation_loss",
            &self.model.valid(),
            clips,
            sigmas,
            seed,
        )
    }

    /// [`Trainer::validation_loss`] of the EMA weights, the ones sampling uses: less noisy
    /// than one snapshot of live weights that a small batch still moves at every step.
    pub fn ema_validation_loss(
        &self,
        clips: usize,
        sigmas: &[f64],
        seed: u64,
    ) -> Result<f32, SparseAttnError> {
        self.held_out_loss(
            "Trainer::ema_validation_loss",
            &self.ema,
            clips,
            sigmas,
            seed,
        )
    }

    fn held_out_loss(
        &self,
        function: &'static str,
        model: &VideoDit,
        clips: usize,
        sigmas: &[f64],
        seed: u64,
    ) -> Result<f32, SparseAttnError> {
        SparseAttnError::check(clips >= 1, function, "clips", "at least 1", clips)?;
        SparseAttnError::check(
            !sigmas.is_empty() && sigmas.iter().all(|s| (0.0..=1.0).contains(s)),
            function,
            "sigmas",
            "one or more noise levels in [0, 1]",
            format!("{sigmas:?}"),
        )?;
        let device = model
            .devices()
            .into_iter()
            .next()
            .expect("a model lives on a device");
        let n = sigmas.len();
        let sigma = Tensor::<1>::from_data(
            TensorData::new(sigmas.iter().map(|&s| s as f32).collect::<Vec<_>>(), [n]),
            &device,
        );
        let mut rng = SplitMix(seed);
        let mut total = 0.0;
        // One clip at a time, its noise levels as the batch: memory stays that of `n` clips.
        for i in 0..clips {
            let clip = self.data.generate(self.config.dataset_size + i);
            let batch = self.batcher.batch(vec![clip; n], &device);
            let noise = rng.normal_tensor(batch.videos.dims(), &device);
            let x_t = add_noise(batch.videos.clone(), noise.clone(), sigma.clone());
            let v = model.forward(x_t, sigma.clone(), model.embed_labels(batch.labels))?;
            total += (v - velocity_target(batch.videos, noise))
                .square()
                .mean()
                .into_scalar::<f32>();
        }
        Ok(total / clips as f32)
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
