//! Training-free online sparse attention (AdaSpa, Xia et al. 2025, arXiv 2502.21079): a
//! model trained dense, or a DSV layer whose predictor is not trained, samples sparsely by
//! finding each query cube's critical keys from the full queries and keys at a few steps and
//! reusing that index on the steps between.

use std::sync::Mutex;
use std::time::Instant;

use crate::DitError;
use burn::config::Config;
use burn::tensor::{Bool, Tensor, module::attention, ops::AttentionModuleOptions};
use burn_ctx_parallel::DualScopeInputs;
use burn_sparse_attn::dsv::{Reorder, TokenGrid};
use burn_sparse_attn::{
    CriticalKeys, SelectionConfig, SparseAttentionOutput, SparseAttnError,
    dense_attention_with_search, sparse_attention,
};
use serde::Serialize;

/// Online sparse attention settings
/// ([`SamplerConfig::online_sparse`](crate::sample::SamplerConfig::online_sparse)).
#[derive(Config, Copy, Debug, PartialEq)]
pub struct OnlineSparseConfig {
    /// Share of each query cube's keys skipped on the sparse steps, in [0, 1).
    pub sparsity: f64,
    /// The steps `i < warmup·steps` attend densely (the layout forms there and changes
    /// fastest); the first step after them searches.
    #[config(default = 0.2)]
    pub warmup: f64,
    /// After the first search, search again every this many steps; the steps between reuse
    /// the last index.
    #[config(default = 10)]
    pub search_every: usize,
    /// Query cube `[t, h, w]` in tokens: the queries that share one selection.
    #[config(default = "[1, 4, 4]")]
    pub query_cube: [usize; 3],
    /// Keep each query's attention over the keys a search skipped (their weighted values and
    /// share of the weight) and add it to the sparse steps' attention over the kept keys until
    /// the next search, instead of dropping it.
    #[config(default = true)]
    pub keep_tail: bool,
    /// Sequences shorter than this attend densely (too short for sparse attention to win;
    /// `usize::MAX` attends densely throughout, which times the dense attention alike).
    #[config(default = 256)]
    pub min_len: usize,
}

impl Default for OnlineSparseConfig {
    fn default() -> Self {
        Self::new(0.9)
    }
}

/// What one step's attention does under [`OnlineSparseConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnlineStep {
    /// Dense attention (warm-up, or a sequence below `min_len`).
    Dense,
    /// Dense attention that also searches a new index.
    Search,
    /// Sparse attention on the last index.
    Sparse,
}

impl OnlineSparseConfig {
    /// Dense attention at every step, recorded and timed like the sparse settings'
    /// (`min_len = usize::MAX`): the baseline a sparse run's attention time is compared with.
    pub fn dense_timed() -> Self {
        Self {
            min_len: usize::MAX,
            ..Self::default()
        }
    }

    /// Checks every field's range, naming `function` in the error.
    pub fn check(&self, function: &'static str) -> Result<(), SparseAttnError> {
        SparseAttnError::check(
            (0.0..1.0).contains(&self.sparsity),
            function,
            "online_sparse.sparsity",
            "in [0, 1)",
            self.sparsity,
        )?;
        SparseAttnError::check(
            (0.0..1.0).contains(&self.warmup),
            function,
            "online_sparse.warmup",
            "in [0, 1) (a share of the steps, leaving at least one to search)",
            self.warmup,
        )?;
        SparseAttnError::check(
            self.search_every >= 1,
            function,
            "online_sparse.search_every",
            "≥ 1 (1 = search at every step after the warm-up)",
            self.search_every,
        )?;
        SparseAttnError::check(
            self.query_cube.iter().all(|&c| c >= 1),
            function,
            "online_sparse.query_cube",
            "[t, h, w] with every side ≥ 1",
            format!("{:?}", self.query_cube),
        )
    }

    /// What step `i` of `steps` does.
    pub fn step(&self, i: usize, steps: usize) -> OnlineStep {
        let first_search = (self.warmup * steps as f64).ceil() as usize;
        if i < first_search {
            OnlineStep::Dense
        } else if (i - first_search).is_multiple_of(self.search_every) {
            OnlineStep::Search
        } else {
            OnlineStep::Sparse
        }
    }

    /// Keys each query cube keeps in a sequence of `s` tokens: `ceil((1 − sparsity)·s)`,
    /// rounded up to 16 (the sparse kernels' tile) and at most `s`.
    pub fn budget(&self, s: usize) -> usize {
        let want = (((1.0 - self.sparsity) * s as f64).ceil() as usize).max(1);
        want.div_ceil(16).saturating_mul(16).min(s)
    }
}

