//! Per-block activation recomputation ("activation checkpointing"): a training backward
//! that keeps only each block's input and recomputes the block's activations when its
//! gradient is due.
//!
//! Burn 0.22 checkpoints per tensor op (`Device::gradient_checkpointing`): it recomputes
//! memory-bound ops and keeps compute-bound ones, so the attention scores and matmul
//! inputs of every block stay alive, and it cannot name a block as the unit to recompute.
//! This is the segment-wise alternative, with Burn's autodiff inside each segment:
//!
//! 1. the embedding runs on the autodiff device, its graph kept (it is small);
//! 2. the blocks run without autodiff, keeping each block's input tokens;
//! 3. the head runs from the last tokens as a leaf, and `loss` is back-propagated;
//! 4. block by block in reverse, the block runs again on the autodiff device from its saved
//!    input (and the time and conditioning tensors) as fresh leaves, and `Σ out·∂L/∂out` is
//!    back-propagated, giving the gradients of its parameters and inputs;
//! 5. the embedding's graph is back-propagated once with every gradient its outputs
//!    received.
//!
//! Peak memory is the saved tokens plus one block's activations instead of every block's.
//! The gradients are those of the plain backward: each segment recomputes exactly the
//! forward's values (DSV layers attend as they did; their predictor losses are
//! back-propagated with the segment that records them).

use std::cell::OnceCell;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;
use burn_sparse_attn::dsv::DsvTape;

use super::block::{ClipContext, leaf};
use super::input::{ForwardContext, VideoDitInput};
use super::placement::{ClipInputs, join_clips};
use super::self_attention::AttentionMode;
use super::{Embedded, HeadInput, VideoDit, accumulate, add_clips};
use crate::DitError;

/// What [`VideoDit::checkpointed_gradients`] returns.
pub struct CheckpointedStep {
    /// The loss's value.
    pub loss: f32,
    /// The gradients of the model's parameters (DSV predictors included where the tape
    /// recorded predictor losses).
    pub gradients: GradientsParams,
}

impl VideoDit {
    /// The gradients of `loss(velocity)` where `velocity` is
    /// [`VideoDit::forward`]`(input, ctx)`, computed with per-block activation
    /// recomputation: equal to `loss.backward()` on the plain forward, with the activations
    /// of one block alive at a time instead of all. The model must live on an autodiff
    /// device; `ctx` records no sampling accelerators or features. A DSV layer's predictor
    /// losses are back-propagated here and taken off the context's tape
    /// ([`DsvTape::take_predictor_losses`]); hand the tape and the result to
    /// [`DsvTrainer::backward_segmented`](burn_sparse_attn::dsv::DsvTrainer::backward_segmented).
    /// With [`ForwardContext::sequence_shard`] the gradients are this rank's part: summed
    /// over the ranks they are the gradients of the sum of the ranks' losses.
    pub fn checkpointed_gradients(
        &self,
        input: VideoDitInput,
        ctx: &ForwardContext,
        loss: impl FnOnce(Tensor<5>) -> Tensor<1>,
    ) -> Result<CheckpointedStep, DitError> {
        const F: &str = "VideoDit::checkpointed_gradients";
        let device = input.x.device();
        SparseAttnError::check(
            device.is_autodiff()
                && self
                    .devices()
                    .first()
                    .is_some_and(|device| device.is_autodiff()),
            F,
            "self",
            "a model and inputs on an autodiff device",
            format!("inputs on {device:?}"),
        )?;
        SparseAttnError::check(
            ctx.sampling.is_none() && ctx.features.is_none(),
            F,
            "ctx",
            "a context without sampling accelerators or feature records",
            "a sampling state or a feature record",
        )?;
        let alone = OnceCell::new();
        let (clips, span) = self.place(F, input, ctx.layout, &alone)?;
        let mode = AttentionMode {
            span: &span,
            tape: ctx.tape,
        };
        self.run_checkpointed(clips, mode, |velocities| loss(join_clips(velocities)))
    }

