//! One call per training step that updates the host model and the DSV predictors apart.

use alloc::vec::Vec;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use super::{DsvAttention, DsvLayerStep, DsvTape};

/// A model that holds DSV attention layers.
///
/// Implement it by listing your layers, in the same order in both methods;
/// [`DsvTrainer`] uses it to collect the predictor losses and parameters and to advance
/// each layer's schedule after an update.
pub trait DsvHost {
    /// Every DSV layer of the model.
    fn dsv_layers(&self) -> Vec<&DsvAttention>;
    /// Every DSV layer of the model, mutably.
    fn dsv_layers_mut(&mut self) -> Vec<&mut DsvAttention>;
}

/// What one [`DsvTrainer::step`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct DsvStepReport {
    /// The host model's loss.
    pub loss: f32,
    /// Each layer's predictor loss this step (`None` where the layer recorded none).
    pub predictor_losses: Vec<Option<f32>>,
}

/// Trains the DSV predictors with their own optimizer beside the host model's.
///
/// Each step back-propagates `loss + Σ predictor losses` once: the predictor losses are built
/// on detached inputs and targets, so they only reach predictor parameters, and the host
/// loss never reaches them (selection is not differentiable). The gradients are then split:
/// the host optimizer gets the model's, this trainer's optimizer the predictors'.
pub struct DsvTrainer {
    optimizer: ModuleOptimizer,
    lr: f64,
}

impl DsvTrainer {
    /// AdamW for the predictors at `lr` (DSV: 1e-4 for large models; small models like 1e-3).
    pub fn new(lr: f64) -> Self {
        Self::with_optimizer(AdamWConfig::new().with_weight_decay(0.0).init(), lr)
    }

    /// Uses your own predictor optimizer.
    pub fn with_optimizer(optimizer: ModuleOptimizer, lr: f64) -> Self {
        Self { optimizer, lr }
    }

    /// The predictors' learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the predictors' learning rate (DSV lowers it in the sparse stage).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The predictor optimizer, to save or restore its state.
    pub fn optimizer(&self) -> &ModuleOptimizer {
        &self.optimizer
    }

    /// Replaces the predictor optimizer (e.g. one restored from a checkpoint).
    pub fn set_optimizer(&mut self, optimizer: ModuleOptimizer) {
        self.optimizer = optimizer;
    }

    /// One training step: backward, host update with `model_optimizer` at `lr`, predictor
    /// update, then each layer's stage schedule. `loss` comes from a forward whose DSV layers
    /// ran [`DsvAttention::forward_training`] on `tape`. [`DsvTrainer::backward`] then
    /// [`DsvTrainer::apply`].
    pub fn step<M: Module + DsvHost>(
        &mut self,
        model: M,
        loss: Tensor<1>,
        tape: DsvTape,
        model_optimizer: &mut ModuleOptimizer,
        lr: f64,
    ) -> (M, DsvStepReport) {
        let grads = Self::backward(&model, loss, tape);
        self.apply(model, grads, model_optimizer, lr)
    }

    /// Back-propagates `loss + Σ predictor losses on tape` of `model` (the model itself or a
    /// [`DsvTrainer::replica`]) and splits the gradients into the host's and the predictors'.
    /// Needs no trainer, so replicas can call it on their own threads. A replica passes an
    /// empty tape (its forward recorded nothing): the predictors learn from the model's share.
    pub fn backward<M: Module + DsvHost>(
        model: &M,
        loss: Tensor<1>,
        tape: DsvTape,
    ) -> DsvGradients {
        let host_loss = loss.clone().into_scalar::<f32>();
        Self::gradients(model, host_loss, Some(loss), GradientsParams::new(), tape)
    }

    /// [`DsvTrainer::backward`] for a step whose host loss the caller back-propagated
    /// itself, in segments (activation checkpointing): `grads` are the gradients it
    /// collected (each segment may have added the predictor losses it took with
    /// [`DsvTape::take_predictor_losses`]) and `loss` the host loss's value. The predictor
    /// losses still pending on `tape` are back-propagated here.
    pub fn backward_segmented<M: Module + DsvHost>(
        model: &M,
        loss: f32,
        grads: GradientsParams,
        tape: DsvTape,
    ) -> DsvGradients {
        Self::gradients(model, loss, None, grads, tape)
    }

