//! The DSV attention module: dense while its predictor learns, then sparse per head.

use alloc::format;
use alloc::vec::Vec;

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{
    Bool, Device, Int, Tensor, TensorData, module::attention, ops::AttentionModuleOptions,
};

use super::grid::{Reorder, TokenGrid};
use super::predictor::{LowRankPredictor, PredictorInput, predictor_loss as predictor_loss_of};
use super::profiler::{critical_recall, critical_sets, row_probabilities};
use super::shards::{SequenceShards, ShardShape};
use super::state::{HostState, to_host};
use super::tape::{DsvLayerStep, DsvTape, LayerObservation};
use crate::{
    SelectionConfig, SparseAttentionOptions, SparseAttnError, select_critical_keys,
    sparse_attention,
};

/// Configuration of [`DsvAttention`]: the layer's shape and its [`DsvPolicy`].
#[derive(Config, Debug)]
pub struct DsvAttentionConfig {
    /// Width of the layer input the predictor reads.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Head dimension of q, k and v.
    pub head_dim: usize,
    /// How the layer learns, measures and goes sparse.
    pub policy: DsvPolicy,
}

/// How a DSV layer learns its predictor, measures sparsity and chooses budgets; defaults
/// follow the DSV paper and artifact.
#[derive(Config, Debug, PartialEq)]
pub struct DsvPolicy {
    /// Rank `r` of the low-rank predictor per head.
    #[config(default = 16)]
    pub predictor_rank: usize,
    /// What the predictor projects: the layer's queries and keys by default, so that it sees
    /// RoPE and QK-norm (the DSV paper projects the layer input).
    #[config(default = "PredictorInput::QueryKey")]
    pub predictor_input: PredictorInput,
    /// Query group as a cube of the token grid `[frames, height, width]`.
    #[config(default = "[2, 4, 4]")]
    pub query_cube: [usize; 3],
    /// Softmax mass θ that the critical keys of a query must reach.
    #[config(default = 0.9)]
    pub mass_threshold: f64,
    /// A layer goes sparse only when its measured sparsity reaches this.
    #[config(default = 0.8)]
    pub sparsity_threshold: f64,
    /// Lower bound of the budget as a fraction of the keys.
    #[config(default = 0.02)]
    pub min_budget_fraction: f64,
    /// Upper bound of the budget as a fraction of the keys: caps the cost of a layer
    /// whatever its measured sparsity (1 = no cap).
    #[config(default = 1.0)]
    pub max_budget_fraction: f64,
    /// Budgets are rounded up to a multiple of this (the kernels' key tile).
    #[config(default = 16)]
    pub budget_multiple: usize,
    /// Below this many tokens sparse attention cannot beat dense: stay dense.
    #[config(default = 1024)]
    pub min_sparse_len: usize,
    /// Profile every this many training steps early on...
    #[config(default = 25)]
    pub profile_every: usize,
    /// ...and every this many once `late_after_steps` have passed.
    #[config(default = 100)]
    pub profile_every_late: usize,
    /// Step after which profiling becomes rare.
    #[config(default = 1000)]
    pub late_after_steps: usize,
    /// Momentum of the smoothed sparsity and predictor loss.
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Predictor loss under which the layer switches to sparse.
    #[config(default = 0.01)]
    pub switch_loss: f64,
    /// Every this many query rows are sampled for the predictor loss and the profiler.
    #[config(default = 64)]
    pub sample_stride: usize,
}

