//! Sampling: the Euler integrator of the flow-matching ODE with classifier-free guidance,
//! over any velocity model, and its use with [`VideoDit`] for one clip or a long video.

use burn::config::Config;
use burn::tensor::{Distribution, Tensor, TensorData};
use burn_ctx_parallel::Communicator;
use burn_sparse_attn::SparseAttnError;

use super::SamplingState;
use crate::DitError;
use crate::data::SplitMix;
use crate::flow::shift_sigma;
use crate::model::split_frames;
use crate::sample::faster_cache::{CfgDifference, FasterCacheConfig};
use crate::sample::free_init::FreeInitConfig;
use crate::sample::online_sparse::OnlineSparseConfig;
use crate::{ClipGroup, Conditioning, ForwardContext, VideoDit, VideoDitInput};

/// Settings of [`sample_euler`].
#[derive(Config, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Euler steps from σ = 1 to 0.
    #[config(default = 24)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 = no guidance).
    #[config(default = 3.0)]
    pub guidance: f64,
    /// Timestep shift.
    #[config(default = 3.0)]
    pub shift: f64,
    /// Guidance applies only to steps starting at σ ≤ this (1 = every step). Guidance at
    /// the highest noise levels pushes every region towards the prompt at once, before the
    /// sample has decided where its object is (Kynkäänniemi et al. 2024, "Applying guidance
    /// in a limited interval").
    #[config(default = 1.0)]
    pub guidance_max_sigma: f64,
    /// Fraction η ∈ [0, 1] of fresh noise per step: each step re-noises its clean estimate
    /// `x̂0 = x − σ·v` to σ' with `√(1 − η²)·ε̂ + η·z` (`ε̂ = x + (1 − σ)·v`, `z` drawn from
    /// the device's generator). 0 is the deterministic Euler step; 1 is ancestral sampling.
    #[config(default = 0.0)]
    pub stochasticity: f64,
    /// FasterCache: attention outputs and the guidance branches' difference reused across
    /// steps ([`FasterCacheConfig`]); `None` samples every step in full.
    pub faster_cache: Option<FasterCacheConfig>,
    /// FreeInit: sample several times, each pass after the first starting from the last
    /// result's low frequencies ([`FreeInitConfig`]); `None` samples once.
    pub free_init: Option<FreeInitConfig>,
    /// Online sparse attention: each query cube's critical keys searched from the full
    /// attention at a few steps and reused between them, in place of the blocks' own
    /// attention ([`OnlineSparseConfig`]); `None` attends as the model was trained. With
    /// dual-scope attention it searches each clip's keys under the window mask and the scope
    /// biases, and again after the favoured scope switches.
    pub online_sparse: Option<OnlineSparseConfig>,
}

impl SamplerConfig {
    /// Checks every field's range, naming `function` in the error.
    pub fn check(&self, function: &'static str) -> Result<(), SparseAttnError> {
        SparseAttnError::check(self.steps >= 1, function, "config.steps", "≥ 1", self.steps)?;
        SparseAttnError::check(
            self.shift > 0.0 && self.shift.is_finite(),
            function,
            "config.shift",
            "a finite number > 0",
            self.shift,
        )?;
        SparseAttnError::check(
            self.guidance.is_finite() && self.guidance >= 0.0,
            function,
            "config.guidance",
            "a finite scale ≥ 0 (0: unconditional, 1: conditional only, above 1: guided)",
            self.guidance,
        )?;
        SparseAttnError::check(
            self.guidance_max_sigma >= 0.0,
            function,
            "config.guidance_max_sigma",
            "≥ 0",
            self.guidance_max_sigma,
        )?;
        SparseAttnError::check(
            (0.0..=1.0).contains(&self.stochasticity),
            function,
            "config.stochasticity",
            "in [0, 1]",
            self.stochasticity,
        )?;
        if let Some(cache) = &self.faster_cache {
            cache.check(function)?;
        }
        if let Some(free_init) = &self.free_init {
            free_init.check(function)?;
        }
        match &self.online_sparse {
            Some(online) => Ok(online.check(function)?),
            None => Ok(()),
        }
    }

