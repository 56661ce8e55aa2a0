//! Video-Infinity's dual-scope attention over clips: every query of a clip sees a local
//! window of frames around it (crossing clip boundaries through a halo exchange) and a
//! handful of global frames sampled from the whole video (all-gathered).
//!
//! Frames here are frames of the token grid: tokens are frame-major, `tokens_per_frame`
//! tokens per frame. Differences from Video-Infinity's public code:
//! - the edges of the video are masked, never padded with zero keys;
//! - a key is seen once: a global frame inside a query's local window counts as local (the
//!   paper concatenates and so double-counts it);
//! - global frames are spaced evenly over the whole video, not per clip, so the gather
//!   moves the same bytes whatever the video length.

use std::ops::Range;

use burn::config::Config;
use burn::tensor::{Bool, Tensor, TensorData, module::attention, ops::AttentionModuleOptions};
use burn_sparse_attn::SparseAttnError;

use crate::CommError;
use crate::Communicator;
use crate::clips::{ClipLayout, clip_halos};

/// Settings of dual-scope attention.
#[derive(Config, Debug, PartialEq)]
pub struct DualScopeConfig {
    /// Local scope: a query at frame `f` sees frames `f − window ..= f + window`.
    #[config(default = 2)]
    pub window: usize,
    /// Global scope: frames spaced evenly over the whole video that every query sees.
    #[config(default = 4)]
    pub global_frames: usize,
    /// Logit bias of the favoured scope (0 = both scopes weigh alike).
    #[config(default = 10.0)]
    pub scope_bias: f64,
    /// Noise level of the switch: while `σ ≥ switch_sigma` global keys get `scope_bias`
    /// (layout first), below it local keys do (detail) — Video-Infinity's phase switch.
    #[config(default = 0.5)]
    pub switch_sigma: f64,
}

impl DualScopeConfig {
    /// `(local, global)` logit biases at noise level `sigma`.
    pub fn biases(&self, sigma: f64) -> (f64, f64) {
        if sigma >= self.switch_sigma {
            (0.0, self.scope_bias)
        } else {
            (self.scope_bias, 0.0)
        }
    }

    /// The global frames of a video of `total_frames` frames: the centres of
    /// `global_frames` equal spans (all frames when the video is shorter).
    pub fn global_frame_ids(&self, total_frames: usize) -> Vec<usize> {
        let g = self.global_frames.min(total_frames);
        (0..g)
            .map(|i| (2 * i + 1) * total_frames / (2 * g))
            .collect()
    }
}

/// Which scope, if any, lets a query at frame `query` see a key frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Local,
    Global,
}

/// One key frame of a clip's key list: its global frame index and how it was fetched.
#[derive(Clone, Copy, Debug)]
struct KeyFrame {
    frame: usize,
    scope: Scope,
}

/// Whether a query at `query` sees `key` (union semantics: a global frame inside the local
/// window is already a local key).
fn visible(query: usize, key: KeyFrame, window: usize) -> bool {
    let near = query.abs_diff(key.frame) <= window;
    match key.scope {
        Scope::Local => near,
        Scope::Global => !near,
    }
}

/// Dual-scope attention over one layout, for one forward pass at fixed noise levels: the
/// masks and biases of this rank's clips are built once and reused by every layer. Every rank
/// of the group makes the same plan and calls [`DualScopePlan::attend`] with its own clips.
pub struct DualScopePlan<'c> {
    comm: &'c Communicator,
    layout: ClipLayout,
    mine: Range<usize>,
    tokens_per_frame: usize,
    window: usize,
    global: Vec<usize>,
    /// Per sample: `(local, global)` logit biases.
    scope_biases: Vec<(f64, f64)>,
    /// Per local clip: `[1, 1, S_q, S_k]`, true = hidden.
    masks: Vec<Tensor<4, Bool>>,
    /// Per local clip: `[B, 1, 1, S_k]` scope biases of the keys, `None` when all are zero.
    biases: Vec<Option<Tensor<4>>>,
}