impl DsvAttentionConfig {
    /// Builds the module.
    pub fn init(&self, device: &Device) -> DsvAttention {
        assert!(
            self.heads > 0 && self.head_dim > 0 && self.d_model > 0,
            "DsvAttentionConfig: heads, head_dim and d_model must be ≥ 1"
        );
        assert!(
            self.policy.query_cube.iter().all(|&c| c > 0),
            "DsvAttentionConfig: `query_cube` entries must be ≥ 1, got {:?}",
            self.policy.query_cube
        );
        assert!(
            (0.0..=1.0).contains(&self.policy.mass_threshold),
            "DsvAttentionConfig: `mass_threshold` must be in [0, 1], got {}",
            self.policy.mass_threshold
        );
        assert!(
            (0.0..=1.0).contains(&self.policy.min_budget_fraction),
            "DsvAttentionConfig: `min_budget_fraction` must be in [0, 1], got {}",
            self.policy.min_budget_fraction
        );
        assert!(
            self.policy.max_budget_fraction > 0.0 && self.policy.max_budget_fraction <= 1.0,
            "DsvAttentionConfig: `max_budget_fraction` must be in (0, 1], got {}",
            self.policy.max_budget_fraction
        );
        DsvAttention {
            predictor: LowRankPredictor::new(
                self.policy.predictor_input,
                self.d_model,
                self.heads,
                self.head_dim,
                self.policy.predictor_rank,
                device,
            ),
            // −1: not profiled yet.
            head_sparsity: HostState::new(alloc::vec![-1.0; self.heads], device),
            schedule: HostState::new(alloc::vec![0.0, 0.0, f32::NAN, f32::NAN], device),
            config: self.clone(),
            last: LastStep::default(),
        }
    }
}

/// Which attention the layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsvStage {
    /// Stage 1: dense attention while the predictor learns.
    Dense,
    /// Stage 2: sparse attention with per-head budgets.
    Sparse,
}

/// What a user can log about one DSV layer.
#[derive(Clone, Debug, PartialEq)]
pub struct DsvLayerStats {
    /// Current stage.
    pub stage: DsvStage,
    /// Training steps seen.
    pub step: usize,
    /// Smoothed fraction of non-critical keys per head (`None` before the first profile).
    pub head_sparsity: Option<Vec<f32>>,
    /// Keys each head attends to in the sparse stage.
    pub head_budgets: Vec<usize>,
    /// Smoothed predictor loss (`None` before the first update).
    pub predictor_loss: Option<f32>,
    /// Share of the true critical mass the predicted keys cover, per head, at the last profile.
    pub critical_recall: Option<Vec<f32>>,
    /// Whether the last training step ran sparse.
    pub ran_sparse: bool,
    /// Sequence length of the last training step.
    pub seq_len: usize,
}

/// Slots of the saved schedule.
const STAGE: usize = 0;
const STEP: usize = 1;
const LOSS: usize = 2;
const SCHEDULE_LEN: usize = 4;

/// What the last training step observed and nothing saves: for [`DsvLayerStats`].
#[derive(Clone, Debug, Default)]
struct LastStep {
    recall: Option<Vec<f32>>,
    ran_sparse: bool,
    seq_len: usize,
}

/// DSV dynamic sparse attention over video tokens, a drop-in for dense self-attention.
///
/// Give it the layer input and the projected (and, if you use it, rotary-embedded) q, k, v:
/// it runs dense attention while its [`LowRankPredictor`] learns to rank keys, then, per
/// layer, switches to sparse attention over each query cube's predicted critical keys with
/// per-head budgets from the profiled sparsity. Train it with
/// [`DsvTrainer`](super::DsvTrainer) and [`DsvAttention::forward_training`]; its statistics,
/// predictor and stage are saved with the model, so a resumed run continues where it
/// stopped. Its state is plain values: clones share nothing.
#[derive(Module, Debug)]
pub struct DsvAttention {
    predictor: LowRankPredictor,
    head_sparsity: HostState,
    schedule: HostState,
    #[module(skip)]
    config: DsvAttentionConfig,
    #[module(skip)]
    last: LastStep,
}

impl DsvAttention {
    /// Attention of `q, k, v: [B, H, S, D]` (tokens frame-major on `grid`); the layer input
    /// `x: [B, S, d_model]` feeds the predictor when its [`PredictorInput`] says so. Returns
    /// `[B, H, S, D]`.
    ///
    /// Inference: the layer attends as its saved stage and budgets say, records nothing and
    /// reads nothing back from the device. Train with [`DsvAttention::forward_training`].
    pub fn forward(
        &self,
        x: Tensor<3>,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        grid: TokenGrid,
    ) -> Result<Tensor<4>, SparseAttnError> {
        self.attend(x, q, k, v, grid, None, None)
    }

