//! What one sampling run keeps across its steps for the training-free accelerators:
//! FasterCache's attention outputs and online sparse attention's key index.

use crate::sample::faster_cache::{AttentionReuse, FasterCacheConfig};
use crate::sample::online_sparse::{OnlineSparse, OnlineSparseConfig};

/// The per-run state of the accelerators that work inside the model's blocks, handed to
/// every model call of one sampling run
/// ([`ForwardContext::with_sampling`](crate::ForwardContext::with_sampling)), each call after
/// [`SamplingState::begin_step`]. The samplers make their own.
pub struct SamplingState {
    reuse: Option<AttentionReuse>,
    online: Option<OnlineSparse>,
}

impl SamplingState {
    /// The state of a `depth`-block model over a `steps`-step schedule with FasterCache's
    /// attention reuse and online sparse attention where given.
    pub fn new(
        depth: usize,
        steps: usize,
        faster_cache: Option<FasterCacheConfig>,
        online_sparse: Option<OnlineSparseConfig>,
    ) -> Self {
        Self {
            reuse: faster_cache.map(|c| AttentionReuse::new(depth, steps, c)),
            online: online_sparse.map(|c| OnlineSparse::new(depth, steps, c)),
        }
    }

    /// Starts the next sampling step's model call.
    pub fn begin_step(&self) {
        if let Some(reuse) = &self.reuse {
            reuse.begin_step();
        }
        if let Some(online) = &self.online {
            online.begin_step();
        }
    }

    /// Starts a new pass of `steps` steps (FreeInit's passes each run the schedule again).
    pub fn begin_pass(&self, steps: usize) {
        if let Some(reuse) = &self.reuse {
            reuse.begin_pass(steps);
        }
        if let Some(online) = &self.online {
            online.begin_pass(steps);
        }
    }

    /// FasterCache's attention reuse, when on.
    pub fn reuse(&self) -> Option<&AttentionReuse> {
        self.reuse.as_ref()
    }

    /// Online sparse attention, when on.
    pub fn online(&self) -> Option<&OnlineSparse> {
        self.online.as_ref()
    }
}
