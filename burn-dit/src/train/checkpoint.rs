//! Checkpoints: writing a run's state, resuming it exactly, loading weights for sampling.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::AdamWConfig;
use burn::store::ModuleRecord;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::finite::first_non_finite;
use super::storage::{Manifest, replace_atomically, sync_dir, sync_file, write_synced};
use super::{StepLog, TrainConfig, Trainer};
use crate::VideoDit;
use crate::train::optim::DitOptimizer;

/// Why a checkpoint could not be used. Nothing in memory or on disk changes when this is
/// returned.
#[derive(Debug)]
pub enum CheckpointError {
    /// A file is missing or unreadable.
    Io(PathBuf, std::io::Error),
    /// A file is not what a checkpoint holds.
    Corrupt(PathBuf, String),
    /// The newest checkpoint fails its manifest (a file missing, truncated or changed).
    Damaged {
        /// The checkpoint folder `latest` names.
        checkpoint: PathBuf,
        /// The file that fails.
        file: PathBuf,
        /// How it fails.
        why: String,
        /// The newest checkpoint that passes its manifest, if any
        /// ([`IfDamaged::UseNewestIntact`] loads it).
        newest_intact: Option<PathBuf>,
    },
    /// A loaded weight holds NaN or ±inf.
    NonFinite {
        /// The weights file.
        file: PathBuf,
        /// The parameter's path in the model.
        parameter: String,
    },
    /// The checkpoint was written for another model or clip geometry.
    Mismatch {
        /// The setting that differs, as a dotted path (`model.attention`).
        field: String,
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
            Self::Damaged {
                checkpoint,
                file,
                why,
                newest_intact,
            } => {
                write!(
                    f,
                    "checkpoint {} is damaged: {}: {why}",
                    checkpoint.display(),
                    file.display()
                )?;
                match newest_intact {
                    Some(intact) => write!(f, "; the newest intact one is {}", intact.display()),
                    None => write!(f, "; no intact checkpoint is left"),
                }
            }
            Self::NonFinite { file, parameter } => write!(
                f,
                "checkpoint: {} holds NaN or infinite values in `{parameter}`",
                file.display()
            ),
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

/// What a resume reads from a checkpoint before the trainer changes.
struct LoadedRun {
    ckpt: PathBuf,
    state: SavedState,
    model: VideoDit,
    ema: VideoDit,
    optimizer: DitOptimizer,
    predictor_optimizer: burn::optim::ModuleOptimizer,
}

/// Which checkpoint to load when the one `latest` names fails its manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IfDamaged {
    /// Fail with [`CheckpointError::Damaged`], naming the damage and the newest intact one.
    #[default]
    Fail,
    /// Load the newest checkpoint that passes its manifest.
    UseNewestIntact,
}

/// Saved beside the weights.
#[derive(Serialize, Deserialize)]
pub(super) struct SavedState {
    format: u32,
    step: usize,
    config: TrainConfig,
    history: Vec<StepLog>,
    /// The divergence guard's learning-rate factor (1 in runs that never skipped a step).
    #[serde(default = "one")]
    lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

/// Version 2: the model gained QK-norm and the pooled conditioning, the run its data source.
/// Version 3: the model gained the MLP's frame convolution, the run its optimiser.
/// Version 4: the model gained its prediction target and the MLP's temporal convolution.
/// Version 5: the model gained self-conditioning and the output convolution.
/// Version 6: the optimiser state is in two files (`DitOptimizer`'s shards); version 5, in one,
/// still loads.
/// Version 7: a manifest with every file's size and SHA-256; earlier formats load unverified.
const FORMAT: u32 = 7;
/// The oldest format this version reads.
const OLDEST_FORMAT: u32 = 5;
/// The first format with the optimiser state in two files.
const SHARDED_OPTIMIZER_FORMAT: u32 = 6;
/// The first format with a manifest.
const MANIFEST_FORMAT: u32 = 7;

/// `io::Error` with the path it concerns in its message.
fn at(path: &Path) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
    move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The step of a finished checkpoint folder's name (`step_000120` → 120).
fn step_of(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("step_")?;
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())
        .flatten()
}

/// Finished checkpoint folders under `root`, newest first.
fn checkpoints_newest_first(root: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((step_of(e.file_name().to_str()?)?, e.path())))
        .collect();
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    found
}

