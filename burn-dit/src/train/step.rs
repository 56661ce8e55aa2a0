//! The parts of one training step before the update: the batch every rank draws alike, and
//! the loss and gradients of one share of it.

use std::ops::Range;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_ctx_parallel::Communicator;
use burn_sparse_attn::dsv::{DsvGradients, DsvTape, DsvTrainer};

use super::{SELF_CONDITION_RATE, TrainConfig};
use crate::DitError;
use crate::data::{ClipBatcher, ClipSet, SplitMix};
use crate::flow::{add_noise, velocity_target};
use crate::{ForwardContext, VideoDit, VideoDitInput};

/// One step's batch, the same on every rank.
pub(super) struct StepBatch {
    /// `[B, C, T, H, W]` noisy clips.
    pub x_t: Tensor<5>,
    /// `[B]` noise levels.
    pub sigma: Tensor<1>,
    /// `[B, M]` label ids, the dropped ones null.
    pub labels: Tensor<2, Int>,
    /// The velocity the model should predict.
    pub target: Tensor<5>,
    /// The model first estimates the clean video without gradient (and without counting a
    /// DSV step), then refines with the estimate in view.
    pub self_condition: bool,
}

impl StepBatch {
    /// The batch of step `step` (0-based): everything random comes from a generator seeded
    /// by `(seed, step)`, so a resumed run repeats the same steps.
    pub fn draw(
        config: &TrainConfig,
        step: usize,
        data: &ClipSet,
        batcher: &ClipBatcher,
        device: &Device,
    ) -> Self {
        let b = config.batch_size;
        let mut rng = SplitMix(config.seed ^ (step as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        let items = (0..b)
            .map(|_| {
                data.get(rng.below(config.dataset_size))
                    .expect("index below len")
            })
            .collect();
        let batch = batcher.batch(items, device);
        // Classifier-free guidance: drop the whole conditioning of some clips to the null id.
        let keep: Vec<f32> = (0..b)
            .map(|_| {
                if (rng.unit() as f64) < config.cond_dropout {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let keep = Tensor::<1>::from_data(TensorData::new(keep, [b]), device)
            .int()
            .reshape([b, 1]);
        let labels = batch.labels * keep;
        let x0 = batch.videos;
        let noise = rng.normal_tensor(x0.dims(), device);
        let sigma = config.sigma.sample(b, &mut rng, device);
        let x_t = add_noise(x0.clone(), noise.clone(), sigma.clone());
        let target = velocity_target(x0, noise);
        let self_condition =
            config.model.self_condition && (rng.unit() as f64) < SELF_CONDITION_RATE;
        Self {
            x_t,
            sigma,
            labels,
            target,
            self_condition,
        }
    }

    /// Clips in the batch.
    pub fn size(&self) -> usize {
        self.sigma.dims()[0]
    }
}

/// How one share's gradients are computed: this rank's frames of a sequence-parallel group,
/// and whether block activations are recomputed in the backward.
#[derive(Clone, Copy)]
pub(super) struct ShareRun<'a> {
    pub sequence: Option<(&'a Communicator, &'a Range<usize>)>,
    pub recompute: bool,
}

impl ShareRun<'_> {
    /// The loss and gradients of `model` on clips `start..start + n` of `batch`, recording
    /// DSV's observations on `tape` where given; the loss is the share's part of the batch
    /// mean (a shard's part of it when sequence-parallel), so the shares' losses sum to it.
    pub fn gradients(
        self,
        model: &VideoDit,
        batch: &StepBatch,
        (start, n): (usize, usize),
        tape: Option<DsvTape>,
    ) -> Result<DsvGradients, DitError> {
        let b = batch.size();
        let frames = |t: Tensor<5>| match self.sequence {
            Some((_, frames)) => t.narrow(2, frames.start, frames.len()),
            None => t,
        };
        let ctx = match self.sequence {
            Some((comm, _)) => ForwardContext::sequence_shard(comm),
            None => ForwardContext::whole(),
        };
        let x_t = frames(batch.x_t.clone().narrow(0, start, n));
        let sigma = batch.sigma.clone().narrow(0, start, n);
        let cond = model.embed_labels(batch.labels.clone().narrow(0, start, n));
        let estimate = match batch.self_condition {
            true => {
                let frozen = model.clone().valid();
                let input = VideoDitInput::new(
                    x_t.clone().inner(),
                    sigma.clone().inner(),
                    cond.clone().inner(),
                );
                let v = frozen.forward(input, &ctx)?;
                let x_t = x_t.clone().inner();
                Some((x_t - v * sigma.clone().inner().reshape([n, 1, 1, 1, 1])).autodiff())
            }
            false => None,
        };
        let target = frames(batch.target.clone().narrow(0, start, n));
        // Squared errors per sample of the whole video.
        let per_sample = batch.target.dims()[1..].iter().product::<usize>();
        let loss = |pred: Tensor<5>| match self.sequence {
            Some(_) => (pred - target).square().sum() / (b * per_sample) as f64,
            None => (pred - target).square().mean() * (n as f64 / b as f64),
        };
        let input = VideoDitInput::new(x_t, sigma, cond).with_estimate(estimate);
        let ctx = ctx.with_tape(tape.as_ref());
        if self.recompute {
            let step = model.checkpointed_gradients(input, &ctx, loss)?;
            return Ok(DsvTrainer::backward_segmented(
                model,
                step.loss,
                step.gradients,
                tape.unwrap_or_default(),
            ));
        }
        let pred = model.forward(input, &ctx)?;
        Ok(DsvTrainer::backward(
            model,
            loss(pred),
            tape.unwrap_or_default(),
        ))
    }
}
