//! Checkpoints: writing a run's state, resuming it exactly, loading weights for sampling.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::{StepLog, TrainConfig, Trainer};
use crate::model::VideoDit;
use crate::optim::DitOptimizer;

/// Why a checkpoint could not be used. Nothing in memory or on disk changes when this is
/// returned.
#[derive(Debug)]
pub enum CheckpointError {
    /// A file is missing or unreadable.
    Io(PathBuf, std::io::Error),
    /// A file is not what a checkpoint holds.
    Corrupt(PathBuf, String),
    /// The checkpoint was written for another model or clip geometry.
    Mismatch {
        /// The setting that differs.
        field: &'static str,
        /// This run's value.
        expected: String,
        /// The checkpoint's value.
        found: String,
    },
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(path, e) => write!(f, "checkpoint: cannot read {}: {e}", path.display()),
            Self::Corrupt(path, why) => {
                write!(f, "checkpoint: {} is corrupt: {why}", path.display())
            }
            Self::Mismatch {
                field,
                expected,
                found,
            } => write!(
                f,
                "checkpoint: `{field}` differs: this run has {expected}, the checkpoint {found}"
            ),
        }
    }
}

impl std::error::Error for CheckpointError {}

/// Saved beside the weights.
#[derive(Serialize, Deserialize)]
pub(super) struct SavedState {
    format: u32,
    step: usize,
    config: TrainConfig,
    history: Vec<StepLog>,
}

/// Version 2: the model gained QK-norm and the pooled conditioning, the run its data source.
/// Version 3: the model gained the MLP's frame convolution, the run its optimiser.
/// Version 4: the model gained its prediction target and the MLP's temporal convolution.
/// Version 5: the model gained self-conditioning and the output convolution.
/// Version 6: the optimiser state is in two files (`DitOptimizer`'s shards); version 5, in one,
/// still loads.
const FORMAT: u32 = 6;
/// The oldest format this version reads.
const OLDEST_FORMAT: u32 = 5;
/// The first format with the optimiser state in two files.
const SHARDED_OPTIMIZER_FORMAT: u32 = 6;

impl Trainer {
    /// Writes a checkpoint under `dir/checkpoints/step_NNNNNN` and points `latest` at it;
    /// the pointer changes only once every file is written.
    pub fn save_checkpoint(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let name = format!("step_{:06}", self.step);
        let root = dir.join("checkpoints");
        let ckpt = root.join(&name);
        std::fs::create_dir_all(&ckpt)?;
        let io = |e: burn::store::RecordError| std::io::Error::other(e.to_string());
        self.model
            .clone()
            .into_record()
            .save(ckpt.join("model.bpk"))
            .map_err(io)?;
        self.ema
            .clone()
            .into_record()
            .save(ckpt.join("ema.bpk"))
            .map_err(io)?;
        self.optimizer.save(&ckpt).map_err(io)?;
        self.dsv
            .optimizer()
            .save(ckpt.join("predictor_optimizer.bpk"))
            .map_err(io)?;
        let state = SavedState {
            format: FORMAT,
            step: self.step,
            config: self.config.clone(),
            history: self.history.clone(),
        };
        std::fs::write(
            ckpt.join("state.json"),
            serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?,
        )?;
        let tmp = root.join("latest.tmp");
        std::fs::write(&tmp, &name)?;
        std::fs::rename(tmp, root.join("latest"))?;
        Ok(ckpt)
    }