/// One block's record over a sampling run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OnlineLayerStats {
    /// Attention calls that ran dense, searched, and ran sparse.
    pub dense: usize,
    /// See `dense`.
    pub searches: usize,
    /// See `dense`.
    pub sparse: usize,
    /// Share of the keys the sparse calls skipped, averaged over them.
    pub sparsity: f64,
    /// Per head: the share of the attention mass the searched selections kept, averaged
    /// over the searches.
    pub recall: Vec<f64>,
    /// Host wall time spent in this block's attention calls (on CPU backends the
    /// attention's own time; asynchronous GPU backends return before the work is done).
    pub seconds: f64,
}

impl OnlineLayerStats {
    /// Adds another record of the same block: a parallel share of the batch, or one call.
    pub fn merge(&mut self, other: &Self) {
        let weighted = |a: f64, n: usize, b: f64, m: usize| match n + m {
            0 => 0.0,
            total => (a * n as f64 + b * m as f64) / total as f64,
        };
        self.sparsity = weighted(self.sparsity, self.sparse, other.sparsity, other.sparse);
        self.recall = match (self.recall.is_empty(), other.recall.is_empty()) {
            (true, _) => other.recall.clone(),
            (_, true) => self.recall.clone(),
            _ => self
                .recall
                .iter()
                .zip(&other.recall)
                .map(|(&a, &b)| weighted(a, self.searches, b, other.searches))
                .collect(),
        };
        self.dense += other.dense;
        self.searches += other.searches;
        self.sparse += other.sparse;
        self.seconds += other.seconds;
    }
}

/// What a search leaves one block's clip: its index and, with `keep_tail`, each query's
/// attention over the keys it skipped.
struct Searched {
    keys: CriticalKeys,
    tail: Option<Tail>,
    grid: TokenGrid,
    /// Dual-scope attention's `(local, global)` biases at the search: the tail's split of the
    /// weights holds only while they do.
    phase: Option<(f64, f64)>,
}

/// Dual-scope attention's keys of one clip: which each query sees and their scope biases
/// ([`DualScopeInputs`]).
struct Scope {
    /// `[1, 1, Sq, Sk]`, true = hidden.
    mask: Tensor<4, Bool>,
    /// `[B, 1, 1, Sk]`, `None` when all are zero.
    bias: Option<Tensor<4>>,
    /// The first sample's `(local, global)` biases.
    phase: (f64, f64),
}

impl Scope {
    /// The additive score bias of the search, `[B or 1, 1, Sq, Sk]` with the query rows in
    /// `reorder`'s order: −∞ where the mask hides a key, plus the key's scope bias.
    fn score_bias(&self, reorder: &Reorder) -> Tensor<4> {
        let [_, _, sq, sk] = self.mask.dims();
        let hidden = Tensor::<4>::zeros([1, 1, sq, sk], &self.mask.device())
            .mask_fill(self.mask.clone(), f32::NEG_INFINITY);
        let hidden = reorder.apply(hidden);
        match &self.bias {
            Some(bias) => {
                let b = bias.dims()[0];
                hidden.expand([b, 1, sq, sk]) + bias.clone().expand([b, 1, sq, sk])
            }
            None => hidden,
        }
    }
}

/// The skipped keys' part of each query's dense attention at a search, in cube order:
/// `weighted = Σ_{j skipped} p_j·v_j` `[B, H, S, D]` over the row's weights `p`, and the
/// kept keys' share of them, `kept = Σ_{j kept} p_j` `[B, H, S]`.
#[derive(Clone)]
struct Tail {
    weighted: Tensor<4>,
    kept: Tensor<3>,
}

impl Tail {
    /// The tail of a search: its dense output less the part over the kept keys, whose share
    /// of each row's weight is `exp(lse_kept − lse)`.
    fn new(dense: Tensor<4>, lse: Tensor<3>, kept: SparseAttentionOutput) -> Self {
        let kept_lse = kept.lse.expect("sparse attention without a dense fallback");
        let share = (kept_lse - lse).exp().clamp(0.0, 1.0);
        Self {
            weighted: dense - kept.output * share.clone().unsqueeze_dim(3),
            kept: share,
        }
    }

    /// This step's attention over the kept keys, `kept_out`, completed by the stored tail
    /// with each row's weight split as at the search: `kept·kept_out + weighted`. A shared
    /// shift of the scores (their scale moves with the noise level) leaves the split alone,
    /// which merging by the search's log-sum-exp would not.
    fn complete(&self, kept_out: Tensor<4>) -> Tensor<4> {
        kept_out * self.kept.clone().unsqueeze_dim(3) + self.weighted.clone()
    }

