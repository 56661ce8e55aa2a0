//! The held-out flow-matching loss of a trainer's live and EMA weights.

use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use burn_sparse_attn::SparseAttnError;

use super::Trainer;
use crate::DitError;
use crate::data::SplitMix;
use crate::flow::{add_noise, velocity_target};
use crate::{ForwardContext, VideoDit, VideoDitInput};

impl Trainer {
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
    ) -> Result<f32, DitError> {
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
    ) -> Result<f32, DitError> {
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
    ) -> Result<f32, DitError> {
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
            let input = VideoDitInput::new(x_t, sigma.clone(), model.embed_labels(batch.labels));
            let v = model.forward(input, &ForwardContext::whole())?;
            total += (v - velocity_target(batch.videos, noise))
                .square()
                .mean()
                .into_scalar::<f32>();
        }
        Ok(total / clips as f32)
    }
}
