//! FasterCache (Lv et al. 2024, arXiv 2410.19355): training-free reuse across sampling
//! steps, of each block's self-attention output (extrapolated from the two steps before) and
//! of the guidance branches' difference (CFG-Cache: the unconditional branch rebuilt from
//! the conditional one).

use std::collections::VecDeque;
use std::sync::Mutex;

use burn::config::Config;
use burn::tensor::Tensor;
use burn_sparse_attn::SparseAttnError;

use crate::DitError;
use crate::sample::spectral::{Axes, filter_frequencies};

/// FasterCache settings ([`SamplerConfig::faster_cache`](crate::sample::SamplerConfig::faster_cache));
/// the defaults are those of the reference implementation.
#[derive(Config, Copy, Debug, PartialEq)]
pub struct FasterCacheConfig {
    /// Attention reuse over the steps `i` with `start·steps ≤ i < end·steps`: from the
    /// window's second step on, every other step extrapolates each block's self-attention
    /// output from the two steps before ([`extrapolate`]) instead of computing it. An empty
    /// window (`start == end`) switches it off.
    #[config(default = "[0.3, 0.9]")]
    pub attention_window: [f64; 2],
    /// CFG-Cache: guided steps `i ≥ cfg_start·steps` run both guidance branches only every
    /// `cfg_interval` steps; the steps between run the conditional branch alone and rebuild
    /// the unconditional one from the last measured difference ([`CfgDifference`]). 1
    /// switches it off.
    #[config(default = 5)]
    pub cfg_interval: usize,
    /// Where CFG-Cache starts, as a share of the schedule.
    #[config(default = 0.3)]
    pub cfg_start: f64,
    /// Radius of the low-frequency band of the difference, as a share of `min(H, W)`.
    #[config(default = 0.2)]
    pub low_radius: f64,
    /// The low band is scaled by `1 + boost·(1 − p)` and the high band by `1 + boost·p` at
    /// progress `p = i / steps`: low frequencies (layout) matter early, high (detail) late.
    #[config(default = 0.1)]
    pub band_boost: f64,
}

impl Default for FasterCacheConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl FasterCacheConfig {
    /// Checks every field's range, naming `function` in the error.
    pub fn check(&self, function: &'static str) -> Result<(), SparseAttnError> {
        let [start, end] = self.attention_window;
        SparseAttnError::check(
            (0.0..=1.0).contains(&start) && (start..=1.0).contains(&end),
            function,
            "faster_cache.attention_window",
            "[start, end] with 0 ≤ start ≤ end ≤ 1",
            format!("{:?}", self.attention_window),
        )?;
        SparseAttnError::check(
            self.cfg_interval >= 1,
            function,
            "faster_cache.cfg_interval",
            "≥ 1 (1 = both branches at every step)",
            self.cfg_interval,
        )?;
        SparseAttnError::check(
            (0.0..=1.0).contains(&self.cfg_start),
            function,
            "faster_cache.cfg_start",
            "in [0, 1]",
            self.cfg_start,
        )?;
        SparseAttnError::check(
            self.low_radius > 0.0 && self.low_radius <= 1.0,
            function,
            "faster_cache.low_radius",
            "in (0, 1]",
            self.low_radius,
        )?;
        SparseAttnError::check(
            self.band_boost.is_finite() && self.band_boost >= 0.0,
            function,
            "faster_cache.band_boost",
            "a finite number ≥ 0",
            self.band_boost,
        )
    }

    /// Whether step `i` of `steps` extrapolates the attention (when the two steps before
    /// left outputs of the same shape).
    pub fn reuses_attention(&self, i: usize, steps: usize) -> bool {
        let [start, end] = self
            .attention_window
            .map(|f| (f * steps as f64).ceil() as usize);
        (start..end).contains(&i) && (i - start) % 2 == 1
    }

    /// Whether guided step `i` of `steps` runs both guidance branches (otherwise it reuses the
    /// last difference, where there is one).
    pub fn runs_both_branches(&self, i: usize, steps: usize) -> bool {
        let start = (self.cfg_start * steps as f64).ceil() as usize;
        i < start || (i - start).is_multiple_of(self.cfg_interval)
    }

    /// The extrapolation weight at step `i` of `steps`: it ramps from 0 to 1 over the
    /// schedule.
    pub fn weight(&self, i: usize, steps: usize) -> f64 {
        i as f64 / steps as f64
    }

    /// The scales of the low and high bands at step `i` of `steps`.
    pub fn band_scales(&self, i: usize, steps: usize) -> (f64, f64) {
        let p = i as f64 / steps as f64;
        (1.0 + self.band_boost * (1.0 - p), 1.0 + self.band_boost * p)
    }
}

/// `F_t ≈ F_{t−1} + w·(F_{t−1} − F_{t−2})`: the next output from the previous step's
/// (`previous`) and the one before (`before`), damped by `w`.
pub fn extrapolate<const D: usize>(previous: Tensor<D>, before: Tensor<D>, w: f64) -> Tensor<D> {
    previous.clone() + (previous - before) * w
}

/// Each block's self-attention output at the last two sampling steps, and the schedule that
/// decides when they stand in for the attention: one per sampling run, handed to every model
/// call of the run through [`SamplingState`](crate::sample::SamplingState) (one call per step,
/// each after [`AttentionReuse::begin_step`]). The samplers make their own.
pub struct AttentionReuse {
    config: FasterCacheConfig,
    state: Mutex<ReuseState>,
}

struct ReuseState {
    /// Steps of the pass in progress.
    steps: usize,
    /// The step in progress (`None` before the first).
    step: Option<usize>,
    /// Per block: (step, one output per clip) of the newest two steps, newest first.
    history: Vec<VecDeque<(usize, Vec<Tensor<3>>)>>,
    /// Block attentions extrapolated and computed so far.
    reused: usize,
    computed: usize,
}

