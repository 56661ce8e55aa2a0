//! The DiT's optimiser: AdamW everywhere, or Muon on the blocks' weight matrices with AdamW on
//! the rest.

use burn::module::ParamGroup;
use burn::optim::{AdamWConfig, AdjustLrFn, ModuleOptimizer, MuonConfig};
use serde::{Deserialize, Serialize};

/// Which optimiser trains the DiT (the DSV predictors keep their own AdamW).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// AdamW (no weight decay) on every parameter.
    #[default]
    AdamW,
    /// Muon (Nesterov momentum, then the update orthogonalised by Newton–Schulz) on the
    /// matrices of [`MUON_PARAMS`], scaled to AdamW's update RMS (Moonshot's rule, so one
    /// learning rate serves both); AdamW on embeddings, biases, norms, modulation and the
    /// patch and output layers, as Muon's authors prescribe.
    Muon,
}

/// Module paths of the parameters Muon trains: the weight matrices inside the blocks
/// (self-attention, cross-attention and MLP projections).
pub const MUON_PARAMS: &str = r"^blocks\.\d+\.(attn\.(qkv|out)|cross\.(q|kv|out)|mlp_in|mlp_out)\.weight$";

/// The optimiser of `kind`.
pub fn dit_optimizer(kind: OptimizerKind) -> ModuleOptimizer {
    let adamw = AdamWConfig::new().with_weight_decay(0.0).init();
    match kind {
        OptimizerKind::AdamW => adamw,
        OptimizerKind::Muon => {
            let group = ParamGroup::from_regex(MUON_PARAMS).expect("MUON_PARAMS is a valid regex");
            adamw.with_group(group, MuonConfig::new().with_adjust_lr_fn(AdjustLrFn::MatchRmsAdamW).build(), None)
        }
    }
}