    /// [`DsvAttention::forward`] for a training step: also builds the predictor loss and, on
    /// the profiling schedule, measures each head's sparsity and the predictor's recall (the
    /// only forward that reads device data back), all recorded on `tape`. The layer itself
    /// changes only when the trainer calls [`DsvAttention::advance`].
    pub fn forward_training(
        &self,
        x: Tensor<3>,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        grid: TokenGrid,
        tape: &DsvTape,
    ) -> Result<Tensor<4>, SparseAttnError> {
        self.attend(x, q, k, v, grid, Some(tape), None)
    }

    /// [`DsvAttention::forward`] (or, with `tape`, [`DsvAttention::forward_training`]) on
    /// this rank's shard of a sequence split along time over the ranks of `shards`: `x`,
    /// `q`, `k`, `v` hold this rank's tokens, frame-major on its own `grid`. Shards are
    /// contiguous runs of whole frames in rank order, all with the grid's height and width,
    /// and every shard but the last holds whole query cubes in time.
    ///
    /// The layer attends and learns as it would on the whole sequence: each query group
    /// selects from every rank's predicted keys and fetches only the remote keys it selected
    /// (dense attention runs as a ring); the predictor loss and the profile cover the sampled
    /// rows of every shard, each rank its own rows against all keys, weighted so that the
    /// ranks' losses and profiles sum to the whole sequence's. Every rank calls it together,
    /// all with a tape or none.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_sharded(
        &self,
        x: Tensor<3>,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        grid: TokenGrid,
        tape: Option<&DsvTape>,
        shards: &dyn SequenceShards,
    ) -> Result<Tensor<4>, SparseAttnError> {
        self.attend(x, q, k, v, grid, tape, Some(shards))
    }

    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        x: Tensor<3>,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        grid: TokenGrid,
        tape: Option<&DsvTape>,
        shards: Option<&dyn SequenceShards>,
    ) -> Result<Tensor<4>, SparseAttnError> {
        const F: &str = "DsvAttention::forward";
        let c = &self.config;
        let [b, h, s, d] = q.dims();
        SparseAttnError::check(
            (h, d) == (c.heads, c.head_dim) && b * s > 0,
            F,
            "q",
            format!("[B, {}, S, {}]", c.heads, c.head_dim),
            format!("{:?}", q.dims()),
        )?;
        SparseAttnError::check(
            k.dims() == q.dims(),
            F,
            "k",
            format!("{:?} like q", q.dims()),
            format!("{:?}", k.dims()),
        )?;
        SparseAttnError::check(
            v.dims() == q.dims(),
            F,
            "v",
            format!("{:?} like q", q.dims()),
            format!("{:?}", v.dims()),
        )?;
        SparseAttnError::check(
            x.dims() == [b, s, c.d_model],
            F,
            "x",
            format!("[{b}, {s}, {}]", c.d_model),
            format!("{:?}", x.dims()),
        )?;
        grid.check_len(F, s)?;
        let training = tape.is_some();
        let shape = ShardShape::new(F, grid, c.policy.query_cube, shards, s)?;
        let stride = c.policy.sample_stride.max(1);
        // Every shard's count of the sequence's sampled rows.
        let row_counts: Vec<usize> = shape
            .lens
            .iter()
            .zip(&shape.offsets)
            .map(|(&len, &offset)| sampled_rows(offset, len, stride).len())
            .collect();
        if training {
            SparseAttnError::check(
                row_counts.iter().all(|&n| n > 0),
                F,
                "policy.sample_stride",
                format!("at most the shortest shard ({} tokens)", shape.shortest()),
                stride,
            )?;
        }
        let total = shape.total();
        let gather = |t: Tensor<4>| match shards {
            Some(shards) => shards.gather_sequence(t),
            None => Ok(t),
        };

        let device = q.device();
        // The step this forward trains: the trainer counts it once the update is applied.
        let step = self.step() + 1;
        let sparsity = self.profiled_sparsity();
        let scale = 1.0 / (d as f64).sqrt();
        let budgets = self.budgets(total, sparsity);
        let go_sparse = self.runs_sparse(total);
        let profile_due =
            training && (sparsity.is_none() || step.is_multiple_of(self.profile_interval(step)));
        // This shard's sampled rows (the whole sequence's every `stride`-th) and its share
        // of all of them.
        let rows = training.then(|| {
            let own = sampled_rows(shape.offset(), s, stride);
            let share = own.len() as f64 / row_counts.iter().sum::<usize>() as f64;
            let n = own.len();
            let ids = own.iter().map(|&r| r as i64).collect();
            (
                Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), &device),
                own,
                share,
            )
        });
        // What a shard contributes to a sum over the sequence's rows.
        let weigh = |values: Vec<f32>, share: f64| match shards {
            Some(shards) => shards.sum(values.iter().map(|v| v * share as f32).collect()),
            None => Ok(values),
        };
        // Every rank's keys, without gradient, for the predictor loss and the profile.
        let all_keys = training.then(|| gather(k.clone().detach())).transpose()?;

        // The predictor runs only where its output is used: training (its loss, the profiler's
        // recall) or sparse attention. It reads a detached input, so it never sends gradient
        // into the host.
        let mut predictor_loss = None;
        let low_rank = match training || go_sparse {
            true => {
                let (q_lr, k_lr) = self.predictor.forward(x, q.clone(), k.clone());
                let reorder = Reorder::new(grid, c.policy.query_cube, &device);
                let q_lr_cubes = reorder.apply(q_lr.clone().detach());
                let k_lr_cubes = match (&rows, &all_keys) {
                    (Some((ids, _, share)), Some(all_keys)) => {
                        // The predictor's gradient returns to the ranks that own the keys.
                        let k_lr_all = gather(k_lr)?;
                        let target = q
                            .clone()
                            .detach()
                            .select(2, ids.clone())
                            .matmul(all_keys.clone().swap_dims(2, 3));
                        let predicted = q_lr
                            .select(2, ids.clone())
                            .matmul(k_lr_all.clone().swap_dims(2, 3));
                        let loss = predictor_loss_of(predicted, target);
                        predictor_loss = Some(match shards {
                            Some(_) => loss * *share,
                            None => loss,
                        });
                        shape.in_cube_order(k_lr_all.detach(), &reorder)
                    }
                    _ => shape.in_cube_order(gather(k_lr.detach())?, &reorder),
                };
                Some((q_lr_cubes, k_lr_cubes, reorder))
            }
            false => None,
        };

        let out = match (&low_rank, shards) {
            (Some((q_lr, k_lr, reorder)), _) if go_sparse => {
                let [qc, kc, vc] = [q.clone(), k.clone(), v.clone()].map(|t| reorder.apply(t));
                let out = self.sparse_by_budget(
                    qc,
                    kc,
                    vc,
                    q_lr.clone(),
                    k_lr.clone(),
                    &budgets,
                    shards,
                )?;
                reorder.undo(out)
            }
            (_, Some(shards)) => shards.dense_attention(q.clone(), k.clone(), v)?,
            (_, None) => attention(
                q.clone(),
                k.clone(),
                v,
                None,
                None,
                AttentionModuleOptions::default(),
            ),
        };

        let Some(tape) = tape else {
            return Ok(out);
        };
        let mut observation = LayerObservation {
            predictor_loss,
            ran_sparse: go_sparse,
            seq_len: total,
            ..Default::default()
        };
        if let (true, Some((q_lr, k_lr, _)), Some((ids, own, share)), Some(all_keys)) =
            (profile_due, &low_rank, rows, all_keys)
        {
            let probs = row_probabilities(q.detach().select(2, ids), all_keys, scale);
            let (critical, measured) = critical_sets(probs.clone(), c.policy.mass_threshold);
            let measured = weigh(to_host(measured), share)?;
            // Recall against the budgets this profile leads to.
            let budgets = self.budgets(total, Some(&self.smoothed_sparsity(&measured)));
            let selected = self.predicted_rows_mask(q_lr, k_lr, &budgets, grid, &own, &shape);
            let recall = to_host(critical_recall(probs, critical, selected));
            observation.recall = Some(weigh(recall, share)?);
            observation.measured_sparsity = Some(measured);
        }
        tape.record(self.state_id(), observation);
        Ok(out)
    }

    /// Runs sparse attention over runs of neighbouring heads with the same budget: a run is
    /// a narrow of the head axis and the outputs concatenate in head order, so no head is
    /// gathered or scattered (an index select's backward is a scatter-add). `k_lr` holds
    /// every shard's keys; `q`, `k`, `v` and `q_lr` this shard's.
    #[allow(clippy::too_many_arguments)]
    fn sparse_by_budget(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        q_lr: Tensor<4>,
        k_lr: Tensor<4>,
        budgets: &[usize],
        shards: Option<&dyn SequenceShards>,
    ) -> Result<Tensor<4>, SparseAttnError> {
        let group = self.config.policy.query_cube.iter().product();
        let heads = budgets.len();
        let mut outputs = Vec::new();
        let mut start = 0;
        while start < heads {
            let budget = budgets[start];
            let len = budgets[start..]
                .iter()
                .take_while(|&&b| b == budget)
                .count();
            let pick = |t: &Tensor<4>| {
                if len == heads {
                    t.clone()
                } else {
                    t.clone().narrow(1, start, len)
                }
            };
            let keys = select_critical_keys(
                pick(&q_lr),
                pick(&k_lr),
                SelectionConfig::new(group, budget),
            )?;
            outputs.push(match shards {
                Some(shards) => shards.sparse_attention(pick(&q), pick(&k), pick(&v), &keys)?,
                None => {
                    let options = SparseAttentionOptions::default();
                    sparse_attention(pick(&q), pick(&k), pick(&v), &keys, None, options)?.output
                }
            });
            start += len;
        }
        Ok(if outputs.len() == 1 {
            outputs.remove(0)
        } else {
            Tensor::cat(outputs, 1)
        })
    }

    /// `[B, H, n, S]` mask (the sequence's token order) of the keys the predictor would give
    /// this shard's sampled rows `rows` (token ids on `grid`) with these budgets; `k_lr`
    /// holds every shard's keys in cube order.
    fn predicted_rows_mask(
        &self,
        q_lr: &Tensor<4>,
        k_lr: &Tensor<4>,
        budgets: &[usize],
        grid: TokenGrid,
        rows: &[usize],
        shape: &ShardShape,
    ) -> Tensor<4, Bool> {
        let [b, h, s, _] = q_lr.dims();
        let total = shape.total();
        let cube = self.config.policy.query_cube;
        let group: usize = cube.iter().product();
        let mut position = alloc::vec![0usize; s];
        for (pos, &token) in grid.cube_order(cube).iter().enumerate() {
            position[token] = pos;
        }
        let key_order = shape.key_order();
        let mut mask = alloc::vec![true; b * h * rows.len() * total];
        for (head, &budget) in budgets.iter().enumerate() {
            let pick = |t: &Tensor<4>| t.clone().narrow(1, head, 1);
            let keys =
                select_critical_keys(pick(q_lr), pick(k_lr), SelectionConfig::new(group, budget))
                    .expect("budgets are validated");
            let ids: Vec<i64> = keys
                .indices()
                .to_data()
                .convert::<i64>()
                .try_to_vec()
                .expect("i64 ids");
            let groups = s.div_ceil(group);
            for bi in 0..b {
                for (ri, &row) in rows.iter().enumerate() {
                    let g = position[row] / group;
                    let base = ((bi * h + head) * rows.len() + ri) * total;
                    for &key_pos in &ids[(bi * groups + g) * budget..][..budget] {
                        mask[base + key_order[key_pos as usize]] = false;
                    }
                }
            }
        }
        Tensor::<4, Bool>::from_data(
            TensorData::new(mask, [b, h, rows.len(), total]),
            &q_lr.device(),
        )
        .bool_not()
    }

    /// Keys per head: `max(S·(1 − s_h), min_fraction·S)` rounded up to the kernel tile, at
    /// most `max_fraction·S`.
    fn budgets(&self, s: usize, sparsity: Option<&[f32]>) -> Vec<usize> {
        let c = &self.config;
        let floor = (c.policy.min_budget_fraction * s as f64).ceil() as usize;
        let cap = ((c.policy.max_budget_fraction * s as f64).ceil() as usize).max(1);
        (0..c.heads)
            .map(|h| {
                let dense_share = sparsity
                    .map(|v| 1.0 - f64::from(v[h]).clamp(0.0, 1.0))
                    .unwrap_or(1.0);
                let want = ((s as f64 * dense_share).ceil() as usize).max(floor).max(1);
                want.div_ceil(c.policy.budget_multiple.max(1))
                    .saturating_mul(c.policy.budget_multiple.max(1))
                    .min(cap)
                    .min(s)
            })
            .collect()
    }

    fn profile_interval(&self, step: usize) -> usize {
        let c = &self.config;
        if step > c.policy.late_after_steps {
            c.policy.profile_every_late.max(1)
        } else {
            c.policy.profile_every.max(1)
        }
    }

    /// The smoothed sparsity after folding in a new measurement.
    fn smoothed_sparsity(&self, measured: &[f32]) -> Vec<f32> {
        let m = self.config.policy.momentum as f32;
        match self.profiled_sparsity() {
            Some(old) => old
                .iter()
                .zip(measured)
                .map(|(o, x)| m * o + (1.0 - m) * x)
                .collect(),
            None => measured.to_vec(),
        }
    }

    /// Training steps counted by [`DsvAttention::advance`].
    pub fn step(&self) -> usize {
        self.schedule.values()[STEP] as usize
    }

    /// The current stage.
    pub fn stage(&self) -> DsvStage {
        if self.schedule.values()[STAGE] >= 1.0 {
            DsvStage::Sparse
        } else {
            DsvStage::Dense
        }
    }

    /// Whether a forward over `seq_len` tokens runs sparse: the sparse stage, at least
    /// `min_sparse_len` tokens and a profiled layer sparsity of at least
    /// `sparsity_threshold`.
    pub fn runs_sparse(&self, seq_len: usize) -> bool {
        let policy = &self.config.policy;
        let layer_sparsity = self
            .profiled_sparsity()
            .map(|v| v.iter().sum::<f32>() / v.len() as f32)
            .unwrap_or(0.0);
        self.stage() == DsvStage::Sparse
            && seq_len >= policy.min_sparse_len
            && f64::from(layer_sparsity) >= policy.sparsity_threshold
    }

    fn profiled_sparsity(&self) -> Option<&[f32]> {
        let v = self.head_sparsity.values();
        v.iter().all(|x| *x >= 0.0).then_some(v)
    }

    pub(crate) fn state_id(&self) -> ParamId {
        self.schedule.id()
    }

    /// Counts one training step and folds in what it observed (from
    /// [`DsvTrainer::apply`](super::DsvTrainer::apply)): the measured sparsity into the
    /// smoothed per-head sparsity, the predictor loss into the smoothed loss, switching the
    /// layer to the sparse stage once that falls under `switch_loss`.
    pub fn advance(&mut self, observed: &DsvLayerStep) {
        let m = self.config.policy.momentum as f32;
        if let Some(measured) = &observed.measured_sparsity {
            let smoothed = self.smoothed_sparsity(measured);
            self.head_sparsity.set(smoothed);
            self.last.recall = observed.critical_recall.clone();
        }
        let mut schedule = self.schedule.values().to_vec();
        schedule[STEP] += 1.0;
        if let Some(loss) = observed.predictor_loss {
            schedule[LOSS] = if schedule[LOSS].is_nan() {
                loss
            } else {
                m * schedule[LOSS] + (1.0 - m) * loss
            };
            if f64::from(schedule[LOSS]) < self.config.policy.switch_loss {
                schedule[STAGE] = 1.0;
            }
        }
        self.schedule.set(schedule);
        self.last.ran_sparse = observed.ran_sparse;
        self.last.seq_len = observed.seq_len;
    }

    /// The layer's training state that is not a weight (stage, steps seen, smoothed predictor
    /// loss and per-head sparsity) as one `[4 + heads]` vector: what the ranks of a
    /// data-parallel run copy from the rank whose share profiles and trains the predictors.
    pub fn schedule_state(&self) -> Tensor<1> {
        Tensor::cat(
            alloc::vec![self.schedule.tensor(), self.head_sparsity.tensor()],
            0,
        )
    }

    /// Sets the state [`DsvAttention::schedule_state`] returned (from this layer or its copy
    /// on another rank).
    pub fn set_schedule_state(&mut self, state: Tensor<1>) -> Result<(), SparseAttnError> {
        let heads = self.config.heads;
        SparseAttnError::check(
            state.dims() == [SCHEDULE_LEN + heads],
            "DsvAttention::set_schedule_state",
            "state",
            format!("[{}]", SCHEDULE_LEN + heads),
            format!("{:?}", state.dims()),
        )?;
        let mut values = to_host(state);
        self.head_sparsity.set(values.split_off(SCHEDULE_LEN));
        self.schedule.set(values);
        Ok(())
    }

    /// Forces a stage (e.g. to resume from a known schedule or to test the sparse path).
    pub fn set_stage(&mut self, stage: DsvStage) {
        let mut schedule = self.schedule.values().to_vec();
        schedule[STAGE] = if stage == DsvStage::Sparse { 1.0 } else { 0.0 };
        self.schedule.set(schedule);
    }

    /// Parameter ids of the saved host state (stage, step, statistics): no weights, never
    /// trained, and NaN where a statistic has no value yet.
    pub fn state_param_ids(&self) -> [ParamId; 2] {
        [self.head_sparsity.id(), self.schedule.id()]
    }

    /// Parameter ids of the predictor, which its own optimizer updates.
    pub fn predictor_param_ids(&self) -> Vec<ParamId> {
        struct Ids(Vec<ParamId>);
        impl ModuleVisitor for Ids {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(param.id);
            }
        }
        let mut ids = Ids(Vec::new());
        self.predictor.visit(&mut ids);
        ids.0
    }

    /// The predictor.
    pub fn predictor(&self) -> &LowRankPredictor {
        &self.predictor
    }

    /// The configuration.
    pub fn config(&self) -> &DsvAttentionConfig {
        &self.config
    }

    /// Statistics for logging; `ran_sparse`, `seq_len`, `head_budgets` and `critical_recall`
    /// describe the last training step.
    pub fn stats(&self) -> DsvLayerStats {
        let schedule = self.schedule.values();
        let sparsity = self.profiled_sparsity();
        let seq_len = self.last.seq_len;
        DsvLayerStats {
            stage: self.stage(),
            step: self.step(),
            head_budgets: if seq_len > 0 {
                self.budgets(seq_len, sparsity)
            } else {
                Vec::new()
            },
            head_sparsity: sparsity.map(<[f32]>::to_vec),
            predictor_loss: (!schedule[LOSS].is_nan()).then_some(schedule[LOSS]),
            critical_recall: self.last.recall.clone(),
            ran_sparse: self.last.ran_sparse,
            seq_len,
        }
    }
}

/// The token ids, within a shard of `len` tokens starting at token `offset`, of the
/// sequence's sampled rows (every `stride`-th token from its first).
fn sampled_rows(offset: usize, len: usize, stride: usize) -> Vec<usize> {
    (offset.div_ceil(stride) * stride..offset + len)
        .step_by(stride)
        .map(|r| r - offset)
        .collect()
}
