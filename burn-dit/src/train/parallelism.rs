//! How a trainer's ranks share a step: one rank, data parallelism or sequence parallelism,
//! and what the ranks exchange (configurations, gradients, losses, DSV's schedule).

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};
use burn_ctx_parallel::{Communicator, all_reduce_gradients, broadcast_module};
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::{DsvGradients, DsvHost};

use super::checkpoint::differences;
use super::{Trainer, batch_shares};
use crate::DitError;
use crate::config::AttentionKind;

/// How the ranks of a training run share each step.
pub enum Parallelism {
    /// One rank (replicas may still split the batch over threads).
    Single,
    /// Every rank takes its shares of the batch ([`Trainer::with_communicator`]).
    Data(Communicator),
    /// Every rank takes its frames of every clip ([`Trainer::with_sequence_parallel`]).
    Sequence {
        /// The ranks.
        comm: Communicator,
        /// This rank's frames of every clip.
        frames: Range<usize>,
    },
}

impl Parallelism {
    /// The group of ranks, unless there is one rank.
    pub fn communicator(&self) -> Option<&Communicator> {
        match self {
            Self::Single => None,
            Self::Data(comm) | Self::Sequence { comm, .. } => Some(comm),
        }
    }

    /// The group of more than one rank, whose ranks exchange gradients and schedules.
    pub(super) fn group(&self) -> Option<&Communicator> {
        self.communicator().filter(|comm| comm.world() > 1)
    }

    /// Whether this rank's own model trains the DSV predictors and records their
    /// observations: rank 0 of a data-parallel group, every sequence-parallel rank (each
    /// holds a weighted part of every layer's predictor loss).
    pub(super) fn records(&self) -> bool {
        match self {
            Self::Single => true,
            Self::Data(comm) => comm.rank() == 0,
            Self::Sequence { .. } => true,
        }
    }

    /// This rank's shares `(start, len)` of a batch of `b` clips split `replicas` ways per
    /// rank: a data-parallel rank takes its run of the group's shares (rank 0 the first), a
    /// sequence-parallel rank the whole batch (its own frames of it).
    pub(super) fn shares(&self, b: usize, replicas: usize) -> Vec<(usize, usize)> {
        let (world, rank) = match self {
            Self::Single => (1, 0),
            Self::Data(comm) => (comm.world(), comm.rank()),
            Self::Sequence { .. } => return vec![(0, b)],
        };
        let all = batch_shares(b, world * replicas.max(1));
        let n = all.len();
        (0..n)
            .filter(|i| i * world / n == rank)
            .map(|i| all[i])
            .collect()
    }
}

impl Trainer {
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
    pub fn with_communicator(mut self, comm: Communicator) -> Result<Self, DitError> {
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
        self.parallelism = Parallelism::Data(comm);
        Ok(self)
    }

    /// Trains sequence-parallel over the ranks of `comm` (threads or MPI processes, each with
    /// its own `Trainer` made from the same config): every rank draws the same batch and
    /// takes its run of every clip's frames (contiguous shards in rank order, cut in units of
    /// the frame patch and, with DSV, of its query cube in time); self-attention spans the
    /// whole clip ([`ForwardContext::sequence_shard`](crate::ForwardContext::sequence_shard): a ring for dense attention, DSV's
    /// sharded layer) and the gradients are summed over the ranks, so the run equals one
    /// process training on whole clips up to the order of float sums while each rank holds
    /// the activations of its shard only. Every rank's DSV layers learn and profile on their
    /// own rows against all keys; rank 0's schedule is copied after each step. Validation
    /// and sampling run on whole videos. Every rank starts from rank 0's weights. Needs
    /// `replicas` ≤ 1, dense or DSV attention and at least one unit of frames per rank, and
    /// the same configuration and step on every rank (as [`Trainer::with_communicator`]).
    pub fn with_sequence_parallel(mut self, comm: Communicator) -> Result<Self, DitError> {
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
        self.parallelism = Parallelism::Sequence {
            comm,
            frames: first..end,
        };
        Ok(self)
    }

    /// Fails, on every rank alike, unless every rank of `comm` has rank 0's configuration
    /// and step: ranks that disagree on a setting that keeps tensor shapes (learning rate,
    /// optimiser, steps) would otherwise train a silently wrong run or leave a peer waiting.
    fn check_same_run(&self, comm: &Communicator, function: &'static str) -> Result<(), DitError> {
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
            }
            .into());
        }
        Ok(())
    }

    /// How this trainer's ranks share each step.
    pub fn parallelism(&self) -> &Parallelism {
        &self.parallelism
    }

    /// Every rank's gradients and host loss summed; the predictor losses of rank 0 (the only
    /// data-parallel rank that trains the predictors), or of all sequence-parallel ranks.
    pub(super) fn sum_over_ranks(
        &self,
        comm: &Communicator,
        grads: DsvGradients,
    ) -> Result<DsvGradients, DitError> {
        let mut grads =
            grads.try_map_gradients(&self.model, |g| all_reduce_gradients(comm, &self.model, g))?;
        // [loss, predictor losses…]: other ranks add zeros to rank 0's (NaN where it has none).
        let mut values = vec![grads.loss];
        let own = self.parallelism.records();
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
    pub(super) fn copy_dsv_schedule_from_rank_0(&mut self) -> Result<(), DitError> {
        let Some(comm) = self.parallelism.group() else {
            return Ok(());
        };
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
        let all = comm.broadcast(Tensor::cat(states, 0), 0)?;
        let mut at = 0;
        for (layer, n) in self.model.dsv_layers_mut().into_iter().zip(sizes) {
            layer.set_schedule_state(all.clone().narrow(0, at, n))?;
            at += n;
        }
        Ok(())
    }
}
