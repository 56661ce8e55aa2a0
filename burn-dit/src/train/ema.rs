//! Exponential moving average of a model's weights, for sampling.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// Current values of a live model by parameter id, flattened, split into trained weights
/// (averaged) and state buffers such as DSV statistics (copied).
#[derive(Default)]
struct Snapshot {
    trained: HashMap<ParamId, Tensor<1>>,
    buffers: HashMap<ParamId, Tensor<1>>,
}

impl ModuleVisitor for Snapshot {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let target = if value.is_require_grad() {
            &mut self.trained
        } else {
            &mut self.buffers
        };
        target.insert(param.id, value.inner().detach().flatten::<1>(0, D - 1));
    }
}

struct Blend<'a> {
    snapshot: &'a Snapshot,
    decay: f64,
}

impl ModuleMapper for Blend<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let id = param.id;
        let (snapshot, decay) = (self.snapshot, self.decay);
        param.map(|ema| {
            let shape = ema.shape();
            if let Some(live) = snapshot.trained.get(&id) {
                ema * decay + live.clone().reshape(shape) * (1.0 - decay)
            } else if let Some(live) = snapshot.buffers.get(&id) {
                live.clone().reshape(shape)
            } else {
                ema
            }
        })
    }
}

/// Keeps `ema ← decay·ema + (1 − decay)·live` for trained weights and copies buffers.
pub fn ema_update<M: Module>(ema: M, live: &M, decay: f64) -> M {
    let mut snapshot = Snapshot::default();
    live.visit(&mut snapshot);
    ema.map(&mut Blend {
        snapshot: &snapshot,
        decay,
    })
}