impl Trainer {
    /// Writes a checkpoint to `dir/checkpoints/step_NNNNNN`, then points `latest` at it.
    ///
    /// Every file is written into a staging folder and synced, a manifest of their sizes and
    /// SHA-256 sums is added, the folder is synced and renamed into place, and only then is
    /// `latest` replaced (atomically, synced). A kill at any point leaves the previous
    /// checkpoint and `latest` as they were. A finished checkpoint is never rewritten: saving
    /// a step that has an intact checkpoint fails; a damaged one is moved aside
    /// (`step_NNNNNN.damaged`). Afterwards only the newest `keep_checkpoints` are kept.
    pub fn save_checkpoint(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let name = format!("step_{:06}", self.step);
        let root = dir.join("checkpoints");
        let ckpt = root.join(&name);
        std::fs::create_dir_all(&root).map_err(at(&root))?;
        if ckpt.exists() {
            if open_intact(&ckpt).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} already holds an intact checkpoint; checkpoints are never rewritten",
                        ckpt.display()
                    ),
                ));
            }
            let aside = root.join(format!("{name}.damaged"));
            let _ = std::fs::remove_dir_all(&aside);
            std::fs::rename(&ckpt, &aside).map_err(at(&ckpt))?;
        }
        let staging = root.join(format!(".{name}.{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(at(&staging))?;
        }
        std::fs::create_dir(&staging).map_err(at(&staging))?;
        if let Err(e) = self.seal(&staging) {
            // A full disk: give back what the failed save took (a kill leaves it to the
            // next start's clean-up).
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        std::fs::rename(&staging, &ckpt).map_err(at(&ckpt))?;
        sync_dir(&root).map_err(at(&root))?;
        let latest = root.join("latest");
        replace_atomically(&latest, name.as_bytes()).map_err(at(&latest))?;
        self.prune_checkpoints(&root)?;
        Ok(ckpt)
    }

    /// The run's files into `staging`, each synced, with their manifest; the folder synced.
    fn seal(&self, staging: &Path) -> std::io::Result<()> {
        self.write_files(staging)?;
        for entry in std::fs::read_dir(staging).map_err(at(staging))? {
            let path = entry?.path();
            sync_file(&path).map_err(at(&path))?;
        }
        let config = serde_json::to_value(&self.config).map_err(std::io::Error::other)?;
        let manifest = Manifest::describe(staging, FORMAT, self.step, config)?;
        let manifest_path = staging.join(super::storage::MANIFEST);
        write_synced(
            &manifest_path,
            &serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
        )
        .map_err(at(&manifest_path))?;
        sync_dir(staging).map_err(at(staging))
    }

    /// The run's files, unsynced, into `dir`.
    fn write_files(&self, dir: &Path) -> std::io::Result<()> {
        let io = |file: &str| {
            let path = dir.join(file);
            move |e: burn::store::RecordError| {
                std::io::Error::other(format!("{}: {e}", path.display()))
            }
        };
        self.model
            .clone()
            .into_record()
            .save(dir.join("model.bpk"))
            .map_err(io("model.bpk"))?;
        self.ema
            .clone()
            .into_record()
            .save(dir.join("ema.bpk"))
            .map_err(io("ema.bpk"))?;
        self.optimizer.save(dir).map_err(io("optimizer"))?;
        self.dsv
            .optimizer()
            .save(dir.join("predictor_optimizer.bpk"))
            .map_err(io("predictor_optimizer.bpk"))?;
        let state = SavedState {
            format: FORMAT,
            step: self.step,
            config: self.config.clone(),
            history: self.history.clone(),
            lr_scale: self.lr_scale,
        };
        let path = dir.join("state.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?,
        )
        .map_err(at(&path))
    }

    /// Keeps the newest `keep_checkpoints` intact checkpoints (0 keeps all) and deletes every
    /// checkpoint older than the last of them. Damaged ones among them stay (for a look) but
    /// do not count: they cannot replace an intact one.
    fn prune_checkpoints(&self, root: &Path) -> std::io::Result<()> {
        let keep = self.config.keep_checkpoints;
        if keep == 0 {
            return Ok(());
        }
        let mut intact = 0;
        for (_, ckpt) in checkpoints_newest_first(root) {
            if intact < keep {
                intact += usize::from(open_intact(&ckpt).is_ok());
            } else {
                std::fs::remove_dir_all(&ckpt).map_err(at(&ckpt))?;
            }
        }
        sync_dir(root).map_err(at(root))
    }

    /// Resumes from the checkpoint `dir/checkpoints/latest` points to. Everything is read and
    /// checked before anything changes: on error this trainer is left as it was.
    pub fn resume(&mut self, dir: &Path) -> Result<(), CheckpointError> {
        self.resume_with(dir, IfDamaged::Fail).map(|_| ())
    }

    /// [`Trainer::resume`], choosing per `if_damaged` when the newest checkpoint fails its
    /// manifest; returns the checkpoint folder it resumed from.
    pub fn resume_with(
        &mut self,
        dir: &Path,
        if_damaged: IfDamaged,
    ) -> Result<PathBuf, CheckpointError> {
        let LoadedRun {
            ckpt,
            state,
            model,
            ema,
            optimizer,
            predictor_optimizer,
        } = while_latest_moves(dir, || self.load_run(dir, if_damaged))?;
        self.model = model;
        self.ema = ema;
        self.optimizer = optimizer;
        self.dsv.set_optimizer(predictor_optimizer);
        self.step = state.step;
        self.history = state.history;
        self.lr_scale = state.lr_scale;
        // Each step logs once and a successful one ends a run of skips, so the trailing
        // skipped logs are the divergence guard's count.
        self.skipped_in_a_row = self.history.iter().rev().take_while(|l| l.skipped).count();
        Ok(ckpt)
    }

    /// Everything [`Trainer::resume_with`] reads, read and checked against this run.
    fn load_run(&self, dir: &Path, if_damaged: IfDamaged) -> Result<LoadedRun, CheckpointError> {
        let (ckpt, state) = read_checkpoint(dir, if_damaged)?;
        let ours = serde_json::to_value(&self.config.model).expect("config serialises");
        let theirs = serde_json::to_value(&state.config.model).expect("config serialises");
        if let Some((field, expected, found)) = first_difference("model", &ours, &theirs) {
            return Err(CheckpointError::Mismatch {
                field,
                expected,
                found,
            });
        }
        if state.config.data != self.config.data {
            return Err(CheckpointError::Mismatch {
                field: "data".into(),
                expected: format!("{:?}", self.config.data),
                found: format!("{:?}", state.config.data),
            });
        }
        if state.config.clip != self.config.clip {
            return Err(CheckpointError::Mismatch {
                field: "clip".into(),
                expected: format!("{:?}", self.config.clip),
                found: format!("{:?}", state.config.clip),
            });
        }
        if state.config.optimizer != self.config.optimizer {
            return Err(CheckpointError::Mismatch {
                field: "optimizer".into(),
                expected: format!("{:?}", self.config.optimizer),
                found: format!("{:?}", state.config.optimizer),
            });
        }
        let fresh = self.config.model.init(&self.device);
        let model = load_weights(fresh.clone(), &ckpt, "model.bpk")?;
        let ema = load_weights(fresh.valid(), &ckpt, "ema.bpk")?;
        let optimizer = if state.format < SHARDED_OPTIMIZER_FORMAT {
            DitOptimizer::load_unsharded(self.config.optimizer, &ckpt)
        } else {
            DitOptimizer::load(self.config.optimizer, &ckpt)
        };
        let optimizer =
            optimizer.map_err(|(file, e)| CheckpointError::Corrupt(file, e.to_string()))?;
        let pred_path = ckpt.join("predictor_optimizer.bpk");
        let bytes =
            std::fs::read(&pred_path).map_err(|e| CheckpointError::Io(pred_path.clone(), e))?;
        let predictor_optimizer = AdamWConfig::new()
            .with_weight_decay(0.0)
            .init()
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| CheckpointError::Corrupt(pred_path, e.to_string()))?;
        Ok(LoadedRun {
            ckpt,
            state,
            model,
            ema,
            optimizer,
            predictor_optimizer,
        })
    }
}

