//! Sink checkpoints, in an embedded transactional store (redb, `<queue>.redb` in
//! `SINK_STATE_DIR`): one write transaction per checkpoint holds the records changed since the
//! previous one, the event ids remembered since, the alerts raised since, and the rest of the
//! [`SinkCore`] (models, counters, aggregates, schemas, the stream offset) as one value. The
//! consumer acknowledges a message only after the transaction holding its effect committed
//! (fsync'd), so a `kill -9` at any moment leaves the last committed checkpoint, and its
//! messages come again. Commits record redb's allocator state ("quick repair"), so opening
//! after a crash does not walk the whole file: a restart is ready in a moment whatever the
//! number of records.

use std::path::{Path, PathBuf};

use redb::{Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use super::core::{ALERTS_KEPT, Alert, SinkCore};
use super::state::{RECORDS, StoreError};
use crate::error::SinkError;

/// The checkpoint's format and the core's value, as JSON.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The duplicate memory: each remembered event id's fingerprint, by its number.
const DEDUPE: TableDefinition<u64, u128> = TableDefinition::new("dedupe");
/// The latest alerts (JSON), by number.
const ALERTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alerts");

/// Bumped when the layout changes incompatibly. 4: the redb store (3 was the last JSON one).
const FORMAT: u32 = 4;

/// redb's page cache. Records are read once per change at most and the OS caches the file
/// too, so a small cache keeps the sink's memory flat however many records it holds.
const CACHE_BYTES: usize = 16 << 20;

/// The state store of one queue's sink.
pub struct CheckpointStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore").field("path", &self.path).finish()
    }
}