impl AttentionReuse {
    /// The reuse of a `depth`-block model over a `steps`-step schedule.
    pub fn new(depth: usize, steps: usize, config: FasterCacheConfig) -> Self {
        Self {
            config,
            state: Mutex::new(ReuseState {
                steps,
                step: None,
                history: vec![VecDeque::new(); depth],
                reused: 0,
                computed: 0,
            }),
        }
    }

    /// Starts the next sampling step's model call.
    pub fn begin_step(&self) {
        let mut state = self.state.lock().expect("attention reuse lock");
        state.step = Some(state.step.map_or(0, |s| s + 1));
    }

    /// Starts a new pass of `steps` steps over the schedule (FreeInit): the schedule starts
    /// again and the outputs of the last pass are forgotten.
    pub fn begin_pass(&self, steps: usize) {
        let mut state = self.state.lock().expect("attention reuse lock");
        state.steps = steps;
        state.step = None;
        state.history.iter_mut().for_each(VecDeque::clear);
    }

    /// Block `block`'s attention output this step, one `[B, S_c, d]` per clip of `dims`:
    /// extrapolated where the schedule says so and the two steps before left outputs of
    /// these shapes (or of twice the rows: see below), computed by `compute` (and
    /// remembered) otherwise.
    pub(crate) fn attention(
        &self,
        block: usize,
        dims: &[[usize; 3]],
        compute: impl FnOnce() -> Result<Vec<Tensor<3>>, DitError>,
    ) -> Result<Vec<Tensor<3>>, DitError> {
        let (step, extrapolated) = {
            let state = self.state.lock().expect("attention reuse lock");
            let step = state.step.unwrap_or(0);
            let history = &state.history[block];
            // An entry of twice the rows (a step that ran both guidance branches) serves
            // its first half: the samplers put the conditional branch first.
            let matching = |outputs: &[Tensor<3>]| -> Option<Vec<Tensor<3>>> {
                if outputs.len() != dims.len() {
                    return None;
                }
                outputs
                    .iter()
                    .zip(dims)
                    .map(|(t, want)| {
                        let have = t.dims();
                        if have == *want {
                            Some(t.clone())
                        } else if have[1..] == want[1..] && have[0] == 2 * want[0] {
                            Some(t.clone().narrow(0, 0, want[0]))
                        } else {
                            None
                        }
                    })
                    .collect()
            };
            let adjacent =
                history.len() == 2 && history[0].0 + 1 == step && history[1].0 + 2 == step;
            let extrapolated = (self.config.reuses_attention(step, state.steps) && adjacent)
                .then(|| matching(&history[0].1).zip(matching(&history[1].1)))
                .flatten()
                .map(|(previous, before)| {
                    let w = self.config.weight(step, state.steps);
                    previous
                        .into_iter()
                        .zip(before)
                        .map(|(a, b)| extrapolate(a, b, w))
                        .collect::<Vec<_>>()
                });
            (step, extrapolated)
        };
        let (outputs, reused) = match extrapolated {
            Some(outputs) => (outputs, true),
            None => (compute()?, false),
        };
        let mut state = self.state.lock().expect("attention reuse lock");
        if reused {
            state.reused += 1;
        } else {
            state.computed += 1;
        }
        let history = &mut state.history[block];
        history.push_front((step, outputs.clone()));
        history.truncate(2);
        Ok(outputs)
    }

    /// Block attentions (extrapolated, computed) so far.
    pub fn counts(&self) -> (usize, usize) {
        let state = self.state.lock().expect("attention reuse lock");
        (state.reused, state.computed)
    }
}

/// CFG-Cache's record of one clip: the last measured difference between the unconditional
/// and the conditional velocity, split into its low and high spatial frequencies.
#[derive(Clone, Debug)]
pub struct CfgDifference {
    low: Tensor<5>,
    high: Tensor<5>,
}

impl CfgDifference {
    /// Records `uncond − cond` (both `[B, C, T, H, W]`), split at `radius·min(H, W)`.
    pub fn new(cond: Tensor<5>, uncond: Tensor<5>, radius: f64) -> Result<Self, DitError> {
        let (low, high) = split_spatial_frequencies(uncond - cond, radius)?;
        Ok(Self { low, high })
    }

    /// The unconditional velocity rebuilt from the conditional one: `cond + s_low·low +
    /// s_high·high`.
    pub fn unconditional(&self, cond: Tensor<5>, (low, high): (f64, f64)) -> Tensor<5> {
        cond + self.low.clone() * low + self.high.clone() * high
    }
}

/// `x: [B, C, T, H, W]` split into the low spatial frequencies of every frame (the 2D
/// spectrum's entries within `radius·min(H, W)` of the zero frequency, wrapping around) and
/// the rest; the two add up to `x`. Uses burn-signal's FFT, which takes power-of-two sizes
/// only and serves Flex and the CubeCL backends, not NdArray: other inputs are refused by
/// name.
pub fn split_spatial_frequencies(
    x: Tensor<5>,
    radius: f64,
) -> Result<(Tensor<5>, Tensor<5>), DitError> {
    const F: &str = "split_spatial_frequencies";
    SparseAttnError::check(
        radius > 0.0 && radius.is_finite(),
        F,
        "radius",
        "> 0",
        radius,
    )?;
    let [_, _, _, h, w] = x.dims();
    let cutoff = radius * h.min(w) as f64;
    let low = filter_frequencies(F, x.clone(), Axes::Spatial, |_, fh, fw| {
        f64::from(u8::from((fh as f64).hypot(fw as f64) <= cutoff))
    })?;
    let high = x - low.clone();
    Ok((low, high))
}