/// The first leaf where two JSON values differ: its dotted path under `prefix` and both
/// values (this run's, the checkpoint's).
fn first_difference(
    prefix: &str,
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
) -> Option<(String, String, String)> {
    differences(prefix, ours, theirs).into_iter().next()
}

/// Every leaf where two JSON values differ, in key order: its dotted path under `prefix` and
/// both values.
pub(super) fn differences(
    prefix: &str,
    ours: &serde_json::Value,
    theirs: &serde_json::Value,
) -> Vec<(String, String, String)> {
    use serde_json::Value;
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .flat_map(|k| {
                    let (x, y) = (
                        a.get(k).unwrap_or(&Value::Null),
                        b.get(k).unwrap_or(&Value::Null),
                    );
                    differences(&format!("{prefix}.{k}"), x, y)
                })
                .collect()
        }
        _ if ours == theirs => Vec::new(),
        _ => vec![(prefix.to_string(), brief(ours), brief(theirs))],
    }
}

/// A JSON value in at most about 100 characters.
fn brief(value: &serde_json::Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `module` with the weights of `ckpt/file`, refused when any is NaN or infinite.
fn load_weights(module: VideoDit, ckpt: &Path, file: &str) -> Result<VideoDit, CheckpointError> {
    let path = ckpt.join(file);
    let module = module
        .try_load_record(load_module_record(ckpt, file)?)
        .map_err(|e| CheckpointError::Corrupt(path.clone(), e.to_string()))?;
    match first_non_finite(&module, &[]) {
        Some(parameter) => Err(CheckpointError::NonFinite {
            file: path,
            parameter,
        }),
        None => Ok(module),
    }
}

/// The saved state of the checkpoint folder `ckpt`, after checking every file against its
/// manifest (formats that have one).
fn open_intact(ckpt: &Path) -> Result<SavedState, CheckpointError> {
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
            field: "format".into(),
            expected: format!("{OLDEST_FORMAT}..={FORMAT}"),
            found: format.format.to_string(),
        });
    }
    let state: SavedState = serde_json::from_slice(&bytes)
        .map_err(|e| CheckpointError::Corrupt(state_path.clone(), e.to_string()))?;
    if format.format >= MANIFEST_FORMAT {
        let manifest = Manifest::read(ckpt).map_err(|(p, why)| CheckpointError::Corrupt(p, why))?;
        manifest
            .verify(ckpt)
            .map_err(|(p, why)| CheckpointError::Corrupt(p, why))?;
        if manifest.step != state.step {
            return Err(CheckpointError::Corrupt(
                state_path,
                format!(
                    "step {} where the manifest says {}",
                    state.step, manifest.step
                ),
            ));
        }
    }
    Ok(state)
}

