//! What DSV layers observe during one training forward, kept by the caller.

use alloc::vec::Vec;
use std::sync::Mutex;

use burn::module::ParamId;
use burn::tensor::Tensor;

use super::DsvAttention;

/// One layer's observations from one training forward.
#[derive(Debug, Default)]
pub(crate) struct LayerObservation {
    /// Predictor loss (with gradient to the predictor only); summed over the layer's calls.
    pub predictor_loss: Option<Tensor<1>>,
    /// The part of the predictor loss already handed out for back-propagation
    /// ([`DsvTape::take_predictor_losses`]), on the host.
    pub taken_loss: Option<f32>,
    /// Measured per-head sparsity, where this forward profiled.
    pub measured_sparsity: Option<Vec<f32>>,
    /// Per-head recall of the predicted keys, where this forward profiled.
    pub recall: Option<Vec<f32>>,
    pub ran_sparse: bool,
    pub seq_len: usize,
}

/// The record of one training step's DSV forwards: each layer's predictor loss, profile and
/// choices, owned by the caller rather than by the layers.
///
/// Make one per step, pass it to [`DsvAttention::forward_training`] (through your model's
/// forward), then hand it to [`DsvTrainer::backward`](super::DsvTrainer::backward), which
/// adds the predictor losses to the loss and lets [`DsvTrainer::apply`](super::DsvTrainer::apply)
/// advance each layer's schedule. Copies of a model (replicas, EMA, validation) hold no
/// shared state, so a forward on one never changes another.
#[derive(Debug, Default)]
pub struct DsvTape {
    entries: Mutex<Vec<(ParamId, LayerObservation)>>,
}

/// What one layer reported from one training step, on the host: the input of
/// [`DsvAttention::advance`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DsvLayerStep {
    /// The layer's predictor loss this step.
    pub predictor_loss: Option<f32>,
    /// Measured fraction of non-critical keys per head, when the step profiled.
    pub measured_sparsity: Option<Vec<f32>>,
    /// Share of the true critical mass the predicted keys covered, per head, when the step
    /// profiled.
    pub critical_recall: Option<Vec<f32>>,
    /// Whether the layer ran sparse.
    pub ran_sparse: bool,
    /// Sequence length the layer saw.
    pub seq_len: usize,
}

impl DsvTape {
    /// An empty tape.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no layer recorded anything.
    pub fn is_empty(&self) -> bool {
        self.entries.lock().expect("DSV tape lock").is_empty()
    }

    pub(crate) fn record(&self, layer: ParamId, observation: LayerObservation) {
        let mut entries = self.entries.lock().expect("DSV tape lock");
        match entries.iter_mut().find(|(id, _)| *id == layer) {
            // A layer called more than once in a step (several clips): losses add up, the
            // latest profile and choice stand.
            Some((_, seen)) => {
                seen.predictor_loss = match (seen.predictor_loss.take(), observation.predictor_loss)
                {
                    (Some(a), Some(b)) => Some(a + b),
                    (a, b) => a.or(b),
                };
                if observation.measured_sparsity.is_some() {
                    seen.measured_sparsity = observation.measured_sparsity;
                    seen.recall = observation.recall;
                }
                seen.ran_sparse = observation.ran_sparse;
                seen.seq_len = observation.seq_len;
            }
            None => entries.push((layer, observation)),
        }
    }

    /// Hands out the predictor losses recorded so far, summed, for the caller to
    /// back-propagate now, and keeps only their values for the step's report: a forward run
    /// in segments (activation checkpointing) back-propagates each segment's predictor losses
    /// with it, so their graphs are freed with the segment's. `None` when none is pending.
    /// [`DsvTrainer::backward_segmented`](super::DsvTrainer::backward_segmented) then
    /// back-propagates only what is left.
    pub fn take_predictor_losses(&self) -> Option<Tensor<1>> {
        let mut entries = self.entries.lock().expect("DSV tape lock");
        entries
            .iter_mut()
            .filter_map(|(_, seen)| {
                let loss = seen.predictor_loss.take()?;
                let value = loss.clone().into_scalar::<f32>();
                seen.taken_loss = Some(seen.taken_loss.unwrap_or(0.0) + value);
                Some(loss)
            })
            .reduce(|a, b| a + b)
    }

    /// The observations of `layers`, in their order (`None` for a layer that recorded
    /// nothing).
    pub(crate) fn into_layers(self, layers: &[&DsvAttention]) -> Vec<Option<LayerObservation>> {
        let mut entries = self.entries.into_inner().expect("DSV tape lock");
        layers
            .iter()
            .map(|layer| {
                let at = entries.iter().position(|(id, _)| *id == layer.state_id())?;
                Some(entries.swap_remove(at).1)
            })
            .collect()
    }
}
