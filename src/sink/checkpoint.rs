//! Sink checkpoints: a full snapshot of the [`SinkCore`] plus small deltas written after it.
//!
//! Each file is replaced or created atomically (temp file, fsync, rename, fsync of the
//! directory), so a `kill -9` leaves either the old or the new state. A delta holds only
//! the records changed since the previous write, the new event-id fingerprints, and the
//! (small) model and counters; so a write costs what changed, not everything held. Once the
//! deltas add up to the size of the snapshot, a new snapshot replaces them.
//!
//! Files in `SINK_STATE_DIR`: `<queue>.checkpoint.json` (the snapshot, with the sequence
//! number of the last delta it contains) and `<queue>.delta.<seq>.json`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::core::{Delta, SinkCore};
use crate::error::SinkError;

/// Bumped when the file layout changes incompatibly.
const FORMAT: u32 = 2;

/// Deltas are folded into a new snapshot once they add up to this share of its size.
const COMPACT_AT: f64 = 1.0;

#[derive(Serialize, Deserialize)]
struct File<C> {
    format: u32,
    core: C,
}

/// The checkpoint files of one queue's sink.
#[derive(Debug)]
pub struct CheckpointFile {
    dir: PathBuf,
    snapshot: PathBuf,
    prefix: String,
    snapshot_bytes: u64,
    delta_bytes: u64,
}