/// The checkpoint `dir/checkpoints/latest` points to (or a finished one newer than it) and its
/// saved state; when that one is damaged, per `if_damaged`, the newest intact one.
fn read_checkpoint(
    dir: &Path,
    if_damaged: IfDamaged,
) -> Result<(PathBuf, SavedState), CheckpointError> {
    let root = dir.join("checkpoints");
    let latest = root.join("latest");
    let name =
        std::fs::read_to_string(&latest).map_err(|e| CheckpointError::Io(latest.clone(), e))?;
    let name = name.trim();
    // `latest` names a folder beside it, never a path: another run's checkpoint (absolute or
    // `../`) is not this run's.
    let (ckpt, damage) = match step_of(name) {
        Some(latest_step) => {
            // A save killed between renaming its folder into place and replacing `latest`
            // left a finished checkpoint newer than `latest`: it is whole (its manifest says
            // so), use it.
            let newer = checkpoints_newest_first(&root)
                .into_iter()
                .take_while(|(step, _)| *step > latest_step)
                .find_map(|(_, path)| open_intact(&path).ok().map(|state| (path, state)));
            if let Some(found) = newer {
                return Ok(found);
            }
            let ckpt = root.join(name);
            // A link is not this run's checkpoint either, wherever it leads.
            let linked = std::fs::symlink_metadata(&ckpt).is_ok_and(|m| m.is_symlink());
            match open_intact(&ckpt) {
                _ if linked => (
                    ckpt.clone(),
                    (
                        ckpt,
                        "a symbolic link, not a checkpoint folder of this run".into(),
                    ),
                ),
                Ok(state) => return Ok((ckpt, state)),
                Err(CheckpointError::Corrupt(file, why)) => (ckpt, (file, why)),
                Err(CheckpointError::Io(file, e)) => (ckpt, (file, e.to_string())),
                Err(other) => return Err(other),
            }
        }
        None => (
            latest.clone(),
            (
                latest.clone(),
                format!("it names {name:?}, not a checkpoint folder of this run (step_NNNNNN)"),
            ),
        ),
    };
    let (file, why) = damage;
    let intact = checkpoints_newest_first(&root)
        .into_iter()
        .filter(|(_, path)| *path != ckpt)
        .find_map(|(_, path)| open_intact(&path).ok().map(|state| (path, state)));
    match (if_damaged, intact) {
        (IfDamaged::UseNewestIntact, Some(found)) => Ok(found),
        (_, intact) => Err(CheckpointError::Damaged {
            checkpoint: ckpt,
            file,
            why,
            newest_intact: intact.map(|(path, _)| path),
        }),
    }
}