    fn map_batch(&self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Self {
            weighted: f(self.weighted.clone()),
            kept: f(self.kept.clone().unsqueeze_dim(3)).squeeze_dim(3),
        }
    }
}

struct OnlineState {
    /// Steps of the pass in progress.
    steps: usize,
    step: Option<usize>,
    /// Per block, per clip: the last searched index.
    index: Vec<Vec<Option<Searched>>>,
    layers: Vec<OnlineLayerStats>,
}

/// The online sparse attention of one sampling run: its schedule, each block's last index
/// and its statistics. Handed to every model call of the run through
/// [`SamplingState`](crate::SamplingState).
pub struct OnlineSparse {
    config: OnlineSparseConfig,
    state: Mutex<OnlineState>,
}

impl OnlineSparse {
    /// The online sparse attention of a `depth`-block model over a `steps`-step schedule.
    pub fn new(depth: usize, steps: usize, config: OnlineSparseConfig) -> Self {
        Self {
            config,
            state: Mutex::new(OnlineState {
                steps,
                step: None,
                index: (0..depth).map(|_| Vec::new()).collect(),
                layers: vec![OnlineLayerStats::default(); depth],
            }),
        }
    }

    /// Starts the next sampling step's model call.
    pub fn begin_step(&self) {
        let mut state = self.state.lock().expect("online sparse lock");
        state.step = Some(state.step.map_or(0, |s| s + 1));
    }

    /// Starts a new pass of `steps` steps over the schedule (FreeInit): warm-up and searches
    /// start again, the last pass's indices are forgotten; the records add up.
    pub fn begin_pass(&self, steps: usize) {
        let mut state = self.state.lock().expect("online sparse lock");
        state.steps = steps;
        state.step = None;
        state.index.iter_mut().for_each(Vec::clear);
    }

    /// Each block's record so far.
    pub fn layer_stats(&self) -> Vec<OnlineLayerStats> {
        self.state
            .lock()
            .expect("online sparse lock")
            .layers
            .clone()
    }

    /// Block `block`'s self-attention of clip `clip`: `q, k, v: [B, H, S, D]`, tokens
    /// frame-major on `grid`.
    pub(crate) fn attend(
        &self,
        block: usize,
        clip: usize,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        grid: TokenGrid,
    ) -> Result<Tensor<4>, DitError> {
        self.attend_keys(block, clip, [q, k, v], grid, None)
    }

    /// Block `block`'s dual-scope attention of one clip (`grid`: its query tokens) at scope
    /// biases `phase` (the first sample's `(local, global)`): the search takes the window
    /// mask and the scope biases as a score bias and keeps only keys every query of a cube
    /// sees, and the sparse steps add the scope biases exactly. A search runs at the first
    /// step after the favoured scope switches.
    pub(crate) fn attend_dual_scope(
        &self,
        block: usize,
        inputs: DualScopeInputs,
        grid: TokenGrid,
        phase: (f64, f64),
    ) -> Result<Tensor<4>, DitError> {
        let DualScopeInputs {
            clip,
            q,
            k,
            v,
            mask,
            bias,
        } = inputs;
        let scope = Scope { mask, bias, phase };
        self.attend_keys(block, clip, [q, k, v], grid, Some(scope))
    }