    /// Resumes from the checkpoint `dir/checkpoints/latest` points to. Everything is read and
    /// checked before anything changes: on error this trainer is left as it was.
    pub fn resume(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        let (ckpt, state) = read_checkpoint(dir)?;
        let ours = serde_json::to_string(&self.config.model).expect("config serialises");
        let theirs = serde_json::to_string(&state.config.model).expect("config serialises");
        if ours != theirs {
            return Err(CheckpointError::Mismatch {
                field: "model",
                expected: ours,
                found: theirs,
            });
        }
        if state.config.data != self.config.data {
            return Err(CheckpointError::Mismatch {
                field: "data",
                expected: format!("{:?}", self.config.data),
                found: format!("{:?}", state.config.data),
            });
        }
        if state.config.clip != self.config.clip {
            return Err(CheckpointError::Mismatch {
                field: "clip",
                expected: format!("{:?}", self.config.clip),
                found: format!("{:?}", state.config.clip),
            });
        }
        if state.config.optimizer != self.config.optimizer {
            return Err(CheckpointError::Mismatch {
                field: "optimizer",
                expected: format!("{:?}", self.config.optimizer),
                found: format!("{:?}", state.config.optimizer),
            });
        }
        let load_record = |file: &str| load_module_record(&ckpt, file);
        let fresh = self.config.model.init(&self.device);
        let model = fresh
            .clone()
            .try_load_record(load_record("model.bpk")?)
            .map_err(|e| CheckpointError::Corrupt(ckpt.join("model.bpk"), e.to_string()))?;
        let ema = fresh
            .valid()
            .try_load_record(load_record("ema.bpk")?)
            .map_err(|e| CheckpointError::Corrupt(ckpt.join("ema.bpk"), e.to_string()))?;
        let optimizer = if state.format < SHARDED_OPTIMIZER_FORMAT {
            DitOptimizer::load_unsharded(self.config.optimizer, &ckpt)
        } else {
            DitOptimizer::load(self.config.optimizer, &ckpt)
        };
        let optimizer =
            optimizer.map_err(|(file, e)| CheckpointError::Corrupt(file, e.to_string()))?;
        let pred_path = ckpt.join("predictor_optimizer.bpk");
        let predictor_optimizer = AdamWConfig::new()
            .with_weight_decay(0.0)
            .init()
            .load(&pred_path)
            .map_err(|e| CheckpointError::Corrupt(pred_path, e.to_string()))?;

        self.model = model;
        self.ema = ema;
        self.optimizer = optimizer;
        self.dsv.set_optimizer(predictor_optimizer);
        self.step = state.step;
        self.history = state.history;
        Ok(())
    }
}

/// The checkpoint `dir/checkpoints/latest` points to and its saved state.
fn read_checkpoint(dir: &Path) -> Result<(PathBuf, SavedState), CheckpointError> {
    let root = dir.join("checkpoints");
    let latest = root.join("latest");
    let name =
        std::fs::read_to_string(&latest).map_err(|e| CheckpointError::Io(latest.clone(), e))?;
    let ckpt = root.join(name.trim());
    let state_path = ckpt.join("state.json");
    let bytes =
        std::fs::read(&state_path).map_err(|e| CheckpointError::Io(state_path.clone(), e))?;
    // The format first: an older checkpoint is named as such, not as a parse error.
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    let format: Format = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt(state_path.clone(), e.to_string()))?;
    if !(OLDEST_FORMAT..=FORMAT).contains(&format.format) {
        return Err(CheckpointError::Mismatch {
            field: "format",
            expected: format!("{OLDEST_FORMAT}..={FORMAT}"),
            found: format.format.to_string(),
        });
    }
    let state: SavedState = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt(state_path.clone(), e.to_string()))?;
    Ok((ckpt, state))
}

fn load_module_record(ckpt: &Path, file: &str) -> Result<ModuleRecord, CheckpointError> {
    let path = ckpt.join(file);
    if !path.exists() {
        return Err(CheckpointError::Io(
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    ModuleRecord::load(&path).map_err(|e| CheckpointError::Corrupt(path, e.to_string()))
}

/// The training configuration of the checkpoint that `dir/checkpoints/latest` points to.
pub fn saved_config(dir: &Path) -> Result<TrainConfig, CheckpointError> {
    read_checkpoint(dir).map(|(_, state)| state.config)
}

/// The EMA (sampling) weights and the training configuration of the checkpoint that
/// `dir/checkpoints/latest` points to, on `device` without autodiff: what a sampler needs,
/// whatever attention the run trained with.
pub fn load_for_sampling(
    dir: &Path,
    device: &Device,
) -> Result<(VideoDit, TrainConfig), CheckpointError> {
    let (ckpt, state) = read_checkpoint(dir)?;
    let model = state
        .config
        .model
        .init(device)
        .try_load_record(load_module_record(&ckpt, "ema.bpk")?)
        .map_err(|e| CheckpointError::Corrupt(ckpt.join("ema.bpk"), e.to_string()))?;
    Ok((model, state.config))
}