    /// Steps 1–5 of the module documentation over `clips`.
    fn run_checkpointed(
        &self,
        clips: ClipInputs,
        mode: AttentionMode,
        loss: impl FnOnce(Vec<Tensor<5>>) -> Tensor<1>,
    ) -> Result<CheckpointedStep, DitError> {
        let mut gradients = Accumulator::default();
        // 1. The embedding, with its graph.
        let Embedded {
            tokens: embedded,
            contexts,
            head,
        } = self.embed(clips);
        let constant_contexts: Vec<ClipContext> =
            contexts.iter().map(ClipContext::without_autodiff).collect();

        // 2. The blocks without autodiff; `saved[i]` is block i's input, `saved[depth]` the
        // last block's output.
        let mut saved: Vec<Vec<Tensor<3>>> = vec![
            embedded
                .iter()
                .map(|t| t.clone().without_autodiff())
                .collect(),
        ];
        let untaped = mode.without_tape();
        for (i, block) in self.blocks().iter().enumerate() {
            let frozen = block.valid();
            let means = self.aggregate(&saved, i);
            let out = frozen.forward(
                saved[i].clone(),
                &constant_contexts,
                untaped,
                means.as_deref(),
                None,
            )?;
            saved.push(out);
        }

        // 3. The head, from leaves.
        let top: Vec<Tensor<3>> = saved
            .pop()
            .expect("the last tokens")
            .iter()
            .map(leaf)
            .collect();
        let head_leaves: Vec<HeadInput> = head
            .iter()
            .map(|h| HeadInput {
                modulation: leaf(&h.modulation),
                grid: h.grid,
                input: h.input.clone(),
            })
            .collect();
        let loss = loss(self.head(top.clone(), head_leaves.clone()));
        let loss_value = loss.clone().into_scalar::<f32>();
        let mut grads = loss.backward();
        let mut token_grads = grads_of(&top, &mut grads);
        let head_grads = grads_of(
            &head_leaves
                .iter()
                .map(|h| h.modulation.clone())
                .collect::<Vec<_>>(),
            &mut grads,
        );
        gradients.add(self, grads);

        // 4. Each block again, in reverse, with autodiff.
        let mut time_grads: Option<Vec<Tensor<3>>> = None;
        let mut cond_grads: Option<Vec<Tensor<3>>> = None;
        // Σ ∂L/∂(sum of outputs) over the later blocks that read the aggregate.
        let mut aggregate_grads: Option<Vec<Tensor<3>>> = None;
        for (i, block) in self.blocks().iter().enumerate().rev() {
            let input: Vec<Tensor<3>> = saved[i].iter().map(leaf).collect();
            let context: Vec<ClipContext> =
                constant_contexts.iter().map(ClipContext::leaves).collect();
            let means: Option<Vec<Tensor<3>>> = self
                .aggregate(&saved, i)
                .map(|m| m.iter().map(leaf).collect());
            let out = block.forward(input.clone(), &context, mode, means.as_deref(), None)?;
            // ∂L/∂out: through the next block's input, and through every later aggregate.
            let out_grads = match &aggregate_grads {
                Some(extra) => add_clips(token_grads, extra.clone()),
                None => token_grads,
            };
            let mut objective = inner_product(&out, &out_grads);
            if let Some(predictor) = mode.tape.and_then(DsvTape::take_predictor_losses) {
                objective = objective + predictor;
            }
            let mut grads = objective.backward();
            token_grads = grads_of(&input, &mut grads);
            accumulate(
                &mut time_grads,
                grads_of(
                    &context.iter().map(|c| c.time.clone()).collect::<Vec<_>>(),
                    &mut grads,
                ),
            );
            accumulate(
                &mut cond_grads,
                grads_of(
                    &context.iter().map(|c| c.cond.clone()).collect::<Vec<_>>(),
                    &mut grads,
                ),
            );
            if let Some(means) = &means {
                // means = sum / i, so the sum's gradient is the mean's over i.
                let sum_grads: Vec<Tensor<3>> = grads_of(means, &mut grads)
                    .into_iter()
                    .map(|g| g / i as f64)
                    .collect();
                accumulate(&mut aggregate_grads, sum_grads);
            }
            gradients.add(self, grads);
        }

        // 5. The embedding's graph, once, with all its outputs' gradients.
        let mut outputs = Vec::new();
        let mut output_grads = Vec::new();
        let time_grads = time_grads.expect("the model has blocks");
        let cond_grads = cond_grads.expect("the model has blocks");
        for (((tokens, g), context), (time_g, cond_g)) in embedded
            .into_iter()
            .zip(token_grads)
            .zip(contexts)
            .zip(time_grads.into_iter().zip(cond_grads))
        {
            outputs.extend([tokens, context.time, context.cond]);
            output_grads.extend([g, time_g, cond_g]);
        }
        for (h, g) in head.into_iter().zip(head_grads) {
            outputs.push(h.modulation);
            output_grads.push(g);
        }
        gradients.add(self, inner_product(&outputs, &output_grads).backward());
        Ok(CheckpointedStep {
            loss: loss_value,
            gradients: gradients.0.grads(),
        })
    }

    /// The mean output of the blocks before block `i` (`saved[1..=i]`) where feature
    /// aggregation feeds it, summed in the order [`VideoDit`]'s forward sums them.
    fn aggregate(&self, saved: &[Vec<Tensor<3>>], i: usize) -> Option<Vec<Tensor<3>>> {
        if !self.config().feature_aggregation || i == 0 {
            return None;
        }
        let mut sums = None;
        for outputs in &saved[1..=i] {
            accumulate(&mut sums, outputs.clone());
        }
        Some(sums?.into_iter().map(|s| s / i as f64).collect())
    }
}

/// Parameter gradients summed over the segments' backward passes.
#[derive(Default)]
struct Accumulator(GradientsAccumulator<VideoDit>);

impl Accumulator {
    fn add(&mut self, model: &VideoDit, grads: burn::tensor::Gradients) {
        self.0
            .accumulate(model, GradientsParams::from_grads(grads, model));
    }
}

/// `Σ_i sum(a_i · b_i)` with the `b_i` as constants: its gradient with respect to each `a_i`
/// is `b_i`.
fn inner_product<const D: usize>(a: &[Tensor<D>], b: &[Tensor<D>]) -> Tensor<1> {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a.clone() * b.clone().autodiff()).sum())
        .reduce(|x, y| x + y)
        .expect("at least one tensor")
}

/// The gradients of `leaves` (zeros where one received none).
fn grads_of<const D: usize>(
    leaves: &[Tensor<D>],
    grads: &mut burn::tensor::Gradients,
) -> Vec<Tensor<D>> {
    leaves
        .iter()
        .map(|t| {
            t.grad_remove(grads)
                .unwrap_or_else(|| t.clone().without_autodiff().zeros_like())
        })
        .collect()
}