impl CheckpointStore {
    /// Open (or create) the store for `queue` in `dir`, creating `dir` if needed. Refuses the
    /// JSON checkpoint files of an older build, saying how to rebuild.
    pub fn open(dir: &Path, queue: &str) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|e| SinkError::StateDir(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("{queue}.redb"));
        let legacy = dir.join(format!("{queue}.checkpoint.json"));
        if legacy.exists() && !path.exists() {
            return Err(SinkError::Checkpoint(format!(
                "{} was written by an older mongo-cdc (JSON checkpoint files); this build keeps the sink's state in {} and cannot read them: to rebuild, move {queue}.checkpoint.json and {queue}.delta.*.json out of {}, start the sink, and let the bridge snapshot again (a new CDC_NAME, or its checkpoint removed, with CDC_SNAPSHOT_MODE=initial)",
                legacy.display(),
                path.display(),
                dir.display()
            )));
        }
        let error = |what: String| SinkError::Checkpoint(format!("{} {what}", path.display()));
        let db = Builder::new().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => {
                error("is open in another sink (one sink per queue and SINK_STATE_DIR)".into())
            }
            e => error(format!("cannot be opened ({e}); move it away to start over")),
        })?;
        // The tables exist from the start, so readers never meet a missing one.
        let created = (|| {
            let txn = db.begin_write()?;
            txn.open_table(META)?;
            txn.open_table(DEDUPE)?;
            txn.open_table(ALERTS)?;
            txn.open_table(RECORDS)?;
            txn.commit()?;
            Ok::<_, redb::Error>(())
        })();
        created.map_err(|e| error(format!("cannot be written: {e}")))?;
        Ok(Self { db, path })
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved core, if any, remembering `dedupe_window` event ids, its records read from
    /// this store.
    pub fn load(&self, dedupe_window: usize) -> Result<Option<SinkCore>, SinkError> {
        let loaded = (|| {
            let txn = self.db.begin_read().map_err(StoreError::from)?;
            let meta = txn.open_table(META).map_err(StoreError::from)?;
            let Some(format) = meta.get("format").map_err(StoreError::from)? else { return Ok(None) };
            let format = String::from_utf8_lossy(format.value()).into_owned();
            if format != FORMAT.to_string() {
                return Err(StoreError(format!(
                    "has format {format}, this build reads {FORMAT}; move it away to start over (the models learn again from what the queue delivers)"
                )));
            }
            let Some(core) = meta.get("core").map_err(StoreError::from)? else { return Ok(None) };
            let core: SinkCore = serde_json::from_slice(core.value())
                .map_err(|e| StoreError(format!("is unreadable ({e}); move it away to start over")))?;
            let mut core = core.restored(dedupe_window).map_err(StoreError)?;
            let ids = txn.open_table(DEDUPE).map_err(StoreError::from)?;
            let ids = ids.range(..).map_err(StoreError::from)?;
            let ids: Vec<u128> =
                ids.map(|r| r.map(|(_, v)| v.value())).collect::<Result<_, _>>().map_err(StoreError::from)?;
            let alerts = txn.open_table(ALERTS).map_err(StoreError::from)?;
            let mut kept = Vec::new();
            for row in alerts.range(..).map_err(StoreError::from)? {
                let (_, v) = row.map_err(StoreError::from)?;
                kept.push(serde_json::from_slice::<Alert>(v.value()).map_err(StoreError::from)?);
            }
            core.restore_memory(ids.into_iter(), kept.into_iter());
            core.attach_store(&self.db)?;
            Ok(Some(core))
        })();
        loaded.map_err(|e: StoreError| SinkError::Checkpoint(format!("{} {}", self.path.display(), e.0)))
    }

    /// Read and write `core`'s records through this store (a fresh core).
    pub fn attach(&self, core: &mut SinkCore) -> Result<(), SinkError> {
        core.attach_store(&self.db).map_err(|e| self.error(e))
    }

    /// Write what changed in `core` since the last checkpoint in one transaction, commit it,
    /// then mark the core saved (letting go of the records held only until now). If anything
    /// fails, nothing is marked and the next checkpoint writes it all again.
    pub fn save(&self, core: &mut SinkCore) -> Result<(), SinkError> {
        self.write(core).and_then(|()| core.attach_store(&self.db)).map_err(|e| self.error(e))?;
        core.mark_saved();
        Ok(())
    }

    fn write(&self, core: &SinkCore) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(StoreError::from)?;
        txn.set_quick_repair(true);
        core.records().write_changed(&txn)?;
        {
            let mut ids = txn.open_table(DEDUPE).map_err(StoreError::from)?;
            for (n, fp) in core.fresh_ids() {
                ids.insert(n, fp).map_err(StoreError::from)?;
            }
            let (keep, total) = core.dedupe_span();
            if total > keep {
                ids.retain_in(..total - keep, |_, _| false).map_err(StoreError::from)?;
            }
            let mut alerts = txn.open_table(ALERTS).map_err(StoreError::from)?;
            let (fresh, total) = core.numbered_alerts();
            let mut buf = Vec::new();
            for (n, a) in fresh {
                buf.clear();
                serde_json::to_writer(&mut buf, a).map_err(StoreError::from)?;
                alerts.insert(n, buf.as_slice()).map_err(StoreError::from)?;
            }
            let keep = ALERTS_KEPT as u64;
            if total > keep {
                alerts.retain_in(..total - keep, |_, _| false).map_err(StoreError::from)?;
            }
            let mut meta = txn.open_table(META).map_err(StoreError::from)?;
            let value = serde_json::to_vec(core).map_err(StoreError::from)?;
            meta.insert("format", FORMAT.to_string().as_bytes()).map_err(StoreError::from)?;
            meta.insert("core", value.as_slice()).map_err(StoreError::from)?;
        }
        txn.commit().map_err(StoreError::from)
    }

    fn error(&self, e: StoreError) -> SinkError {
        SinkError::Checkpoint(format!("{} {}", self.path.display(), e.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::{ModelKind, Task};
    use crate::sink::core::Outcome;
    use crate::sink::features::FeatureSpec;
    use crate::sink::spec::ModelSpec;
    use redb::ReadableTableMetadata;

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
            c.record("c", "k3").map(|r| (r.version, r.learned.clone(), r.doc.map(|d| d.get().to_string()))),
            c.alerts(),
            c.predict(Some("tree"), &serde_json::json!({"x": 3, "c": "v1"})).map(|p| p.prediction).ok(),
            c.live_records(Some("c")).unwrap(),
        ))
        .unwrap()
    }

    fn fresh(store: &CheckpointStore) -> SinkCore {
        let mut core = SinkCore::new(specs(), 1000).unwrap();
        store.attach(&mut core).unwrap();
        core
    }

    #[test]
    fn each_checkpoint_restores_the_same_state_and_lets_go_of_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "q").unwrap();
        assert!(store.load(1000).unwrap().is_none(), "a new store holds no checkpoint");
        let mut live = fresh(&store);
        let mut i = 0;
        for round in 0..12 {
            for _ in 0..(5 + round) {
                i += 1;
                assert!(matches!(live.apply_bytes(&event(i, i % 7)), Outcome::Applied { .. }));
            }
            assert!(live.records().held() > 0);
            store.save(&mut live).unwrap();
            assert_eq!(live.records().held(), 0, "after a checkpoint the records live in the store only");
            let mut back = store.load(1000).unwrap().expect("saved state");
            assert_eq!(snapshot(&back), snapshot(&live), "after round {round}");
            // A redelivery of the last event is recognised after the restart too.
            assert_eq!(back.apply_bytes(&event(i, i % 7)), Outcome::Duplicate);
        }
        // Reopened, as after a restart: the same.
        let before = snapshot(&live);
        drop(live);
        drop(store);
        let store = CheckpointStore::open(dir.path(), "q").unwrap();
        let mut back = store.load(1000).unwrap().unwrap();
        assert_eq!(snapshot(&back), before);
        // An older change of a stored record is stale; a new one applies to the stored version.
        assert_eq!(back.apply_bytes(&event(1, 1)), Outcome::Duplicate, "e1 is still remembered");
        let v = back.record("c", "k3").unwrap().version;
        assert!(matches!(back.apply_bytes(&event(i + 1, 3)), Outcome::Applied { .. }));
        assert_eq!(back.record("c", "k3").unwrap().version, v + 1);
    }

    #[test]
    fn the_duplicate_memory_and_the_alerts_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "q").unwrap();
        let mut core = SinkCore::new(specs(), 10).unwrap();
        store.attach(&mut core).unwrap();
        for i in 1..=95 {
            core.apply_bytes(&event(i, i));
            if i % 20 == 0 {
                store.save(&mut core).unwrap();
            }
        }
        store.save(&mut core).unwrap();
        let txn = store.db.begin_read().unwrap();
        let ids = txn.open_table(DEDUPE).unwrap();
        assert_eq!(ids.len().unwrap(), 10);
        assert_eq!(ids.first().unwrap().unwrap().0.value(), 85, "the newest ten, numbered from 0");
        let back = store.load(10).unwrap().unwrap();
        let mut back = back;
        assert_eq!(back.apply_bytes(&event(95, 95)), Outcome::Duplicate);
        assert_eq!(back.apply_bytes(&event(86, 86)), Outcome::Duplicate);
    }

    #[test]
    fn a_snapshot_end_reconciles_records_held_only_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "q").unwrap();
        let mut core = fresh(&store);
        for i in 1..=5 {
            core.apply_bytes(&event(i, i));
        }
        store.save(&mut core).unwrap();
        // Keys 1..=5 were last changed at t = 1..=5; a snapshot since t = 3 delivered 4 and 5.
        let end = r#"{"id":"s:1:c:end","op":"snapshot","ts_ms":9,"snapshot":{"id":"1","phase":"end","since":{"t":3,"i":1}},"source":{"db":"d","collection":"c","cluster_time":{"t":9,"i":1},"snapshot":"true"}}"#;
        assert_eq!(core.apply_bytes(end.as_bytes()), Outcome::Control);
        assert_eq!(core.stats().counters.reconciled_deletes, 3);
        assert_eq!(core.live_records(Some("c")).unwrap(), 2);
        store.save(&mut core).unwrap();
        let back = store.load(1000).unwrap().unwrap();
        assert!(back.record("c", "k2").unwrap().doc.is_none());
        assert!(back.record("c", "k5").unwrap().doc.is_some());
        assert_eq!(back.live_records(None).unwrap(), 2);
    }

    #[test]
    fn old_json_checkpoints_are_refused_with_one_line_saying_how_to_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("q.checkpoint.json"), r#"{"format": 3, "core": {}}"#).unwrap();
        let err = CheckpointStore::open(dir.path(), "q").unwrap_err().to_string();
        assert!(err.contains("older mongo-cdc") && err.contains("to rebuild"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_store_open_in_another_sink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = CheckpointStore::open(dir.path(), "q").unwrap();
        let err = CheckpointStore::open(dir.path(), "q").unwrap_err().to_string();
        assert!(err.contains("is open in another sink"), "{err}");
    }
}