    /// Back-propagates `loss` (where there is one) and the tape's pending predictor losses,
    /// adds `earlier` and splits the sum into the host's and the predictors' gradients.
    fn gradients<M: Module + DsvHost>(
        model: &M,
        host_loss: f32,
        loss: Option<Tensor<1>>,
        earlier: GradientsParams,
        tape: DsvTape,
    ) -> DsvGradients {
        let observed = tape.into_layers(&model.dsv_layers());
        let mut pending = Vec::with_capacity(observed.len());
        let mut steps = Vec::with_capacity(observed.len());
        for observation in observed {
            let Some(mut o) = observation else {
                steps.push(None);
                continue;
            };
            let loss = o.predictor_loss.take();
            let value = loss.as_ref().map(|t| t.clone().into_scalar::<f32>());
            let predictor_loss = match (o.taken_loss, value) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            steps.push(Some(DsvLayerStep {
                predictor_loss,
                measured_sparsity: o.measured_sparsity,
                critical_recall: o.recall,
                ran_sparse: o.ran_sparse,
                seq_len: o.seq_len,
            }));
            pending.extend(loss);
        }
        let predictor_losses: Vec<Option<f32>> = steps
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.predictor_loss))
            .collect();
        let mut acc = GradientsAccumulator::<M>::new();
        acc.accumulate(model, earlier);
        if let Some(total) = loss.into_iter().chain(pending).reduce(|a, b| a + b) {
            acc.accumulate(model, GradientsParams::from_grads(total.backward(), model));
        }
        let (host, predictors) = split_predictor_gradients(model, acc.grads());
        DsvGradients {
            host,
            predictors,
            loss: host_loss,
            predictor_losses,
            steps,
        }
    }

    /// Updates `model` with `grads` (one replica's, or several [`DsvGradients::merge`]d):
    /// the host with `model_optimizer` at `lr`, the predictors with this trainer's optimizer,
    /// then [`DsvAttention::advance`]s each layer that recorded this step.
    pub fn apply<M: Module + DsvHost>(
        &mut self,
        model: M,
        grads: DsvGradients,
        model_optimizer: &mut ModuleOptimizer,
        lr: f64,
    ) -> (M, DsvStepReport) {
        self.apply_with(model, grads, |model, host| {
            model_optimizer.step(lr, model, host)
        })
    }

    /// [`DsvTrainer::apply`] with your own host update (an optimizer split into shards that
    /// step in parallel, say): `host_step` gets the model and the host's gradients.
    pub fn apply_with<M: Module + DsvHost>(
        &mut self,
        model: M,
        grads: DsvGradients,
        host_step: impl FnOnce(M, GradientsParams) -> M,
    ) -> (M, DsvStepReport) {
        let DsvGradients {
            host,
            predictors,
            loss,
            predictor_losses,
            steps,
        } = grads;
        let model = host_step(model, host);
        let mut model = if predictors.is_empty() {
            model
        } else {
            self.optimizer.step(self.lr, model, predictors)
        };
        // `predictor_losses` stands: a caller may have summed it over the ranks that each
        // hold a part of a sharded layer's loss.
        for ((layer, step), loss) in model
            .dsv_layers_mut()
            .into_iter()
            .zip(steps)
            .zip(&predictor_losses)
        {
            if let Some(mut step) = step {
                step.predictor_loss = *loss;
                layer.advance(&step);
            }
        }
        (
            model,
            DsvStepReport {
                loss,
                predictor_losses,
            },
        )
    }

    /// A replica of `model` for data-parallel training: each replica takes a share of the
    /// batch on its own thread, and their [`DsvTrainer::backward`] gradients are merged into
    /// one [`DsvTrainer::apply`] on `model`.
    ///
    /// The replica has the same weights as separate autodiff leaves (so its graph, and its
    /// backward pass, are its own) and its own copy of every DSV layer's stage, step and
    /// sparsity, so it attends exactly as `model` does this step. Its predictors are frozen;
    /// run its forward without a tape (or with one you drop): profiling and predictor
    /// losses stay with `model` (the predictors learn from `model`'s share of the batch).
    pub fn replica<M: Module + DsvHost>(model: &M) -> M {
        struct Freeze(Vec<ParamId>);
        impl ModuleMapper for Freeze {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if self.0.contains(&param.id) {
                    param.set_require_grad(false)
                } else {
                    param
                }
            }
        }
        let predictors = model
            .dsv_layers()
            .iter()
            .flat_map(|l| l.predictor_param_ids())
            .collect();
        // `valid` then `train` makes fresh leaves.
        model.valid().map(&mut Freeze(predictors)).train()
    }
}

