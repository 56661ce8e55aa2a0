//! One call per training step that updates the host model and the DSV predictors apart.

use alloc::vec::Vec;

use burn::module::{Module, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;

use super::DsvAttention;

/// A model that holds DSV attention layers.
///
/// Implement it by listing your layers; [`DsvTrainer::step`] uses it to collect the
/// predictor losses and parameters.
pub trait DsvHost {
    /// Every DSV layer of the model.
    fn dsv_layers(&self) -> Vec<&DsvAttention>;
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
    /// update, then each layer's stage schedule.
    pub fn step<M: Module + DsvHost>(
        &mut self,
        model: M,
        loss: Tensor<1>,
        model_optimizer: &mut ModuleOptimizer,
        lr: f64,
    ) -> (M, DsvStepReport) {
        let pending: Vec<Option<Tensor<1>>> = model.dsv_layers().iter().map(|l| l.take_predictor_loss()).collect();
        let predictor_losses: Vec<Option<f32>> = pending.iter().map(|l| l.as_ref().map(|t| t.clone().into_scalar::<f32>())).collect();
        let host_loss = loss.clone().into_scalar::<f32>();
        let total = pending.into_iter().flatten().fold(loss, |acc, l| acc + l);

        let mut grads = total.backward();
        let predictor_ids: Vec<ParamId> = model.dsv_layers().iter().flat_map(|l| l.predictor_param_ids()).collect();
        let predictor_grads = GradientsParams::from_params(&mut grads, &model, &predictor_ids);
        let model_grads = GradientsParams::from_grads(grads, &model);
        let model = model_optimizer.step(lr, model, model_grads);
        let model = if predictor_grads.is_empty() { model } else { self.optimizer.step(self.lr, model, predictor_grads) };

        for (layer, loss) in model.dsv_layers().iter().zip(&predictor_losses) {
            if let Some(loss) = loss {
                layer.record_predictor_loss(*loss);
            }
        }
        (model, DsvStepReport { loss: host_loss, predictor_losses })
    }
}
