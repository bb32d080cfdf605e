//! Sink checkpoints: a full snapshot of the [`SinkCore`] plus small deltas written after it.
//!
//! Each file is replaced or created atomically (temp file, fsync, rename, fsync of the
//! directory), so a `kill -9` leaves either the old or the new state. A delta holds only
//! the records changed since the previous write, the new event-id fingerprints and alerts,
//! and the models (with their category dictionaries) and counters; so a write costs what
//! changed and the models, not every record held. Once the deltas add up to the size of the
//! snapshot, a new snapshot replaces them.
//!
//! Files in `SINK_STATE_DIR`: `<queue>.checkpoint.json` (the snapshot, with the sequence
//! number of the last delta it contains) and `<queue>.delta.<seq>.json`.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::core::{Delta, SinkCore};
use crate::error::SinkError;

/// Bumped when the file layout changes incompatibly. 3: several models with typed features,
/// category dictionaries and drift alerts.
const FORMAT: u32 = 3;

/// Deltas are folded into a new snapshot once they add up to this share of its size.
const COMPACT_AT: f64 = 1.0;

#[derive(Serialize, Deserialize)]
struct File<C> {
    format: u32,
    core: C,
}

/// A file's format, read before the rest so an old file gets its own message.
#[derive(Deserialize)]
struct Format {
    format: u32,
}

/// The checkpoint files of one queue's sink.
#[derive(Debug)]
pub struct CheckpointFile {
    dir: PathBuf,
    snapshot: PathBuf,
    prefix: String,
    snapshot_bytes: u64,
    delta_bytes: u64,
    /// A write failed after the state was marked saved: the next write is a full snapshot.
    force_full: bool,
}

