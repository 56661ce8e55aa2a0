//! A training run's output folder: owned by one run at a time, checked writable before any
//! work, and cleared of what killed saves left behind.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use super::storage::write_synced;

/// How a run may use a folder that already holds files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// A new run: the folder must be empty or absent.
    Fresh,
    /// Continue the run whose checkpoints the folder holds.
    Resume,
    /// A new run over an old one: its `checkpoints/` and `samples/` are deleted first.
    Overwrite,
}

/// Why a run cannot use its folder. No earlier run's file was changed and nothing was left
/// behind (`Overwrite` may have deleted part of what it deletes).
#[derive(Debug)]
pub enum RunDirError {
    /// Another process holds the folder's lock.
    Locked(PathBuf),
    /// A fresh run into a folder that holds files.
    NotEmpty(PathBuf, Vec<String>),
    /// The folder (or a file in it) cannot be created or written.
    NotWritable(PathBuf, std::io::Error),
}

impl std::fmt::Display for RunDirError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Locked(path) => write!(
                f,
                "run folder {} is in use by another run (it holds {})",
                path.parent().unwrap_or(path).display(),
                path.display()
            ),
            Self::NotEmpty(path, names) => write!(
                f,
                "run folder {} is not empty (it holds {}); resume that run or start over \
                 explicitly",
                path.display(),
                names.join(", ")
            ),
            Self::NotWritable(path, e) => write!(f, "cannot write to {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for RunDirError {}

/// The lock file inside a run folder.
const LOCK: &str = ".lock";

/// A run folder this process owns: an advisory lock on `.lock` is held until the value is
/// dropped (or the process ends, however it ends).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// Takes `path` for a run: creates it, takes its lock (failing at once if another run
    /// holds it), checks it per `mode`, proves it writable, and removes the temporary files
    /// and half-written checkpoint folders of killed saves and writes. Returns the folder and
    /// what was removed. A refused folder is left as it was found: the lock file and the
    /// folder are removed again when this call created them.
    pub fn open(path: &Path, mode: RunMode) -> Result<(Self, Vec<PathBuf>), RunDirError> {
        let created_dir = !path.exists();
        std::fs::create_dir_all(path).map_err(not_writable(path))?;
        let lock_path = path.join(LOCK);
        let created_lock = !lock_path.exists();
        let opened = Self::lock_and_prepare(path, &lock_path, mode);
        if opened.is_err() {
            if created_lock {
                let _ = std::fs::remove_file(&lock_path);
            }
            if created_dir {
                // Only if still empty: nothing of anyone else's is removed.
                let _ = std::fs::remove_dir(path);
            }
        }
        opened
    }

    fn lock_and_prepare(
        path: &Path,
        lock_path: &Path,
        mode: RunMode,
    ) -> Result<(Self, Vec<PathBuf>), RunDirError> {
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path)
            .map_err(not_writable(lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(RunDirError::Locked(lock_path.to_path_buf()));
            }
            Err(TryLockError::Error(e)) => {
                return Err(RunDirError::NotWritable(lock_path.to_path_buf(), e));
            }
        }
        let others: Vec<String> = std::fs::read_dir(path)
            .map_err(not_writable(path))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != LOCK && !is_killed_write(n))
            // What a run killed before its first checkpoint leaves.
            .filter(|n| {
                let dir = path.join(n);
                !match n.as_str() {
                    "checkpoints" => holds_only(&dir, is_temporary),
                    "samples" => holds_only(&dir, is_killed_write),
                    _ => false,
                }
            })
            .collect();
        match mode {
            RunMode::Fresh if !others.is_empty() => {
                let mut names = others;
                names.sort();
                return Err(RunDirError::NotEmpty(path.to_path_buf(), names));
            }
            RunMode::Overwrite => {
                for sub in RUN_SUBFOLDERS {
                    let dir = path.join(sub);
                    if dir.exists() {
                        std::fs::remove_dir_all(&dir).map_err(not_writable(&dir))?;
                    }
                }
            }
            _ => {}
        }
        let checkpoints = path.join("checkpoints");
        std::fs::create_dir_all(&checkpoints).map_err(not_writable(&checkpoints))?;
        for dir in [path, checkpoints.as_path()] {
            let probe = dir.join(".write-probe");
            write_synced(&probe, b"probe").map_err(not_writable(&probe))?;
            std::fs::remove_file(&probe).map_err(not_writable(&probe))?;
        }
        let mut removed = remove_leftovers(&checkpoints).map_err(not_writable(&checkpoints))?;
        for dir in [path.to_path_buf(), path.join("samples")] {
            removed.extend(remove_temporary_files(&dir).map_err(not_writable(&dir))?);
        }
        removed.sort();
        Ok((
            Self {
                path: path.to_path_buf(),
                _lock: lock,
            },
            removed,
        ))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The folders a run writes below its own; `Overwrite` deletes them.
const RUN_SUBFOLDERS: [&str; 2] = ["checkpoints", "samples"];

fn not_writable(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + use<> {
    let path = path.to_path_buf();
    move |e| RunDirError::NotWritable(path, e)
}

/// The temporary file of an atomic write ([`write_atomically`](super::write_atomically)),
/// left by a kill: the only leftover in the run folder and `samples/`.
fn is_killed_write(name: &str) -> bool {
    name.starts_with(".tmp-")
}

/// A temporary file a killed save leaves in `checkpoints/`: an atomic write's, or one of
/// Burn's record writers (`*.tmp`).
fn is_temporary(name: &str) -> bool {
    is_killed_write(name) || name.ends_with(".tmp")
}

/// `path` is a folder holding only files that `leftover` names (what a kill leaves).
fn holds_only(path: &Path, leftover: fn(&str) -> bool) -> bool {
    std::fs::read_dir(path).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).all(|e| {
            e.file_type().is_ok_and(|t| t.is_file()) && leftover(&e.file_name().to_string_lossy())
        })
    })
}

/// Removes the temporary files directly in `dir` (absent: nothing).
fn remove_temporary_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(removed);
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name().to_str().is_some_and(is_killed_write) {
            std::fs::remove_file(entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Removes what interrupted saves leave under `checkpoints`: staging folders (`.step_*`),
/// temporary files (`.tmp-*`, Burn's `*.tmp`), also inside finished checkpoints.
fn remove_leftovers(checkpoints: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(checkpoints)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            if name.starts_with(".step_") {
                std::fs::remove_dir_all(&path)?;
                removed.push(path);
            } else {
                for inner in std::fs::read_dir(&path)? {
                    let inner = inner?;
                    if is_temporary(&inner.file_name().to_string_lossy()) {
                        std::fs::remove_file(inner.path())?;
                        removed.push(inner.path());
                    }
                }
            }
        } else if is_temporary(&name) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}