    /// The accelerators' state of one sampling run of `model` (see
    /// [`sample_euler_with_state`]).
    pub fn sampling_state(&self, model: &VideoDit) -> SamplingState {
        SamplingState::new(
            model.blocks().len(),
            self.steps,
            self.faster_cache,
            self.online_sparse,
        )
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Generates videos from `noise: [B, C, T, H, W]` with conditioning `cond` and, for guidance,
/// the null conditioning `uncond` (both `[B, M, cond_dim]`). The model should not track
/// gradients (use `model.valid()`).
pub fn sample_euler(
    model: &VideoDit,
    noise: Tensor<5>,
    cond: Tensor<3>,
    uncond: Tensor<3>,
    config: SamplerConfig,
) -> Result<Tensor<5>, DitError> {
    let state = config.sampling_state(model);
    sample_euler_with_state(model, noise, cond, uncond, config, &state)
}

/// [`sample_euler`] with the accelerators' state made by the caller
/// ([`SamplerConfig::sampling_state`], fresh for each run), which can then read what they
/// did (e.g. [`OnlineSparse::layer_stats`](crate::sample::online_sparse::OnlineSparse::layer_stats)).
pub fn sample_euler_with_state(
    model: &VideoDit,
    noise: Tensor<5>,
    cond: Tensor<3>,
    uncond: Tensor<3>,
    config: SamplerConfig,
    state: &SamplingState,
) -> Result<Tensor<5>, DitError> {
    let device = noise.device();
    let velocity = |mut x: Vec<Tensor<5>>,
                    sigma: f64,
                    mut cond: Vec<Tensor<3>>,
                    estimate: Option<Vec<Tensor<5>>>| {
        let b = x[0].dims()[0];
        let s = Tensor::<1>::from_data(TensorData::new(vec![sigma as f32; b], [b]), &device);
        state.begin_step();
        let input = VideoDitInput::new(x.remove(0), s, cond.remove(0))
            .with_estimate(estimate.map(|mut e| e.remove(0)));
        model
            .forward(input, &ForwardContext::whole().with_sampling(state))
            .map(|v| vec![v])
    };
    sample_passes(
        vec![noise],
        vec![cond],
        vec![uncond],
        config,
        model.config().self_condition,
        velocity,
        PassHooks {
            reinitialise: reinitialise_each_clip,
            begin: |steps| state.begin_pass(steps),
        },
    )
    .map(|mut x| x.remove(0))
}

/// [`sample_euler`] for a long video cut into clips over a group of ranks (see
/// [`ForwardContext::clips`](crate::ForwardContext::clips)), called by every rank: `noise[i]`,
/// `cond[i]` and `uncond[i]` belong to this rank's `i`-th clip. Returns this rank's clips of
/// the video. FreeInit filters the whole video (every rank gathers it between passes); online
/// sparse attention searches each clip's keys under the dual-scope mask and biases.
pub fn sample_euler_clips(
    model: &VideoDit,
    group: ClipGroup,
    noise: Vec<Tensor<5>>,
    cond: Vec<Tensor<3>>,
    uncond: Vec<Tensor<3>>,
    config: SamplerConfig,
) -> Result<Vec<Tensor<5>>, DitError> {
    let state = config.sampling_state(model);
    sample_euler_clips_with_state(model, group, noise, cond, uncond, config, &state)
}

/// [`sample_euler_clips`] with the accelerators' state made by the caller
/// ([`SamplerConfig::sampling_state`], fresh for each run and rank), which then holds what
/// they did on this rank's clips.
pub fn sample_euler_clips_with_state(
    model: &VideoDit,
    group: ClipGroup,
    noise: Vec<Tensor<5>>,
    cond: Vec<Tensor<3>>,
    uncond: Vec<Tensor<3>>,
    config: SamplerConfig,
    state: &SamplingState,
) -> Result<Vec<Tensor<5>>, DitError> {
    let ClipGroup { comm, layout, .. } = group;
    let frames: Vec<usize> = layout
        .clips_of(comm.rank())
        .map(|i| layout.frames(i))
        .collect();
    let velocity =
        |x: Vec<Tensor<5>>, sigma: f64, cond: Vec<Tensor<3>>, estimates: Option<Vec<Tensor<5>>>| {
            // Every rank holds at least one clip (`ClipLayout::new`).
            let b = x[0].dims()[0];
            let sigmas = vec![sigma; b];
            let s =
                Tensor::<1>::from_data(TensorData::new(vec![sigma as f32; b], [b]), &x[0].device());
            state.begin_step();
            let input = VideoDitInput {
                x: Tensor::cat(x, 2),
                sigma: s,
                cond: Conditioning::PerClip(cond),
                estimate: estimates.map(|e| Tensor::cat(e, 2)),
            };
            let ctx = ForwardContext::clips(group, &sigmas).with_sampling(state);
            let velocity = model.forward(input, &ctx)?;
            Ok(split_frames(velocity, &frames))
        };
    // FreeInit filters the whole video: its initial noise is gathered once.
    let whole_noise = match config.free_init {
        Some(_) => Some(comm.all_gather(Tensor::cat(noise.clone(), 2), 2)?),
        None => None,
    };
    let first_frame = layout.frame_offset(layout.clips_of(comm.rank()).start);
    let reinitialise =
        |free_init: &FreeInitConfig, pass: usize, clean: Vec<Tensor<5>>, _: &[Tensor<5>]| {
            let noise = whole_noise.clone().expect("gathered when FreeInit is on");
            whole_video_reinitialise(comm, first_frame, free_init, pass, clean, noise)
        };
    sample_passes(
        noise,
        cond,
        uncond,
        config,
        model.config().self_condition,
        velocity,
        PassHooks {
            reinitialise,
            begin: |steps| state.begin_pass(steps),
        },
    )
}

/// FreeInit's re-initialisation of a video cut into clips over the ranks of `comm`: the
/// filter needs the whole video, so every rank gathers this pass's result (`clean`, this
/// rank's clips, the first at video frame `first_frame`), re-initialises it with the whole
/// video's initial `noise` and keeps its own clips. The fresh noise comes from a host
/// generator seeded by the video's own noise and the pass, so every rank draws the same
/// whatever the ranks are (threads sharing one device generator would draw in any order).
fn whole_video_reinitialise(
    comm: &Communicator,
    first_frame: usize,
    free_init: &FreeInitConfig,
    pass: usize,
    clean: Vec<Tensor<5>>,
    noise: Tensor<5>,
) -> Result<Vec<Tensor<5>>, DitError> {
    let frames: Vec<usize> = clean.iter().map(|c| c.dims()[2]).collect();
    let clean = comm.all_gather(Tensor::cat(clean, 2), 2)?;
    let first: f32 = noise
        .clone()
        .slice([0..1, 0..1, 0..1, 0..1, 0..1])
        .into_scalar();
    let mut rng = SplitMix(u64::from(first.to_bits()) ^ ((pass as u64 + 1) << 40));
    let fresh = rng.normal_tensor(noise.dims(), &noise.device());
    let start = free_init.reinitialise(clean, noise, fresh)?;
    let mut offset = first_frame;
    Ok(frames
        .into_iter()
        .map(|f| {
            let clip = start.clone().narrow(2, offset, f);
            offset += f;
            clip
        })
        .collect())
}

/// A velocity model for [`sample_with_velocity`]: `velocity(x, σ, cond, estimates)`
/// predicts the velocity of every clip `x[i]` at noise level σ with conditioning `cond[i]`
/// (and, for a self-conditioning model, its previous clean estimate). Every such closure is
/// one.
pub trait Velocity:
    Fn(Vec<Tensor<5>>, f64, Vec<Tensor<3>>, Option<Vec<Tensor<5>>>) -> Result<Vec<Tensor<5>>, DitError>
{
}

impl<F> Velocity for F where
    F: Fn(
        Vec<Tensor<5>>,
        f64,
        Vec<Tensor<3>>,
        Option<Vec<Tensor<5>>>,
    ) -> Result<Vec<Tensor<5>>, DitError>
{
}

/// The Euler sampler with classifier-free guidance over any velocity model: `noise[i]`,
/// `cond[i]` and `uncond[i]` are clip `i`'s; `velocity(x, σ, cond, estimates)` predicts
/// every clip at once. With guidance both branches go through one call at twice the batch.
/// With `refine` (a self-conditioning model) each branch gets its own clean estimate
/// `x − σ·v` of the step before, unguided: the kind of estimate the model was trained on.
/// With [`SamplerConfig::faster_cache`], guided steps between CFG-Cache's full steps call
/// `velocity` with the conditional branch alone.
/// [`sample_euler`] and [`sample_euler_clips`] call it with a [`VideoDit`].
pub fn sample_with_velocity(
    noise: Vec<Tensor<5>>,
    cond: Vec<Tensor<3>>,
    uncond: Vec<Tensor<3>>,
    config: SamplerConfig,
    refine: bool,
    velocity: impl Velocity,
) -> Result<Vec<Tensor<5>>, DitError> {
    sample_passes(
        noise,
        cond,
        uncond,
        config,
        refine,
        velocity,
        PassHooks {
            reinitialise: reinitialise_each_clip,
            begin: |_| {},
        },
    )
}

/// FreeInit's re-initialisation of independent clips, with fresh noise from the device's
/// generator.
fn reinitialise_each_clip(
    free_init: &FreeInitConfig,
    _pass: usize,
    clean: Vec<Tensor<5>>,
    noise: &[Tensor<5>],
) -> Result<Vec<Tensor<5>>, DitError> {
    clean
        .into_iter()
        .zip(noise)
        .map(|(clean, noise)| {
            let fresh = Tensor::random(
                noise.shape(),
                Distribution::Normal(0.0, 1.0),
                &noise.device(),
            );
            free_init.reinitialise(clean, noise.clone(), fresh)
        })
        .collect()
}

/// What a sampler does at FreeInit's passes: `reinitialise(config, pass, results, initial
/// noise)` between them and `begin(steps)` before each.
struct PassHooks<R, B> {
    reinitialise: R,
    begin: B,
}

/// [`sample_with_velocity`] with FreeInit's passes met by `hooks`.
fn sample_passes<R, B>(
    noise: Vec<Tensor<5>>,
    cond: Vec<Tensor<3>>,
    uncond: Vec<Tensor<3>>,
    config: SamplerConfig,
    refine: bool,
    velocity: impl Velocity,
    hooks: PassHooks<R, B>,
) -> Result<Vec<Tensor<5>>, DitError>
where
    R: Fn(&FreeInitConfig, usize, Vec<Tensor<5>>, &[Tensor<5>]) -> Result<Vec<Tensor<5>>, DitError>,
    B: Fn(usize),
{
    const F: &str = "sample_euler";
    config.check(F)?;
    SparseAttnError::check(
        cond.len() == noise.len() && uncond.len() == noise.len(),
        F,
        "cond",
        format!(
            "one conditioning and one null conditioning per clip ({})",
            noise.len()
        ),
        format!("{}, {}", cond.len(), uncond.len()),
    )?;
    let Some(free_init) = config.free_init else {
        return integrate(noise, &cond, &uncond, config, refine, &velocity, 1.0);
    };
    // FreeInit: each pass after the first starts from the last result re-initialised.
    let pass = |i: usize| SamplerConfig {
        steps: free_init.steps_of(i, config.steps),
        ..config
    };
    let mut start = noise.clone();
    let mut sigma = 1.0;
    for i in 0..free_init.iterations - 1 {
        (hooks.begin)(pass(i).steps);
        let clean = integrate(start, &cond, &uncond, pass(i), refine, &velocity, sigma)?;
        start = (hooks.reinitialise)(&free_init, i, clean, &noise)?;
        sigma = free_init.renoise_sigma;
    }
    let last = pass(free_init.iterations - 1);
    (hooks.begin)(last.steps);
    integrate(start, &cond, &uncond, last, refine, &velocity, sigma)
}

/// The Euler loop of [`sample_with_velocity`] from `x` at noise level `start` (1: noise) to
/// 0, on the part of the shifted schedule below `start`.
fn integrate(
    mut x: Vec<Tensor<5>>,
    cond: &[Tensor<3>],
    uncond: &[Tensor<3>],
    config: SamplerConfig,
    refine: bool,
    velocity: &impl Velocity,
    start: f64,
) -> Result<Vec<Tensor<5>>, DitError> {
    let eta = config.stochasticity;
    // The unshifted time whose shifted noise level is `start`.
    let s = config.shift;
    let t_start = match start < 1.0 {
        true => start / (s - (s - 1.0) * start),
        false => 1.0,
    };
    let sigmas: Vec<f64> = (0..=config.steps)
        .map(|i| shift_sigma(t_start * (1.0 - i as f64 / config.steps as f64), s))
        .collect();
    let guided = (config.guidance - 1.0).abs() > 1e-12;
    let both: Vec<Tensor<3>> = cond
        .iter()
        .zip(uncond)
        .map(|(c, u)| Tensor::cat(vec![c.clone(), u.clone()], 0))
        .collect();
    let cond = cond.to_vec();
    // Per clip: [B] estimates after an unguided step, [2B] (cond; uncond) after a guided one.
    let mut estimates: Option<Vec<Tensor<5>>> = None;
    let estimate_of = |x: &[Tensor<5>], v: &[Tensor<5>], sigma: f64| {
        x.iter()
            .zip(v)
            .map(|(x, v)| x.clone() - v.clone() * sigma)
            .collect::<Vec<_>>()
    };
    let cache = config.faster_cache;
    // CFG-Cache: per clip, the last measured unconditional-minus-conditional difference.
    let mut difference: Option<Vec<CfgDifference>> = None;
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (sigma, next) = (pair[0], pair[1]);
        let guided_step = guided && sigma <= config.guidance_max_sigma;
        let reuse_difference = guided_step
            && difference.is_some()
            && cache.is_some_and(|c| !c.runs_both_branches(i, config.steps));
        let v = if guided_step && !reuse_difference {
            let doubled: Vec<Tensor<5>> = x
                .iter()
                .map(|x| Tensor::cat(vec![x.clone(), x.clone()], 0))
                .collect();
            let given = estimates.take().map(|e| {
                e.into_iter()
                    .zip(&x)
                    .map(|(e, x)| {
                        if e.dims()[0] == x.dims()[0] {
                            Tensor::cat(vec![e.clone(), e], 0)
                        } else {
                            e
                        }
                    })
                    .collect()
            });
            let v = velocity(doubled.clone(), sigma, both.clone(), given)?;
            if refine {
                estimates = Some(estimate_of(&doubled, &v, sigma));
            }
            let branches: Vec<(Tensor<5>, Tensor<5>)> = v
                .into_iter()
                .map(|v| {
                    let b = v.dims()[0] / 2;
                    (v.clone().narrow(0, 0, b), v.narrow(0, b, b))
                })
                .collect();
            if let Some(cache) = &cache {
                difference = Some(
                    branches
                        .iter()
                        .map(|(c, u)| CfgDifference::new(c.clone(), u.clone(), cache.low_radius))
                        .collect::<Result<_, _>>()?,
                );
            }
            branches
                .into_iter()
                .map(|(v_cond, v_uncond)| guide(v_cond, v_uncond, config.guidance))
                .collect()
        } else {
            let given = estimates.take().map(|e| {
                e.into_iter()
                    .zip(&x)
                    .map(|(e, x)| e.narrow(0, 0, x.dims()[0]))
                    .collect()
            });
            let v = velocity(x.clone(), sigma, cond.clone(), given)?;
            if refine {
                estimates = Some(estimate_of(&x, &v, sigma));
            }
            match (&difference, &cache) {
                // The conditional branch alone; the unconditional one rebuilt from it.
                (Some(difference), Some(cache)) if reuse_difference => {
                    let scales = cache.band_scales(i, config.steps);
                    v.into_iter()
                        .zip(difference)
                        .map(|(v_cond, d)| {
                            let v_uncond = d.unconditional(v_cond.clone(), scales);
                            guide(v_cond, v_uncond, config.guidance)
                        })
                        .collect()
                }
                _ => v,
            }
        };
        x = x
            .into_iter()
            .zip(v)
            .map(|(x, v)| {
                if eta == 0.0 || next == 0.0 {
                    return x + v * (next - sigma);
                }
                let clean = x.clone() - v.clone() * sigma;
                let noise = x + v * (1.0 - sigma);
                let fresh = Tensor::random(
                    noise.shape(),
                    Distribution::Normal(0.0, 1.0),
                    &noise.device(),
                );
                clean * (1.0 - next) + (noise * (1.0 - eta * eta).sqrt() + fresh * eta) * next
            })
            .collect();
    }
    Ok(x)
}

/// Classifier-free guidance at scale `w`: `v_u + w·(v_c − v_u)`.
fn guide(v_cond: Tensor<5>, v_uncond: Tensor<5>, w: f64) -> Tensor<5> {
    v_uncond.clone() + (v_cond - v_uncond) * w
}