/// One clip's dual-scope attention as [`DualScopePlan::attend_with`] hands it over: its
/// queries against the keys it sees (left halo, the clip, right halo, global frames), with
/// the window mask and the scope biases.
pub struct DualScopeInputs {
    /// The clip's index among this rank's clips.
    pub clip: usize,
    /// `[B, H, S_q, D]`.
    pub q: Tensor<4>,
    /// `[B, H, S_k, D]`.
    pub k: Tensor<4>,
    /// `[B, H, S_k, D]`.
    pub v: Tensor<4>,
    /// `[1, 1, S_q, S_k]`, true where a query cannot see a key.
    pub mask: Tensor<4, Bool>,
    /// `[B, 1, 1, S_k]`: each key's scope bias, added to the scaled scores of every query
    /// of its sample; `None` when all are zero.
    pub bias: Option<Tensor<4>>,
}

impl DualScopeInputs {
    /// The dual-scope attention itself: dense attention under the mask and the biases.
    pub fn dense(self) -> Tensor<4> {
        let [b, h, sq, _] = self.q.dims();
        let full = [b, h, sq, self.k.dims()[2]];
        attention(
            self.q,
            self.k,
            self.v,
            Some(self.mask.expand(full)),
            self.bias.map(|bias| bias.expand(full)),
            AttentionModuleOptions::default(),
        )
    }
}

impl<'c> DualScopePlan<'c> {
    /// Plans dual-scope attention for `layout` (in frames of the token grid; over the ranks
    /// of `comm`) with `tokens_per_frame` tokens per frame, at per-sample noise levels
    /// `sigmas` (length B).
    pub fn new(
        comm: &'c Communicator,
        layout: &ClipLayout,
        tokens_per_frame: usize,
        config: &DualScopeConfig,
        sigmas: &[f64],
    ) -> Result<Self, CommError> {
        const F: &str = "DualScopePlan::new";
        let mine = layout.clips_of_rank(F, comm)?;
        SparseAttnError::check(
            tokens_per_frame > 0,
            F,
            "tokens_per_frame",
            "≥ 1",
            tokens_per_frame,
        )?;
        SparseAttnError::check(
            !sigmas.is_empty(),
            F,
            "sigmas",
            "one noise level per sample (B ≥ 1)",
            0,
        )?;
        SparseAttnError::check(
            config.scope_bias.is_finite(),
            F,
            "config.scope_bias",
            "a finite bias",
            config.scope_bias,
        )?;
        SparseAttnError::check(
            config.global_frames <= layout.total_frames(),
            F,
            "config.global_frames",
            format!("≤ the video's {} frames", layout.total_frames()),
            config.global_frames,
        )?;
        let p = config.window;
        if layout.clips() > 1 {
            // The halo comes from the adjacent clip only.
            let shortest = (0..layout.clips())
                .map(|c| layout.frames(c))
                .min()
                .unwrap_or(0);
            SparseAttnError::check(
                shortest >= p,
                F,
                "config.window",
                format!("≤ the shortest clip ({shortest} frames)"),
                p,
            )?;
        }
        let device = comm.device();
        let global = config.global_frame_ids(layout.total_frames());
        let scope_biases: Vec<(f64, f64)> = sigmas.iter().map(|&s| config.biases(s)).collect();
        let mut masks = Vec::with_capacity(mine.len());
        let mut biases = Vec::with_capacity(mine.len());
        for c in mine.clone() {
            let keys = key_frames(layout, c, p, &global);
            let (o, t) = (layout.frame_offset(c), layout.frames(c));
            let n = tokens_per_frame;
            let (sq, sk) = (t * n, keys.len() * n);
            let mut hidden = Vec::with_capacity(sq * sk);
            for fq in o..o + t {
                let row: Vec<bool> = keys
                    .iter()
                    .flat_map(|&k| std::iter::repeat_n(!visible(fq, k, p), n))
                    .collect();
                for _ in 0..n {
                    hidden.extend_from_slice(&row);
                }
            }
            masks.push(Tensor::<4, Bool>::from_data(
                TensorData::new(hidden, [1, 1, sq, sk]),
                device,
            ));
            biases.push(
                scope_biases
                    .iter()
                    .any(|&(l, g)| l != 0.0 || g != 0.0)
                    .then(|| {
                        let bias: Vec<f32> = scope_biases
                            .iter()
                            .flat_map(|&(local, global)| {
                                keys.iter().flat_map(move |k| {
                                    let b = match k.scope {
                                        Scope::Local => local,
                                        Scope::Global => global,
                                    };
                                    std::iter::repeat_n(b as f32, n)
                                })
                            })
                            .collect();
                        Tensor::<4>::from_data(
                            TensorData::new(bias, [sigmas.len(), 1, 1, sk]),
                            device,
                        )
                    }),
            );
        }
        Ok(Self {
            comm,
            layout: layout.clone(),
            mine,
            tokens_per_frame,
            window: p,
            global,
            scope_biases,
            masks,
            biases,
        })
    }

