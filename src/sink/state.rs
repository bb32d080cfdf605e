//! The sink's records (documents and tombstones), each ordered by a source-neutral
//! [`Position`]: held in memory only while they are read or changed between two checkpoints,
//! and otherwise in the `records` table of the state store (redb), which the checkpoint
//! writes (see [`super::checkpoint`]). Without a store (unit tests, the in-process benchmark)
//! every record stays in memory.

use std::collections::HashMap;
use std::fmt;

use foldhash::fast::RandomState;
use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use smallvec::SmallVec;

use super::decode::Position;

/// Every record, keyed `collection \0 key` (a collection name never holds a NUL, so the
/// first one splits them), as its JSON.
pub(super) const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// The current state of one record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The document, as the JSON it arrived in; `None` once deleted (a tombstone).
    pub doc: Option<Box<RawValue>>,
    /// 1 for the insert, +1 for every later change (deletes included).
    pub version: u64,
    /// Id of the last event applied.
    pub last_id: String,
    /// `ts_ms` of the last event applied.
    pub ts_ms: i64,
    /// Source position of the last event applied (a cluster time for our own messages);
    /// older events are stale. Named `cluster_time` in the store and `/records`.
    #[serde(rename = "cluster_time")]
    pub position: Position,
    /// Per model (in configuration order), the fingerprint of the sample it last learned
    /// from this key; 0 for none. Cleared by a delete. Inline for one model: no allocation.
    #[serde(default, skip_serializing_if = "SmallVec::is_empty")]
    pub learned: SmallVec<[u64; 1]>,
    /// Changed since the last checkpoint.
    #[serde(skip)]
    pub(super) dirty: bool,
}

impl Record {
    /// A record about to take its first event, at `position`.
    pub(super) fn new(position: Position) -> Self {
        Self {
            doc: None,
            version: 0,
            last_id: String::new(),
            ts_ms: 0,
            position,
            learned: SmallVec::new(),
            dirty: true,
        }
    }
}

/// A record as the mirrors write it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Collection or table.
    pub collection: String,
    /// Key.
    pub key: String,
    /// The document as JSON text; `None` once deleted.
    pub doc: Option<String>,
    /// The record's version: a mirror never replaces a higher one.
    pub version: u64,
}

impl Row {
    pub(super) fn of(collection: &str, key: &str, r: &Record) -> Self {
        Self {
            collection: collection.to_string(),
            key: key.to_string(),
            doc: r.doc.as_ref().map(|d| d.get().to_string()),
            version: r.version,
        }
    }
}

/// The state store could not be read or written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

impl StoreError {
    pub(super) fn from(e: impl fmt::Display) -> Self {
        Self(e.to_string())
    }
}

type Map<V> = HashMap<String, V, RandomState>;

/// The records: those held in memory, over those in the store.
#[derive(Default)]
pub struct Records {
    /// Read or changed since the last checkpoint (with no store: every record).
    held: Map<Map<Record>>,
    store: Option<Reader>,
}

/// A read view of the store's records as of the last checkpoint, renewed after each one.
struct Reader {
    table: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl fmt::Debug for Records {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Records").field("held", &self.held()).field("store", &self.store.is_some()).finish()
    }
}

fn store_key(collection: &str, key: &str) -> String {
    let mut k = String::with_capacity(collection.len() + key.len() + 1);
    k.push_str(collection);
    k.push('\0');
    k.push_str(key);
    k
}

/// A store key back into its collection and key ([`store_key`]'s inverse).
fn split_key(k: &str) -> (&str, &str) {
    k.split_once('\0').unwrap_or((k, ""))
}

fn decode(bytes: &[u8]) -> Result<Record, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError(format!("a record is unreadable: {e}")))
}

/// The store keys of `collection`'s records: from `collection\0` up to (not including)
/// `collection\u{1}`.
fn collection_keys(collection: &str) -> (String, String) {
    (store_key(collection, ""), format!("{collection}\u{1}"))
}

impl Records {
    /// Read through `db` (whose `records` table exists) as it is now committed: after
    /// loading, and after each checkpoint.
    pub(super) fn attach(&mut self, db: &Database) -> Result<(), StoreError> {
        let table = db.begin_read().map_err(StoreError::from)?.open_table(RECORDS).map_err(StoreError::from)?;
        self.store = Some(Reader { table });
        Ok(())
    }

    /// The stored record, if there is a store and it has one.
    fn stored(&self, collection: &str, key: &str) -> Result<Option<Record>, StoreError> {
        let Some(store) = &self.store else { return Ok(None) };
        let got = store.table.get(store_key(collection, key).as_str()).map_err(StoreError::from)?;
        got.map(|b| decode(b.value())).transpose()
    }

    /// Hold `collection`/`key` in memory if the store has it, so [`Self::get`] and
    /// [`Self::get_mut`] see it.
    pub(super) fn fetch(&mut self, collection: &str, key: &str) -> Result<(), StoreError> {
        if self.store.is_none() || self.get(collection, key).is_some() {
            return Ok(());
        }
        if let Some(rec) = self.stored(collection, key)? {
            self.held
                .entry(collection.to_string())
                .or_default()
                .insert(key.to_string(), Record { dirty: false, ..rec });
        }
        Ok(())
    }

    /// A held record (see [`Self::fetch`]).
    pub(super) fn get(&self, collection: &str, key: &str) -> Option<&Record> {
        self.held.get(collection)?.get(key)
    }

    /// A held record, to change (mark it dirty).
    pub(super) fn get_mut(&mut self, collection: &str, key: &str) -> Option<&mut Record> {
        self.held.get_mut(collection)?.get_mut(key)
    }