/// A checkpoint encoded into its temp file, to be made durable by [`CheckpointFile::finish`].
#[derive(Debug)]
pub struct Written {
    file: fs::File,
    tmp: PathBuf,
    path: PathBuf,
    seq: u64,
    full: bool,
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
            force_full: false,
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
        self.check_format(&self.snapshot, &bytes)?;
        let file: File<SinkCore> = serde_json::from_slice(&bytes).map_err(|e| self.unreadable(&self.snapshot, e))?;
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
            self.check_format(&path, &bytes)?;
            let file: File<Delta> = serde_json::from_slice(&bytes).map_err(|e| self.unreadable(&path, e))?;
            core.apply_delta(file.core);
        }
        Ok(Some(core))
    }

    /// Persist what changed in `core` since the last save (or everything, when the deltas
    /// have grown to the snapshot's size), then mark it saved: [`Self::begin`], then
    /// [`Self::finish`].
    pub fn save(&mut self, core: &mut SinkCore) -> Result<(), SinkError> {
        let written = self.begin(core)?;
        self.finish(written)
    }

    /// The part of a save that needs the state: encode what changed into a temp file (into
    /// the page cache, no fsync) and mark it saved. The caller can then let go of the state
    /// and [`Self::finish`] (the fsync, the slow part) without it. If finishing fails, the
    /// next save writes a full snapshot, which holds everything marked saved meanwhile.
    pub fn begin(&mut self, core: &mut SinkCore) -> Result<Written, SinkError> {
        let seq = core.seq() + 1;
        let full = self.force_full || self.delta_bytes as f64 >= self.snapshot_bytes as f64 * COMPACT_AT;
        let path = if full { self.snapshot.clone() } else { self.dir.join(format!("{}{seq:020}.json", self.prefix)) };
        let tmp = path.with_extension("json.tmp");
        let io = |e: std::io::Error| self.error(&path, format!("cannot write it: {e}"));
        let f = fs::File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, &f);
        let encoded = if full {
            core.set_seq(seq);
            let r = serde_json::to_writer(&mut w, &File { format: FORMAT, core: &*core });
            if r.is_err() {
                core.set_seq(seq - 1);
            }
            r
        } else {
            let r = serde_json::to_writer(&mut w, &File { format: FORMAT, core: &core.delta(seq) });
            if r.is_ok() {
                core.set_seq(seq);
            }
            r
        };
        encoded.map_err(|e| self.error(&path, format!("cannot encode it: {e}")))?;
        w.flush().map_err(io)?;
        drop(w);
        core.mark_saved();
        Ok(Written { file: f, tmp, path, seq, full })
    }

    /// The part of a save that does not need the state: fsync the temp file, rename it into
    /// place, fsync the directory; drop the deltas a new snapshot folded in.
    pub fn finish(&mut self, w: Written) -> Result<(), SinkError> {
        let Written { file, tmp, path, seq, full } = w;
        let done = (|| {
            let io = |e: std::io::Error| self.error(&path, format!("cannot write it: {e}"));
            file.sync_all().map_err(io)?;
            let n = file.metadata().map_err(io)?.len();
            drop(file);
            fs::rename(&tmp, &path).map_err(io)?;
            fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok::<u64, SinkError>(n)
        })();
        match done {
            Ok(n) if full => {
                (self.snapshot_bytes, self.delta_bytes, self.force_full) = (n, 0, false);
                for (old, path) in self.deltas()? {
                    if old <= seq {
                        let _ = fs::remove_file(path);
                    }
                }
                Ok(())
            }
            Ok(n) => {
                self.delta_bytes += n;
                Ok(())
            }
            Err(e) => {
                self.force_full = true;
                Err(e)
            }
        }
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

    fn check_format(&self, path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
        let format = serde_json::from_slice::<Format>(bytes).map_err(|e| self.unreadable(path, e))?.format;
        if format == FORMAT {
            return Ok(());
        }
        Err(self.error(
            path,
            format!(
                "has format {format}, this build reads {FORMAT} (several models, typed features, drift alerts); move `{}` away to start over (the models learn again from what the queue delivers)",
                self.dir.display()
            ),
        ))
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
    use crate::ml::{ModelKind, Task};
    use crate::sink::features::FeatureSpec;
    use crate::sink::spec::ModelSpec;

    fn specs() -> Vec<ModelSpec> {
        let f = |list: &[&str]| list.iter().map(|f| FeatureSpec::parse(f).unwrap()).collect();
        let tree = ModelSpec {
            name: "tree".into(),
            params: serde_json::json!({"grace_period": 10}),
            ..ModelSpec::single(
                Task::Classification,
                ModelKind::HoeffdingTree,
                f(&["x", "c:category"]),
                "y".into(),
                vec![],
            )
        };
        vec![
            ModelSpec::single(Task::Classification, ModelKind::Linear, f(&["x", "c:category"]), "y".into(), vec![]),
            tree,
        ]
    }

    fn core() -> SinkCore {
        SinkCore::new(specs(), 1000).unwrap().restored(1000).unwrap()
    }

    fn event(i: u32, key: u32) -> Vec<u8> {
        format!(
            r#"{{"id":"e{i}","op":"c","key":"k{key}","after":{{"x":{i},"c":"v{}","y":{}}},"source":{{"db":"d","collection":"c","cluster_time":{{"t":{i},"i":1}}}},"ts_ms":1}}"#,
            i % 5,
            i.is_multiple_of(2)
        )
        .into_bytes()
    }

    fn snapshot(c: &SinkCore) -> String {
        let s = c.stats();
        serde_json::to_string(&(
            s.counters,
            s.records,
            s.models,
            c.record("c", "k3").map(|r| (r.version, r.learned.clone())),
            c.alerts(),
            c.predict(Some("tree"), &serde_json::json!({"x": 3, "c": "v1"})).map(|p| p.prediction).ok(),
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
            let back = reopened.load().unwrap().expect("saved state").restored(1000).unwrap();
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

    #[test]
    fn an_older_format_is_refused_with_one_line_saying_how_to_start_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("q.checkpoint.json"), r#"{"format": 2, "core": {"spec": {}}}"#).unwrap();
        let err = CheckpointFile::new(dir.path(), "q").unwrap().load().unwrap_err().to_string();
        assert!(err.contains("has format 2, this build reads 3") && err.contains("away to start over"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}