/// The record of `ckpt/file`, read whole into memory first: Burn's file loader reads tensors
/// lazily, and a checkpoint pruned by a run writing beside this reader would vanish under it
/// (a panic deep in a tensor read instead of an error).
fn load_module_record(ckpt: &Path, file: &str) -> Result<ModuleRecord, CheckpointError> {
    let path = ckpt.join(file);
    let bytes = std::fs::read(&path).map_err(|e| CheckpointError::Io(path.clone(), e))?;
    ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(|e| CheckpointError::Corrupt(path, e.to_string()))
}

/// `load()`, again (up to three times) when it failed while `dir`'s `latest` moved: a run
/// writing beside this reader saved a newer checkpoint and pruned the one being read.
fn while_latest_moves<T>(
    dir: &Path,
    mut load: impl FnMut() -> Result<T, CheckpointError>,
) -> Result<T, CheckpointError> {
    let latest = dir.join("checkpoints").join("latest");
    let mut attempts = 0;
    loop {
        let before = std::fs::read(&latest).ok();
        match load() {
            Err(_) if attempts < 3 && std::fs::read(&latest).ok() != before => attempts += 1,
            result => return result,
        }
    }
}

/// The training configuration of the checkpoint that `dir/checkpoints/latest` points to
/// (per `if_damaged`, of the newest intact one).
pub fn saved_config(dir: &Path, if_damaged: IfDamaged) -> Result<TrainConfig, CheckpointError> {
    while_latest_moves(dir, || read_checkpoint(dir, if_damaged)).map(|(_, state)| state.config)
}

/// The EMA (sampling) weights and the training configuration of the checkpoint that
/// `dir/checkpoints/latest` points to (per `if_damaged`, of the newest intact one), on
/// `device` without autodiff: what a sampler needs, whatever attention the run trained with.
/// Every file is checked against the manifest, and NaN or infinite weights are refused.
pub fn load_for_sampling(
    dir: &Path,
    device: &Device,
    if_damaged: IfDamaged,
) -> Result<(VideoDit, TrainConfig), CheckpointError> {
    while_latest_moves(dir, || {
        let (ckpt, state) = read_checkpoint(dir, if_damaged)?;
        let model = load_weights(state.config.model.init(device), &ckpt, "ema.bpk")?;
        Ok((model, state.config))
    })
}