    /// The group the clips live on.
    pub fn comm(&self) -> &'c Communicator {
        self.comm
    }

    /// The clips, in frames of the token grid.
    pub fn layout(&self) -> &ClipLayout {
        &self.layout
    }

    /// The global frames every query sees.
    pub fn global_frames(&self) -> &[usize] {
        &self.global
    }

    /// Per sample: the `(local, global)` logit biases of this pass
    /// ([`DualScopeConfig::biases`] at its noise level).
    pub fn scope_biases(&self) -> &[(f64, f64)] {
        &self.scope_biases
    }

    /// Attention of this rank's clips' queries over their local windows and the global
    /// frames. `q, k, v`: one `[B, H, frames(c)·tokens_per_frame, D]` tensor per clip of this
    /// rank ([`ClipLayout::clips_of`]), with positions already encoded (RoPE of global frame
    /// indices). Returns one output per clip, like `q`. K and V travel together: one halo
    /// exchange and one gather of the global frames per call.
    pub fn attend(
        &self,
        q: Vec<Tensor<4>>,
        k: Vec<Tensor<4>>,
        v: Vec<Tensor<4>>,
    ) -> Result<Vec<Tensor<4>>, CommError> {
        self.attend_with(q, k, v, |inputs| Ok::<_, CommError>(inputs.dense()))
    }

    /// [`DualScopePlan::attend`] with each clip's attention computed by `attend`, given the
    /// clip's queries, the keys and values it sees, the mask and the biases
    /// ([`DualScopeInputs::dense`] is the plan's own): for attention that approximates it,
    /// such as a sampler's online sparse attention.
    pub fn attend_with<E: Into<CommError>>(
        &self,
        q: Vec<Tensor<4>>,
        k: Vec<Tensor<4>>,
        v: Vec<Tensor<4>>,
        mut attend: impl FnMut(DualScopeInputs) -> Result<Tensor<4>, E>,
    ) -> Result<Vec<Tensor<4>>, CommError> {
        const F: &str = "DualScopePlan::attend";
        let (layout, n, p) = (&self.layout, self.tokens_per_frame, self.window);
        let clips = self.mine.len();
        SparseAttnError::check(
            q.len() == clips && k.len() == clips && v.len() == clips,
            F,
            "q",
            format!(
                "one tensor per clip of rank {} ({clips}) in q, k and v",
                self.comm.rank()
            ),
            format!("{}, {}, {}", q.len(), k.len(), v.len()),
        )?;
        let [_, h, _, d] = q[0].dims();
        for (i, c) in self.mine.clone().enumerate() {
            let want = [self.scope_biases.len(), h, layout.frames(c) * n, d];
            for (name, x) in [("q", &q[i]), ("k", &k[i]), ("v", &v[i])] {
                SparseAttnError::check(
                    x.dims() == want,
                    F,
                    name,
                    format!("{want:?} for clip {c} (B from sigmas, frames × tokens per frame)"),
                    format!("{:?}", x.dims()),
                )?;
            }
        }
        let kv: Vec<Tensor<4>> = k
            .into_iter()
            .zip(v)
            .map(|(k, v)| Tensor::cat(vec![k, v], 3))
            .collect();
        // Global scope: every rank that holds global frames sends them to all others.
        let gathered = if self.global.is_empty() {
            None
        } else {
            let owner = |f: usize| layout.owner(layout.clip_of(f));
            let mut senders: Vec<usize> = self.global.iter().map(|&f| owner(f)).collect();
            senders.dedup();
            let rank = self.comm.rank();
            let own: Vec<Tensor<4>> = self
                .global
                .iter()
                .filter(|&&f| owner(f) == rank)
                .map(|&f| {
                    let c = layout.clip_of(f);
                    kv[c - self.mine.start]
                        .clone()
                        .narrow(2, (f - layout.frame_offset(c)) * n, n)
                })
                .collect();
            let own = (!own.is_empty()).then(|| Tensor::cat(own, 2));
            Some(self.comm.gather_from(own, &senders, 2)?)
        };
        // Local scope: the last / first `p` frames of the neighbouring clips.
        let halos = clip_halos(self.comm, layout, &kv, 2, p * n)?;
        let mut out = Vec::with_capacity(clips);
        for (i, ((q_c, kv_c), (before, after))) in q.into_iter().zip(kv).zip(halos).enumerate() {
            let keys: Vec<Tensor<4>> = before
                .into_iter()
                .chain([kv_c])
                .chain(after)
                .chain(gathered.clone())
                .collect();
            let keys = Tensor::cat(keys, 2);
            let (keys, values) = (keys.clone().narrow(3, 0, d), keys.narrow(3, d, d));
            out.push(
                attend(DualScopeInputs {
                    clip: i,
                    q: q_c,
                    k: keys,
                    v: values,
                    mask: self.masks[i].clone(),
                    bias: self.biases[i].clone(),
                })
                .map_err(Into::into)?,
            );
        }
        Ok(out)
    }
}