impl CheckpointFile {
    /// The files for `queue` in `dir`; creates `dir` if needed.
    pub fn new(dir: &Path, queue: &str) -> Result<Self, SinkError> {
        fs::create_dir_all(dir).map_err(|e| SinkError::StateDir(format!("{}: {e}", dir.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            snapshot: dir.join(format!("{queue}.checkpoint.json")),
            prefix: format!("{queue}.delta."),
            snapshot_bytes: 0,
            delta_bytes: 0,
        })
    }

    /// Where the snapshot lives.
    pub fn path(&self) -> &Path {
        &self.snapshot
    }

    /// The saved core (the snapshot with its later deltas applied), if any.
    pub fn load(&mut self) -> Result<Option<SinkCore>, SinkError> {
        let bytes = match fs::read(&self.snapshot) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(&self.snapshot, format!("cannot read it: {e}"))),
        };
        self.snapshot_bytes = bytes.len() as u64;
        let file: File<SinkCore> = serde_json::from_slice(&bytes).map_err(|e| self.unreadable(&self.snapshot, e))?;
        self.check_format(&self.snapshot, file.format)?;
        let mut core = file.core;
        for (seq, path) in self.deltas()? {
            if seq <= core.seq() {
                let _ = fs::remove_file(&path); // already folded into the snapshot
                continue;
            }
            if seq != core.seq() + 1 {
                return Err(self.error(
                    &path,
                    format!("expected delta {} next; move the state away to start over", core.seq() + 1),
                ));
            }
            let bytes = fs::read(&path).map_err(|e| self.error(&path, format!("cannot read it: {e}")))?;
            self.delta_bytes += bytes.len() as u64;
            let file: File<Delta> = serde_json::from_slice(&bytes).map_err(|e| self.unreadable(&path, e))?;
            self.check_format(&path, file.format)?;
            core.apply_delta(file.core);
        }
        Ok(Some(core))
    }

    /// Persist what changed in `core` since the last save (or everything, when the deltas
    /// have grown to the snapshot's size), then mark it saved.
    pub fn save(&mut self, core: &mut SinkCore) -> Result<(), SinkError> {
        let seq = core.seq() + 1;
        if self.delta_bytes as f64 >= self.snapshot_bytes as f64 * COMPACT_AT {
            core.set_seq(seq);
            let written = self.write_atomically(&self.snapshot.clone(), |w| {
                serde_json::to_writer(w, &File { format: FORMAT, core: &*core })
            });
            match written {
                Ok(n) => {
                    self.snapshot_bytes = n;
                    self.delta_bytes = 0;
                    for (old, path) in self.deltas()? {
                        if old <= seq {
                            let _ = fs::remove_file(path);
                        }
                    }
                }
                Err(e) => {
                    core.set_seq(seq - 1);
                    return Err(e);
                }
            }
        } else {
            let path = self.dir.join(format!("{}{seq:020}.json", self.prefix));
            let delta = core.delta(seq);
            let n =
                self.write_atomically(&path, |w| serde_json::to_writer(w, &File { format: FORMAT, core: &delta }))?;
            self.delta_bytes += n;
            core.set_seq(seq);
        }
        core.mark_saved();
        Ok(())
    }

    /// Write through a temp file, fsync, rename, fsync the directory; returns the size.
    fn write_atomically(
        &self,
        path: &Path,
        write: impl FnOnce(&mut BufWriter<&fs::File>) -> Result<(), serde_json::Error>,
    ) -> Result<u64, SinkError> {
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| self.error(path, format!("cannot write it: {e}"));
        let f = fs::File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, &f);
        write(&mut w).map_err(|e| self.error(path, format!("cannot encode it: {e}")))?;
        w.flush().map_err(io)?;
        drop(w);
        f.sync_all().map_err(io)?;
        let n = f.metadata().map_err(io)?.len();
        drop(f);
        fs::rename(&tmp, path).map_err(io)?;
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(n)
    }

    /// Delta files, by sequence number.
    fn deltas(&self) -> Result<Vec<(u64, PathBuf)>, SinkError> {
        let entries =
            fs::read_dir(&self.dir).map_err(|e| SinkError::StateDir(format!("{}: {e}", self.dir.display())))?;
        let mut out: Vec<(u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name.strip_prefix(&self.prefix)?.strip_suffix(".json")?.parse().ok()?;
                Some((seq, e.path()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    fn check_format(&self, path: &Path, format: u32) -> Result<(), SinkError> {
        if format == FORMAT {
            return Ok(());
        }
        Err(self.error(path, format!("has format {format}, this build reads {FORMAT}; move it away to start over")))
    }

    fn unreadable(&self, path: &Path, e: serde_json::Error) -> SinkError {
        self.error(path, format!("is unreadable ({e}); move it away to start over"))
    }

    fn error(&self, path: &Path, what: String) -> SinkError {
        SinkError::Checkpoint(format!("{} {what}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{ModelConfig, OnlineModel, Task};
    use crate::sink::core::Spec;

    fn core() -> SinkCore {
        let spec = Spec { features: vec!["x".into()], label: "y".into(), collections: vec![] };
        SinkCore::new(spec, OnlineModel::new(ModelConfig::new(Task::Classification), 1).unwrap(), 1000)
    }

    fn event(i: u32, key: u32) -> Vec<u8> {
        format!(
            r#"{{"id":"e{i}","op":"c","key":"k{key}","after":{{"x":{i},"y":{}}},"source":{{"db":"d","collection":"c","cluster_time":{{"t":{i},"i":1}}}},"ts_ms":1}}"#,
            i.is_multiple_of(2)
        )
        .into_bytes()
    }

    fn snapshot(c: &SinkCore) -> String {
        serde_json::to_string(&(
            c.stats().counters,
            c.stats().records,
            c.stats().model.trained,
            c.record("c", "k3").map(|r| r.version),
        ))
        .unwrap()
    }

    #[test]
    fn deltas_and_compaction_restore_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = CheckpointFile::new(dir.path(), "q").unwrap();
        let mut live = core();
        let mut i = 0;
        for round in 0..12 {
            for _ in 0..(5 + round) {
                i += 1;
                live.apply_bytes(&event(i, i % 7));
            }
            file.save(&mut live).unwrap();
            let mut reopened = CheckpointFile::new(dir.path(), "q").unwrap();
            let back = reopened.load().unwrap().expect("saved state");
            assert_eq!(snapshot(&back), snapshot(&live), "after round {round}");
            assert_eq!(back.seq(), live.seq());
            // A redelivery of the last event is recognised after the restart too.
            let mut back = back;
            assert!(matches!(back.apply_bytes(&event(i, i % 7)), crate::sink::core::Outcome::Duplicate));
        }
        let deltas = file.deltas().unwrap();
        assert!(deltas.len() < 12, "compaction folded deltas into the snapshot: {deltas:?}");
        assert!(deltas.iter().all(|(seq, _)| *seq > 1));
    }
}
