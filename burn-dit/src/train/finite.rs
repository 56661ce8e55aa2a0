//! Finding NaN and ±inf in weights and gradients, by parameter name.

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn_sparse_attn::dsv::DsvHost;

use crate::VideoDit;

/// The dotted path (`blocks.3.mlp_in.weight`) of the first weight of `model` holding NaN or ±inf,
/// or — with `grads` — of the first weight whose gradient in any of them does. DSV layers'
/// saved statistics are not weights and are skipped. One read-back from the device in all.
pub(crate) fn first_non_finite(model: &VideoDit, grads: &[&GradientsParams]) -> Option<String> {
    let skip: Vec<ParamId> = model
        .dsv_layers()
        .iter()
        .flat_map(|l| l.state_param_ids())
        .collect();
    let mut finder = Finder {
        grads,
        skip,
        path: Vec::new(),
        names: Vec::new(),
        probes: Vec::new(),
    };
    model.visit(&mut finder);
    if finder.probes.is_empty() {
        return None;
    }
    let probes: Vec<f32> = Tensor::cat(finder.probes, 0)
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 probes");
    probes
        .iter()
        .position(|p| !p.is_finite())
        .map(|i| finder.names.swap_remove(i))
}

struct Finder<'a> {
    /// Where gradients are looked up; none: the weights themselves are probed.
    grads: &'a [&'a GradientsParams],
    skip: Vec<ParamId>,
    path: Vec<String>,
    names: Vec<String>,
    /// One value per tensor: `sum(t · 0)`, NaN exactly when `t` holds NaN or ±inf (a plain
    /// sum could overflow on large finite values).
    probes: Vec<Tensor<1>>,
}

impl ModuleVisitor for Finder<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.skip.contains(&param.id) {
            return;
        }
        let tensors: Vec<Tensor<D>> = match self.grads {
            [] => vec![param.val()],
            grads => grads.iter().filter_map(|g| g.get::<D>(param.id)).collect(),
        };
        for tensor in tensors {
            self.names.push(self.path.join("."));
            self.probes.push((tensor * 0.0).sum());
        }
    }
}
