//! The training loop: flow matching with CFG dropout, DSV predictors trained alongside, EMA,
//! periodic samples, and checkpoints that resume exactly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::store::ModuleRecord;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_ctx_parallel::{Communicator, all_reduce_gradients, broadcast_module};
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::{DsvGradients, DsvHost, DsvTrainer};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::VideoDitConfig;
use crate::data::{
    COND_TOKENS, ClipBatcher, ClipSet, ClipShape, DataSource, SplitMix, colour_token, object_token,
};
use crate::ema::ema_update;
use crate::flow::{SamplerConfig, SigmaSampling, add_noise, sample_euler, velocity_target};
use crate::media::Frames;
use crate::model::VideoDit;
use crate::optim::{DitOptimizer, OptimizerKind};

/// Everything a training run is made of; saved in every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The model.
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
    /// into one update ([`DsvTrainer::replica`]). Flex runs most ops on one core, so on a
    /// 2-core CPU two replicas keep both busy. The DSV predictors and profiler learn from the
    /// first share only. 0 counts as 1, more than `batch_size` as `batch_size`. Configs
    /// written before this field existed trained with 1.
    #[serde(default = "one")]
    pub replicas: usize,
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
    /// Steps between log lines.
    pub log_every: usize,
    /// Sampler settings.
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
            log_every: 10,
            // Strong guidance: colour and shape follow the label more often than at 1.5.
            sampler: SamplerConfig {
                steps: 20,
                guidance: 5.0,
                shift: 2.0,
                guidance_max_sigma: 1.0,
                stochasticity: 0.0,
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

fn one() -> usize {
    1
}

/// `(start, len)` of each of `replicas` shares of a batch of `b` (at least 1 clip each; the
/// first shares take the remainder).
fn batch_shares(b: usize, replicas: usize) -> Vec<(usize, usize)> {
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

/// One logged training step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    /// Step number (1-based).
    pub step: usize,
    /// Flow-matching loss.
    pub loss: f32,
    /// Mean predictor loss over DSV layers (if any recorded one).
    pub predictor_loss: Option<f32>,
    /// DSV layers that ran sparse attention this step (in the sparse stage and sparse enough).
    pub sparse_layers: usize,
    /// Mean measured sparsity over DSV layers and heads.
    pub mean_sparsity: Option<f32>,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Why a checkpoint could not be used. Nothing in memory or on disk changes when this is
/// returned.
#[derive(Debug)]
pub enum CheckpointError {
    /// A file is missing or unreadable.
    Io(PathBuf, std::io::Error),
    /// A file is not what a checkpoint holds.
    Corrupt(PathBuf, String),
    /// The checkpoint was written for another model or clip geometry.
    Mismatch {
        /// The setting that differs.
        field: &'static str,
        /// This run's value.
        expected: String,
        /// The checkpoint's value.
        found: String,
    },
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(path, e) => write!(f, "checkpoint: cannot read {}: {e}", path.display()),
            Self::Corrupt(path, why) => {
                write!(f, "checkpoint: {} is corrupt: {why}", path.display())
            }
            Self::Mismatch {
                field,
                expected,
                found,
            } => write!(
                f,
                "checkpoint: `{field}` differs: this run has {expected}, the checkpoint {found}"
            ),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// Saved beside the weights.
#[derive(Serialize, Deserialize)]
struct SavedState {
    format: u32,
    step: usize,
    config: TrainConfig,
    history: Vec<StepLog>,
}

/// Version 2: the model gained QK-norm and the pooled conditioning, the run its data source.
/// Version 3: the model gained the MLP's frame convolution, the run its optimiser.
/// Version 4: the model gained its prediction target and the MLP's temporal convolution.
/// Version 5: the model gained self-conditioning and the output convolution.
/// Version 6: the optimiser state is in two files (`DitOptimizer`'s shards); version 5, in one,
/// still loads.
const FORMAT: u32 = 6;
/// The oldest format this version reads.
const OLDEST_FORMAT: u32 = 5;
/// The first format with the optimiser state in two files.
const SHARDED_OPTIMIZER_FORMAT: u32 = 6;

/// Share of training steps that self-condition (where the model does): the rest teach the
/// first sampling step, which has no estimate yet (Chen et al. 2022 use one half).
pub const SELF_CONDITION_RATE: f64 = 0.5;

/// A training run in progress.
pub struct Trainer {
    config: TrainConfig,
    device: Device,
    model: VideoDit,
    ema: VideoDit,
    optimizer: DitOptimizer,
    dsv: DsvTrainer,
    step: usize,
    history: Vec<StepLog>,
    data: ClipSet,
    batcher: ClipBatcher,
    /// The data-parallel group (one rank unless [`Trainer::with_communicator`]).
    comm: Communicator,
}

/// Clip labels `(object, colour)` as conditioning ids `[B, COND_TOKENS]`.
pub fn label_ids(labels: &[(usize, usize)], device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = labels
        .iter()
        .flat_map(|&(s, c)| [object_token(s), colour_token(c)])
        .collect();
    Tensor::from_data(TensorData::new(ids, [labels.len(), COND_TOKENS]), device)
}

impl Trainer {
    /// A fresh run on `device` (an autodiff device is made from it); fails, naming the file,
    /// when the data set's files cannot be read.
    pub fn new(config: TrainConfig, device: &Device) -> std::io::Result<Self> {
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
            device,
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
    /// one checkpoint). Fails when the batch has fewer clips than ranks.
    pub fn with_communicator(mut self, comm: Communicator) -> Result<Self, SparseAttnError> {
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

    /// The EMA weights, without autodiff: what sampling uses.
    pub fn ema(&self) -> &VideoDit {
        &self.ema
    }

    /// One optimisation step; everything random comes from a generator seeded by
    /// `(seed, step)`, so a resumed run repeats the same steps. A one-process trainer never
    /// fails here; a data-parallel one panics where [`Trainer::try_train_step`] returns an
    /// error.
    pub fn train_step(&mut self) -> StepLog {
        self.try_train_step()
            .unwrap_or_else(|e| panic!("training step {}: {e}", self.step + 1))
    }

    /// [`Trainer::train_step`], returning the data-parallel group's errors (a rank that
    /// failed or disagrees).
    pub fn try_train_step(&mut self) -> Result<StepLog, SparseAttnError> {
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
        // This rank's run of the group's shares; rank 0 holds the first.
        let (world, rank) = (self.comm.world(), self.comm.rank());
        let all_shares = batch_shares(b, world * c.replicas.max(1));
        let n = all_shares.len();
        let shares: Vec<(usize, usize)> = (0..n)
            .filter(|i| i * world / n == rank)
            .map(|i| all_shares[i])
            .collect();
        // Each replica's share of the batch: its loss, weighted by the share, and gradients.
        let replica_grads = |model: &VideoDit, (start, n): (usize, usize)| -> DsvGradients {
            let x_t = x_t.clone().narrow(0, start, n);
            let sigma = sigma.clone().narrow(0, start, n);
            let cond = model.embed_labels(labels.clone().narrow(0, start, n));
            let estimate = self_condition.then(|| {
                let frozen = model.clone().valid();
                let v = frozen
                    .forward(
                        x_t.clone().inner(),
                        sigma.clone().inner(),
                        cond.clone().inner(),
                    )
                    .expect("training shapes come from the config");
                (x_t.clone().inner() - v * sigma.clone().inner().reshape([n, 1, 1, 1, 1]))
                    .autodiff()
            });
            let pred = model
                .forward_refining(x_t, sigma, cond, estimate)
                .expect("training shapes come from the config");
            let loss =
                (pred - target.clone().narrow(0, start, n)).square().mean() * (n as f64 / b as f64);
            DsvTrainer::backward(model, loss)
        };
        // The model takes the first share, replicas the others, as tasks of the thread pool
        // Flex's matmuls use (so the cores are shared, not oversubscribed); the results come
        // back in share order, so the sum is the same whatever ran first. Other ranks run
        // replicas only: the model itself counts DSV steps and profiles.
        let own = usize::from(rank == 0);
        let replicas: Vec<VideoDit> = shares[own..]
            .iter()
            .map(|_| DsvTrainer::replica(&self.model))
            .collect();
        let models: Vec<&VideoDit> = (rank == 0)
            .then_some(&self.model)
            .into_iter()
            .chain(&replicas)
            .collect();
        let grads: Vec<DsvGradients> = models
            .into_par_iter()
            .zip(shares)
            .map(|(model, share)| replica_grads(model, share))
            .collect();
        let mut grads = grads.into_iter();
        let first = grads.next().expect("at least one share");
        let mut grads = grads.fold(first, |acc, other| acc.merge(other, &self.model));
        if world > 1 {
            grads = self.sum_over_ranks(grads)?;
        }

        let lr = self.config.lr_at(self.step);
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
            sparse_layers: stats.iter().filter(|s| s.ran_sparse).count(),
            mean_sparsity: (!sparsities.is_empty())
                .then(|| sparsities.iter().sum::<f32>() / sparsities.len() as f32),
            seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(log.clone());
        Ok(log)
    }

    /// Every rank's gradients and host loss summed; the predictor losses of rank 0 (the only
    /// rank that trains the predictors).
    fn sum_over_ranks(&self, grads: DsvGradients) -> Result<DsvGradients, SparseAttnError> {
        let comm = &self.comm;
        let mut grads =
            grads.try_map_gradients(&self.model, |g| all_reduce_gradients(comm, &self.model, g))?;
        // [loss, predictor losses…]: other ranks add zeros to rank 0's (NaN where it has none).
        let mut values = vec![grads.loss];
        values.extend(grads.predictor_losses.iter().map(|l| {
            if comm.rank() == 0 {
                l.unwrap_or(f32::NAN)
            } else {
                0.0
            }
        }));
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
    fn copy_dsv_schedule_from_rank_0(&self) -> Result<(), SparseAttnError> {
        let layers = self.model.dsv_layers();
        if layers.is_empty() {
            return Ok(());
        }
        let states: Vec<Tensor<1>> = layers.iter().map(|l| l.schedule_state()).collect();
        let sizes: Vec<usize> = states.iter().map(|s| s.dims()[0]).collect();
        let all = self.comm.broadcast(Tensor::cat(states, 0), 0)?;
        let mut at = 0;
        for (layer, n) in layers.iter().zip(sizes) {
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

    /// Writes a checkpoint under `dir/checkpoints/step_NNNNNN` and points `latest` at it;
    /// the pointer changes only once every file is written.
    pub fn save_checkpoint(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let name = format!("step_{:06}", self.step);
        let root = dir.join("checkpoints");
        let ckpt = root.join(&name);
        std::fs::create_dir_all(&ckpt)?;
        let io = |e: burn::store::RecordError| std::io::Error::other(e.to_string());
        self.model
            .clone()
            .into_record()
            .save(ckpt.join("model.bpk"))
            .map_err(io)?;
        self.ema
            .clone()
            .into_record()
            .save(ckpt.join("ema.bpk"))
            .map_err(io)?;
        self.optimizer.save(&ckpt).map_err(io)?;
        self.dsv
            .optimizer()
            .save(ckpt.join("predictor_optimizer.bpk"))
            .map_err(io)?;
        let state = SavedState {
            format: FORMAT,
            step: self.step,
            config: self.config.clone(),
            history: self.history.clone(),
        };
        std::fs::write(
            ckpt.join("state.json"),
            serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?,
        )?;
        let tmp = root.join("latest.tmp");
        std::fs::write(&tmp, &name)?;
        std::fs::rename(tmp, root.join("latest"))?;
        Ok(ckpt)
    }

    /// Resumes from the checkpoint `dir/checkpoints/latest` points to. Everything is read and
    /// checked before anything changes: on error this trainer is left as it was.
    pub fn resume(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        let (ckpt, state) = read_checkpoint(dir)?;
        let ours = serde_json::to_string(&self.config.model).expect("config serialises");
        let theirs = serde_json::to_string(&state.config.model).expect("config serialises");
        if ours != theirs {
            return Err(CheckpointError::Mismatch {
                field: "model",
                expected: ours,
                found: theirs,
            });
        }
        if state.config.data != self.config.data {
            return Err(CheckpointError::Mismatch {
                field: "data",
                expected: format!("{:?}", self.config.data),
                found: format!("{:?}", state.config.data),
            });
        }
        if state.config.clip != self.config.clip {
            return Err(CheckpointError::Mismatch {
                field: "clip",
                expected: format!("{:?}", self.config.clip),
                found: format!("{:?}", state.config.clip),
            });
        }
        if state.config.optimizer != self.config.optimizer {
            return Err(CheckpointError::Mismatch {
                field: "optimizer",
                expected: format!("{:?}", self.config.optimizer),
                found: format!("{:?}", state.config.optimizer),
            });
        }
        let load_record = |file: &str| load_module_record(&ckpt, file);
        let fresh = self.config.model.init(&self.device);
        let model = fresh
            .clone()
            .try_load_record(load_record("model.bpk")?)
            .map_err(|e| CheckpointError::Corrupt(ckpt.join("model.bpk"), e.to_string()))?;
        let ema = fresh
            .valid()
            .try_load_record(load_record("ema.bpk")?)
            .map_err(|e| CheckpointError::Corrupt(ckpt.join("ema.bpk"), e.to_string()))?;
        let optimizer = if state.format < SHARDED_OPTIMIZER_FORMAT {
            DitOptimizer::load_unsharded(self.config.optimizer, &ckpt)
        } else {
            DitOptimizer::load(self.config.optimizer, &ckpt)
        };
        let optimizer =
            optimizer.map_err(|(file, e)| CheckpointError::Corrupt(file, e.to_string()))?;
        let pred_path = ckpt.join("predictor_optimizer.bpk");
        let predictor_optimizer = AdamWConfig::new()
            .with_weight_decay(0.0)
            .init()
            .load(&pred_path)
            .map_err(|e| CheckpointError::Corrupt(pred_path, e.to_string()))?;

        self.model = model;
        self.ema = ema;
        self.optimizer = optimizer;
        self.dsv.set_optimizer(predictor_optimizer);
        self.step = state.step;
        self.history = state.history;
        Ok(())
    }
}

/// The checkpoint `dir/checkpoints/latest` points to and its saved state.
fn read_checkpoint(dir: &Path) -> Result<(PathBuf, SavedState), CheckpointError> {
    let root = dir.join("checkpoints");
    let latest = root.join("latest");
    let name =
        std::fs::read_to_string(&latest).map_err(|e| CheckpointError::Io(latest.clone(), e))?;
    let ckpt = root.join(name.trim());
    let state_path = ckpt.join("state.json");
    let bytes =
        std::fs::read(&state_path).map_err(|e| CheckpointError::Io(state_path.clone(), e))?;
    // The format first: an older checkpoint is named as such, not as a parse error.
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let format: Format = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt(state_path.clone(), e.to_string()))?;
    if !(OLDEST_FORMAT..=FORMAT).contains(&format.format) {
        return Err(CheckpointError::Mismatch {
            field: "format",
            expected: format!("{OLDEST_FORMAT}..={FORMAT}"),
            found: format.format.to_string(),
        });
    }
    let state: SavedState = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt(state_path.clone(), e.to_string()))?;
    Ok((ckpt, state))
}

fn load_module_record(ckpt: &Path, file: &str) -> Result<ModuleRecord, CheckpointError> {
    let path = ckpt.join(file);
    if !path.exists() {
        return Err(CheckpointError::Io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    ModuleRecord::load(&path).map_err(|e| CheckpointError::Corrupt(path, e.to_string()))
}

/// The training configuration of the checkpoint that `dir/checkpoints/latest` points to.
pub fn saved_config(dir: &Path) -> Result<TrainConfig, CheckpointError> {
    read_checkpoint(dir).map(|(_, state)| state.config)
}

/// The EMA (sampling) weights and the training configuration of the checkpoint that
/// `dir/checkpoints/latest` points to, on `device` without autodiff: what a sampler needs,
/// whatever attention the run trained with.
pub fn load_for_sampling(
    dir: &Path,
    device: &Device,
) -> Result<(VideoDit, TrainConfig), CheckpointError> {
    let (ckpt, state) = read_checkpoint(dir)?;
    let model = state
        .config
        .model
        .init(device)
        .try_load_record(load_module_record(&ckpt, "ema.bpk")?)
        .map_err(|e| CheckpointError::Corrupt(ckpt.join("ema.bpk"), e.to_string()))?;
    Ok((model, state.config))
}

/// Samples one clip per `(object, colour)` label with `model` (no autodiff).
pub fn generate(
    model: &VideoDit,
    clip: ClipShape,
    labels: &[(usize, usize)],
    sampler: SamplerConfig,
    seed: u64,
) -> Vec<Frames> {
    let device = model
        .devices()
        .into_iter()
        .next()
        .expect("a model lives on a device");
    let n = labels.len();
    if n == 0 {
        return Vec::new();
    }
    let noise = SplitMix(seed).normal_tensor([n, 3, clip.frames, clip.height, clip.width], &device);
    let sample = |noise: Tensor<5>, labels: &[(usize, usize)]| {
        let cond = model.embed_labels(label_ids(labels, &device));
        let uncond = model.embed_labels(Tensor::zeros([labels.len(), COND_TOKENS], &device));
        sample_euler(model, noise, cond, uncond, sampler)
            .expect("sampling shapes come from the config")
    };
    let videos = if sampler.stochasticity > 0.0 {
        // A stochastic sampler draws its step noise from the device's (global) generator, so
        // it samples in one batch; the deterministic one draws nothing and leaves it alone.
        device.seed(seed);
        sample(noise, labels)
    } else {
        // Shares of the labels sample in parallel, as training replicas do (Flex runs most
        // ops on one core); each clip starts from the noise it would get in one batch.
        let shares = batch_shares(n, rayon::current_num_threads());
        let parts: Vec<Tensor<5>> = shares
            .into_par_iter()
            .map(|(start, len)| {
                sample(
                    noise.clone().narrow(0, start, len),
                    &labels[start..start + len],
                )
            })
            .collect();
        Tensor::cat(parts, 0)
    };
    let pixels: Vec<f32> = videos
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 video");
    let per = 3 * clip.frames * clip.height * clip.width;
    pixels
        .chunks_exact(per)
        .map(|p| Frames::from_chw(p, clip.frames, clip.height, clip.width))
        .collect()
}