/// The key frames of clip `c` in the order [`DualScopePlan::attend`] concatenates them:
/// left halo, the clip, right halo, global frames.
fn key_frames(layout: &ClipLayout, c: usize, window: usize, global: &[usize]) -> Vec<KeyFrame> {
    let (o, t) = (layout.frame_offset(c), layout.frames(c));
    let lo = if c > 0 { o - window } else { o };
    let hi = if c + 1 < layout.clips() {
        o + t + window
    } else {
        o + t
    };
    (lo..hi)
        .map(|frame| KeyFrame {
            frame,
            scope: Scope::Local,
        })
        .chain(global.iter().map(|&frame| KeyFrame {
            frame,
            scope: Scope::Global,
        }))
        .collect()
}

/// Bytes one dual-scope layer moves between ranks for K and V of `elem_bytes`-byte
/// elements, `[batch, heads, ·, head_dim]`: two halos per clip boundary that crosses ranks
/// and, on every rank, the global frames held elsewhere. Independent of the video length.
pub fn dual_scope_bytes_per_layer(
    layout: &ClipLayout,
    tokens_per_frame: usize,
    config: &DualScopeConfig,
    batch: usize,
    heads: usize,
    head_dim: usize,
    elem_bytes: usize,
) -> u64 {
    let frame_bytes = (2 * batch * heads * head_dim * tokens_per_frame * elem_bytes) as u64;
    let crossings = (1..layout.clips())
        .filter(|&c| layout.owner(c) != layout.owner(c - 1))
        .count() as u64;
    let halo = if layout.clips() > 1 {
        2 * crossings * config.window as u64
    } else {
        0
    };
    let global = config.global_frame_ids(layout.total_frames());
    let remote: u64 = (0..layout.world())
        .map(|r| {
            global
                .iter()
                .filter(|&&f| layout.owner(layout.clip_of(f)) != r)
                .count() as u64
        })
        .sum();
    (halo + remote) * frame_bytes
}