/// One replica's gradients from [`DsvTrainer::backward`].
pub struct DsvGradients {
    host: GradientsParams,
    predictors: GradientsParams,
    /// The host loss (weighted by the replica's share of the batch; summed over merged
    /// replicas).
    pub loss: f32,
    /// Each DSV layer's predictor loss, where this replica recorded one: what the layer's
    /// schedule folds in (sum it over the ranks of a sharded layer).
    pub predictor_losses: Vec<Option<f32>>,
    /// Each DSV layer's observations, where this replica recorded them.
    steps: Vec<Option<DsvLayerStep>>,
}

impl DsvGradients {
    /// Sums two replicas' gradients and host losses (weigh each replica's loss by its share
    /// of the batch); predictor losses come from whichever recorded them. `model` lists the
    /// parameters.
    pub fn merge<M: Module>(self, other: DsvGradients, model: &M) -> DsvGradients {
        let sum = |a: GradientsParams, b: GradientsParams| {
            let mut acc = GradientsAccumulator::<M>::new();
            acc.accumulate(model, a);
            acc.accumulate(model, b);
            acc.grads()
        };
        let predictor_losses = self
            .predictor_losses
            .iter()
            .zip(&other.predictor_losses)
            .map(|(a, b)| a.or(*b))
            .collect();
        let steps = self
            .steps
            .into_iter()
            .zip(other.steps)
            .map(|(a, b)| a.or(b))
            .collect();
        DsvGradients {
            host: sum(self.host, other.host),
            predictors: sum(self.predictors, other.predictors),
            loss: self.loss + other.loss,
            predictor_losses,
            steps,
        }
    }

    /// The host loss (summed over merged replicas).
    pub fn loss(&self) -> f32 {
        self.loss
    }

    /// The host model's gradients.
    pub fn host_gradients(&self) -> &GradientsParams {
        &self.host
    }

    /// The predictors' gradients.
    pub fn predictor_gradients(&self) -> &GradientsParams {
        &self.predictors
    }

    /// Applies `reduce` to the host's and the predictors' gradients as one set (one
    /// all-reduce of a data-parallel step moves both), then splits them again by `model`'s
    /// predictor parameters.
    pub fn try_map_gradients<M: Module + DsvHost, E>(
        self,
        model: &M,
        reduce: impl FnOnce(GradientsParams) -> Result<GradientsParams, E>,
    ) -> Result<DsvGradients, E> {
        let DsvGradients {
            host,
            predictors,
            loss,
            predictor_losses,
            steps,
        } = self;
        let mut acc = GradientsAccumulator::<M>::new();
        acc.accumulate(model, host);
        acc.accumulate(model, predictors);
        let (host, predictors) = split_predictor_gradients(model, reduce(acc.grads())?);
        Ok(DsvGradients {
            host,
            predictors,
            loss,
            predictor_losses,
            steps,
        })
    }
}

/// `all` split into the host's gradients and those of `model`'s DSV predictors.
fn split_predictor_gradients<M: Module + DsvHost>(
    model: &M,
    mut all: GradientsParams,
) -> (GradientsParams, GradientsParams) {
    struct Split<'a> {
        predictor_ids: Vec<ParamId>,
        all: &'a mut GradientsParams,
        predictors: GradientsParams,
    }
    impl ModuleVisitor for Split<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.predictor_ids.contains(&param.id)
                && let Some(grad) = self.all.remove::<D>(param.id)
            {
                self.predictors.register(param.id, grad);
            }
        }
    }
    let predictor_ids = model
        .dsv_layers()
        .iter()
        .flat_map(|l| l.predictor_param_ids())
        .collect();
    let mut split = Split {
        predictor_ids,
        all: &mut all,
        predictors: GradientsParams::new(),
    };
    model.visit(&mut split);
    let predictors = split.predictors;
    (all, predictors)
}