    /// The held record, created at `position` if there is none.
    pub(super) fn entry(&mut self, collection: &str, key: &str, position: Position) -> &mut Record {
        // Looked up before inserting, so the hot path allocates no owned names.
        if !self.held.contains_key(collection) {
            self.held.insert(collection.to_string(), Map::default());
        }
        let coll = self.held.get_mut(collection).expect("inserted above");
        if !coll.contains_key(key) {
            coll.insert(key.to_string(), Record::new(position));
        }
        coll.get_mut(key).expect("inserted above")
    }

    /// One record, held or stored.
    pub(super) fn read(&self, collection: &str, key: &str) -> Result<Option<Record>, StoreError> {
        match self.get(collection, key) {
            Some(r) => Ok(Some(r.clone())),
            None => self.stored(collection, key),
        }
    }

    /// Hold every record of `collection` for which `pick` holds, and change each with `change`
    /// (marking it dirty); how many changed. Stored records are read one at a time, so only
    /// the picked ones stay in memory.
    pub(super) fn change_where(
        &mut self,
        collection: &str,
        pick: impl Fn(&Record) -> bool,
        mut change: impl FnMut(&mut Record),
    ) -> Result<u64, StoreError> {
        if let Some(store) = &self.store {
            let (from, to) = collection_keys(collection);
            let range = store.table.range(from.as_str()..to.as_str()).map_err(StoreError::from)?;
            let held = self.held.entry(collection.to_string()).or_default();
            for item in range {
                let (k, v) = item.map_err(StoreError::from)?;
                let key = &k.value()[collection.len() + 1..];
                if held.contains_key(key) {
                    continue;
                }
                let rec = decode(v.value())?;
                if pick(&rec) {
                    held.insert(key.to_string(), Record { dirty: false, ..rec });
                }
            }
        }
        let mut n = 0;
        for rec in self.held.get_mut(collection).into_iter().flat_map(|c| c.values_mut()).filter(|r| pick(r)) {
            change(rec);
            rec.dirty = true;
            n += 1;
        }
        Ok(n)
    }

    /// Visit every record of `collection` (or of all), held or stored; the held copy wins.
    pub(super) fn for_each(
        &self,
        collection: Option<&str>,
        mut visit: impl FnMut(&str, &str, &Record),
    ) -> Result<(), StoreError> {
        let held = |c: &str, k: &str| self.held.get(c).is_some_and(|m| m.contains_key(k));
        if let Some(store) = &self.store {
            let range = match collection {
                Some(c) => {
                    let (from, to) = collection_keys(c);
                    store.table.range(from.as_str()..to.as_str())
                }
                None => store.table.range(..),
            }
            .map_err(StoreError::from)?;
            for item in range {
                let (k, v) = item.map_err(StoreError::from)?;
                let (c, key) = split_key(k.value());
                if !held(c, key) {
                    visit(c, key, &decode(v.value())?);
                }
            }
        }
        for (c, m) in self.held.iter().filter(|(c, _)| collection.is_none_or(|want| want == c.as_str())) {
            for (k, r) in m {
                visit(c, k, r);
            }
        }
        Ok(())
    }

    /// How many records are held in memory.
    pub fn held(&self) -> usize {
        self.held.values().map(Map::len).sum()
    }

    /// Up to `limit` stored records after the store key `after` (from the first without one),
    /// in key order, with the key to continue after (`None` at the end). Without a store, every
    /// record at once.
    pub(super) fn stored_page(
        &self,
        after: Option<&str>,
        limit: usize,
        mut visit: impl FnMut(&str, &str, &Record),
    ) -> Result<Option<String>, StoreError> {
        let Some(store) = &self.store else {
            self.for_each(None, visit)?;
            return Ok(None);
        };
        let range = match after {
            Some(a) => store.table.range((std::ops::Bound::Excluded(a), std::ops::Bound::<&str>::Unbounded)),
            None => store.table.range(..),
        }
        .map_err(StoreError::from)?;
        let mut last = None;
        for item in range.take(limit) {
            let (k, v) = item.map_err(StoreError::from)?;
            let (c, key) = split_key(k.value());
            visit(c, key, &decode(v.value())?);
            last = Some(k.value().to_string());
        }
        Ok(last.filter(|_| limit > 0))
    }

    /// The records changed since the last checkpoint.
    pub(super) fn changed(&self) -> impl Iterator<Item = (&str, &str, &Record)> {
        self.held
            .iter()
            .flat_map(|(c, m)| m.iter().filter(|(_, r)| r.dirty).map(move |(k, r)| (c.as_str(), k.as_str(), r)))
    }

    /// Write the changed records into the checkpoint's transaction.
    pub(super) fn write_changed(&self, txn: &WriteTransaction) -> Result<usize, StoreError> {
        let mut table = txn.open_table(RECORDS).map_err(StoreError::from)?;
        let mut buf = Vec::with_capacity(2048);
        let mut n = 0;
        for (c, k, r) in self.changed() {
            buf.clear();
            serde_json::to_writer(&mut buf, r).map_err(StoreError::from)?;
            table.insert(store_key(c, k).as_str(), buf.as_slice()).map_err(StoreError::from)?;
            n += 1;
        }
        Ok(n)
    }

    /// Everything is in a checkpoint: with a store (its view renewed by [`Self::attach`]),
    /// let go of the held records; without one, keep them all, clean.
    pub(super) fn saved(&mut self) {
        if self.store.is_some() {
            self.held.clear();
        } else {
            self.held.values_mut().flat_map(|m| m.values_mut()).for_each(|r| r.dirty = false);
        }
    }
}
