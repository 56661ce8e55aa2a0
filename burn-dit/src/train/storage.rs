//! Files that are either whole or absent: synced writes, atomic replacement, and the manifest
//! that lets a checkpoint prove it is intact.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Name of the manifest inside a checkpoint folder.
pub(crate) const MANIFEST: &str = "manifest.json";

/// Writes `bytes` to `path` and flushes them to the disk before returning.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a file someone else wrote (Burn's record writers) to the disk.
pub(crate) fn sync_file(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Flushes a folder's entries (new names, renames) to the disk.
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Replaces `path` by `bytes` atomically (see [`write_atomically`]).
pub(crate) fn replace_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically(path, |file| file.write_all(bytes))
}

/// Writes the file `path` whole or not at all: `write` fills a temporary file (`.tmp-*`) in
/// the same folder, which is synced and renamed over `path`, and the folder is synced. A kill,
/// a full disk or an error from `write` leaves the previous file (or none) in place; a
/// reader sees the old content or the new, never a mix. Only a kill leaves the temporary file
/// behind ([`RunDir::open`](super::RunDir::open) removes those of a run folder).
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    {
        let mut buffered = std::io::BufWriter::new(tmp.as_file_mut());
        write(&mut buffered)?;
        buffered.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// One file of a checkpoint as it was written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// What a checkpoint folder holds: every file's size and SHA-256, and what the checkpoint is.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    pub step: usize,
    pub config: serde_json::Value,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Describes every file in `dir` (sorted by name; the manifest itself excluded).
    pub fn describe(
        dir: &Path,
        format: u32,
        step: usize,
        config: serde_json::Value,
    ) -> std::io::Result<Self> {
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n != MANIFEST)
            .collect();
        names.sort();
        let files = names
            .into_iter()
            .map(|name| {
                let (size, sha256) = digest(&dir.join(&name))?;
                Ok(FileEntry { name, size, sha256 })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self {
            format,
            step,
            config,
            files,
        })
    }

    /// Reads `dir`'s manifest.
    pub fn read(dir: &Path) -> Result<Self, (PathBuf, String)> {
        let path = dir.join(MANIFEST);
        let bytes = std::fs::read(&path).map_err(|e| (path.clone(), e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| (path, e.to_string()))
    }

    /// Checks every listed file's size and checksum; the first file that differs and how.
    pub fn verify(&self, dir: &Path) -> Result<(), (PathBuf, String)> {
        for entry in &self.files {
            let path = dir.join(&entry.name);
            let (size, sha256) = digest(&path).map_err(|e| (path.clone(), e.to_string()))?;
            if size != entry.size {
                return Err((
                    path,
                    format!("{size} bytes where the manifest says {}", entry.size),
                ));
            }
            if sha256 != entry.sha256 {
                return Err((path, "its SHA-256 differs from the manifest's".into()));
            }
        }
        Ok(())
    }
}

/// Size and hex SHA-256 of a file, read in 1 MiB pieces.
fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok((size, hex))
}
