//! The DiT's optimiser: AdamW everywhere, or Muon on the blocks' weight matrices with AdamW on
//! the rest.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamGroup};
use burn::optim::{AdamWConfig, AdjustLrFn, GradientsParams, ModuleOptimizer, MuonConfig};
use burn::store::RecordError;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::DitBlock;
use crate::VideoDit;

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
pub const MUON_PARAMS: &str =
    r"^blocks\.\d+\.(attn\.(qkv|out)|cross\.(q|kv|out)|mlp_in|mlp_out)\.weight$";

/// The optimiser of `kind`.
pub fn dit_optimizer(kind: OptimizerKind) -> ModuleOptimizer {
    let adamw = AdamWConfig::new().with_weight_decay(0.0).init();
    match kind {
        OptimizerKind::AdamW => adamw,
        OptimizerKind::Muon => {
            let group = ParamGroup::from_regex(MUON_PARAMS).expect("MUON_PARAMS is a valid regex");
            adamw.with_group(
                group,
                MuonConfig::new()
                    .with_adjust_lr_fn(AdjustLrFn::MatchRmsAdamW)
                    .build(),
                None,
            )
        }
    }
}

/// The DiT's optimiser in two shards that update in parallel: one holds the odd-numbered
/// blocks' parameters, the other every other parameter.
///
/// Muon's Newton–Schulz iterations on the blocks' 128×128 matrices are matmuls too small for
/// Flex to split over threads, so one optimiser step ran on one core while the other waited:
/// 0.06 s of a 0.32 s step of the tiny preset on 2 cores. Each parameter's update depends on
/// its own gradient and state only, so the shards give exactly the updates of one optimiser.
#[derive(Clone)]
pub struct DitOptimizer {
    rest: ModuleOptimizer,
    odd_blocks: ModuleOptimizer,
}

/// Checkpoint file of the shard without the odd-numbered blocks (before the split: of every
/// parameter).
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// Checkpoint file of the odd-numbered blocks' shard.
pub const ODD_BLOCKS_OPTIMIZER_FILE: &str = "optimizer_odd_blocks.bpk";

/// Moves the gradients of the parameters it visits from one set to another.
struct MoveGrads<'a> {
    from: &'a mut GradientsParams,
    to: GradientsParams,
}

impl ModuleVisitor for MoveGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.from.remove::<D>(param.id) {
            self.to.register::<D>(param.id, grad);
        }
    }
}

impl DitOptimizer {
    /// Both shards of `kind`.
    pub fn new(kind: OptimizerKind) -> Self {
        Self {
            rest: dit_optimizer(kind),
            odd_blocks: dit_optimizer(kind),
        }
    }

    /// Updates `model` with `grads` at learning rate `lr`, the two shards in parallel.
    pub fn step(&mut self, lr: f64, model: VideoDit, mut grads: GradientsParams) -> VideoDit {
        let mut odd = MoveGrads {
            from: &mut grads,
            to: GradientsParams::new(),
        };
        odd_blocks_of(&model).for_each(|(_, block)| block.visit(&mut odd));
        let odd = odd.to;
        if odd.is_empty() {
            return self.rest.step(lr, model, grads);
        }
        let copy = model.clone();
        let Self { rest, odd_blocks } = self;
        let (mut model, updated) = rayon::join(
            || rest.step(lr, model, grads),
            || odd_blocks.step(lr, copy, odd),
        );
        for (i, block) in odd_blocks_of(&updated) {
            model.replace_block(i, block.clone());
        }
        model
    }

    /// Writes both shards' states into the checkpoint folder `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), RecordError> {
        self.rest.save(dir.join(OPTIMIZER_FILE))?;
        self.odd_blocks.save(dir.join(ODD_BLOCKS_OPTIMIZER_FILE))
    }

    /// Reads the shards of `kind` from the checkpoint folder `dir`; on error, the file that
    /// failed.
    pub fn load(kind: OptimizerKind, dir: &Path) -> Result<Self, (PathBuf, RecordError)> {
        Ok(Self {
            rest: load_shard(kind, dir.join(OPTIMIZER_FILE))?,
            odd_blocks: load_shard(kind, dir.join(ODD_BLOCKS_OPTIMIZER_FILE))?,
        })
    }

    /// Reads a checkpoint from before the split (format 5): its one file holds every
    /// parameter's state and serves both shards, each of which uses only its own parameters'.
    pub fn load_unsharded(kind: OptimizerKind, dir: &Path) -> Result<Self, (PathBuf, RecordError)> {
        let one = load_shard(kind, dir.join(OPTIMIZER_FILE))?;
        Ok(Self {
            rest: one.clone(),
            odd_blocks: one,
        })
    }
}

/// The blocks of the odd-numbered shard, with their indices.
fn odd_blocks_of(model: &VideoDit) -> impl Iterator<Item = (usize, &DitBlock)> {
    model.blocks().iter().enumerate().skip(1).step_by(2)
}

/// A shard's state, read whole into memory first: Burn's file loader reads tensors lazily,
/// and a checkpoint pruned by a run writing beside this reader would vanish under it.
fn load_shard(
    kind: OptimizerKind,
    file: PathBuf,
) -> Result<ModuleOptimizer, (PathBuf, RecordError)> {
    let bytes = std::fs::read(&file).map_err(|e| (file.clone(), RecordError::Io(e.to_string())))?;
    dit_optimizer(kind)
        .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| (file, e))
}
