//! Sink checkpoints: the whole [`SinkCore`] as one file, replaced atomically (temp file,
//! fsync, rename, fsync of the directory), so a `kill -9` leaves the old or the new one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::core::SinkCore;
use crate::error::SinkError;

/// Bumped when the file layout changes incompatibly.
const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File<C> {
    format: u32,
    core: C,
}

/// The checkpoint file of one queue's sink.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    /// `<dir>/<queue>.checkpoint.json`; creates `dir` if needed.
    pub fn new(dir: &Path, queue: &str) -> Result<Self, SinkError> {
        fs::create_dir_all(dir).map_err(|e| SinkError::StateDir(format!("{}: {e}", dir.display())))?;
        Ok(Self { path: dir.join(format!("{queue}.checkpoint.json")) })
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved core, if any.
    pub fn load(&self) -> Result<Option<SinkCore>, SinkError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SinkError::Checkpoint(format!("cannot read {}: {e}", self.path.display()))),
        };
        let file: File<SinkCore> = serde_json::from_slice(&bytes).map_err(|e| {
            SinkError::Checkpoint(format!("{} is unreadable ({e}); move it away to start over", self.path.display()))
        })?;
        if file.format != FORMAT {
            return Err(SinkError::Checkpoint(format!(
                "{} has format {}, this build reads {FORMAT}; move it away to start over",
                self.path.display(),
                file.format
            )));
        }
        Ok(Some(file.core))
    }

    /// Serialise `core` (cheap relative to the write; done while the caller holds its lock).
    pub fn encode(core: &SinkCore) -> Vec<u8> {
        serde_json::to_vec(&File { format: FORMAT, core }).expect("the core serialises")
    }

    /// Replace the checkpoint with `bytes` atomically and durably.
    pub fn write(&self, bytes: &[u8]) -> Result<(), SinkError> {
        let tmp = self.path.with_extension("json.tmp");
        let io = |e: std::io::Error| SinkError::Checkpoint(format!("cannot write {}: {e}", self.path.display()));
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }
}