    /// [`OnlineSparse::attend`] over the clip's own tokens (`scope` = `None`) or over
    /// dual-scope keys.
    fn attend_keys(
        &self,
        block: usize,
        clip: usize,
        [q, k, v]: [Tensor<4>; 3],
        grid: TokenGrid,
        scope: Option<Scope>,
    ) -> Result<Tensor<4>, DitError> {
        let _timer = AttentionTimer {
            state: &self.state,
            block,
            start: Instant::now(),
        };
        let [b, _, s, _] = q.dims();
        let sk = k.dims()[2];
        let phase = scope.as_ref().map(|scope| scope.phase);
        let (kind, stored) = {
            let mut state = self.state.lock().expect("online sparse lock");
            let kind = match s < self.config.min_len {
                true => OnlineStep::Dense,
                false => self.config.step(state.step.unwrap_or(0), state.steps),
            };
            let stored = match kind {
                OnlineStep::Sparse => state.index[block]
                    .get(clip)
                    .and_then(Option::as_ref)
                    .filter(|stored| stored.grid == grid && stored.phase == phase)
                    .and_then(|stored| fit_batch(stored, b)),
                _ => None,
            };
            if kind == OnlineStep::Dense {
                state.layers[block].merge(&OnlineLayerStats {
                    dense: 1,
                    ..OnlineLayerStats::default()
                });
            }
            (kind, stored)
        };
        if kind == OnlineStep::Dense {
            return Ok(match scope {
                Some(Scope { mask, bias, .. }) => DualScopeInputs {
                    clip,
                    q,
                    k,
                    v,
                    mask,
                    bias,
                }
                .dense(),
                None => attention(q, k, v, None, None, AttentionModuleOptions::default()),
            });
        }
        let reorder = Reorder::new(grid, self.config.query_cube, &q.device());
        // Dual-scope keys are not the clip's own tokens: only the queries go into cubes.
        let (q, k, v) = match scope {
            Some(_) => (reorder.apply(q), k, v),
            None => (reorder.apply(q), reorder.apply(k), reorder.apply(v)),
        };
        let key_bias = scope.as_ref().and_then(|scope| scope.bias.clone());
        let out = match stored {
            Some((keys, tail)) => {
                let kept = sparse_attention(q, k, v, &keys, key_bias, Default::default())?.output;
                let out = match tail {
                    Some(tail) => tail.complete(kept),
                    None => kept,
                };
                self.state.lock().expect("online sparse lock").layers[block].merge(
                    &OnlineLayerStats {
                        sparse: 1,
                        sparsity: keys.sparsity(),
                        ..OnlineLayerStats::default()
                    },
                );
                out
            }
            // A search step, or a sparse step without a fitting index (a new clip shape, or
            // the first step after the favoured scope switched).
            None => {
                let group = self.config.query_cube.iter().product();
                let selection = SelectionConfig::new(group, self.config.budget(sk));
                let score_bias = scope.as_ref().map(|scope| scope.score_bias(&reorder));
                let searched = dense_attention_with_search(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    score_bias,
                    selection,
                    None,
                )?;
                let tail = match self.config.keep_tail {
                    true => {
                        let kept = sparse_attention(
                            q,
                            k,
                            v,
                            &searched.keys,
                            key_bias,
                            Default::default(),
                        )?;
                        Some(Tail::new(
                            searched.output.clone(),
                            searched.lse.clone(),
                            kept,
                        ))
                    }
                    false => None,
                };
                let recall: Vec<f64> = searched
                    .recall
                    .into_data()
                    .convert::<f64>()
                    .try_to_vec()
                    .expect("f64 recall");
                let mut state = self.state.lock().expect("online sparse lock");
                state.layers[block].merge(&OnlineLayerStats {
                    searches: 1,
                    recall,
                    ..OnlineLayerStats::default()
                });
                let clips = &mut state.index[block];
                if clips.len() <= clip {
                    clips.resize_with(clip + 1, || None);
                }
                clips[clip] = Some(Searched {
                    keys: searched.keys,
                    tail,
                    grid,
                    phase,
                });
                searched.output
            }
        };
        Ok(reorder.undo(out))
    }
}

/// Adds the time from its making to its drop to a block's record (every way out of
/// [`OnlineSparse::attend`], which takes the state's lock only in inner scopes).
struct AttentionTimer<'a> {
    state: &'a Mutex<OnlineState>,
    block: usize,
    start: Instant,
}

impl Drop for AttentionTimer<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.state.lock() {
            state.layers[self.block].seconds += self.start.elapsed().as_secs_f64();
        }
    }
}

/// A search's index (and tail) for a batch of `b`: as it is, its first half (a step running
/// only the conditional branch after one that ran both: the samplers put the conditional
/// branch first) or twice over (the other way round); `None` for any other batch.
fn fit_batch(searched: &Searched, b: usize) -> Option<(CriticalKeys, Option<Tail>)> {
    let have = searched.keys.indices().dims()[0];
    let fit = |f: &dyn Fn(Tensor<4>) -> Tensor<4>, keys: CriticalKeys| {
        (keys, searched.tail.as_ref().map(|tail| tail.map_batch(f)))
    };
    if have == b {
        Some((searched.keys.clone(), searched.tail.clone()))
    } else if have == 2 * b {
        let keys = searched.keys.narrow_batch(0, b).ok()?;
        Some(fit(&|t| t.narrow(0, 0, b), keys))
    } else if 2 * have == b {
        let keys = searched.keys.repeat_batch(2).ok()?;
        Some(fit(&|t| t.repeat_dim(0, 2), keys))
    } else {
        None
    }
}
