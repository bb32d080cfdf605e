//! The snapshot's side of the database: which collections to read, reading each one in `_id`
//! order, chunk by chunk, with the watermarks that let the source interleave the chunks with
//! the change stream, and the memory of keys the stream changed meanwhile.
//!
//! The method is DBLog's (Netflix) and Debezium's incremental snapshot: before a chunk is
//! read, the stream has been read up to a position `P`; the chunk is read, then a watermark
//! write in the state database gets a cluster time `W` after the read. The chunk's rows are
//! sent only once the stream has passed `W`, and a row is dropped if the stream changed its
//! key since the collection's snapshot began (every change up to `W` is then already on the
//! queue, and carries the document itself). So for any key the queue never goes back in
//! cluster time, a document arrives either as a row or through its changes, and a consumer
//! that applies messages in order ends equal to MongoDB.
//!
//! `$gt` compares within one BSON type bracket only (numbers, strings, ObjectIds, ...), so a
//! collection whose `_id`s have several types is read bracket by bracket, in MongoDB's order.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::{ClientSession, Collection, Database, SessionCursor};
use tokio::sync::mpsc;

use super::checkpoint::Cursor;
use crate::event::ClusterTime;

/// MongoDB's sort order of BSON types, one bracket per entry, as `$type` names. `$gt` and
/// `$lte` match only within the bracket of their operand. Arrays, regular expressions and
/// undefined cannot be an `_id`; their brackets are kept so the indices follow MongoDB's order.
const BRACKETS: &[&[&str]] = &[
    &["minKey"],
    &["undefined"],
    &["null"],
    &["double", "int", "long", "decimal"],
    &["string", "symbol"],
    &["object"],
    &["array"],
    &["binData"],
    &["objectId"],
    &["bool"],
    &["date"],
    &["timestamp"],
    &["regex"],
    &["dbPointer"],
    &["javascript"],
    &["javascriptWithScope"],
    &["maxKey"],
];

/// The index in [`BRACKETS`] of a value's type.
pub(super) fn bracket_of(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Undefined => 1,
        Bson::Null => 2,
        Bson::Double(_) | Bson::Int32(_) | Bson::Int64(_) | Bson::Decimal128(_) => 3,
        Bson::String(_) | Bson::Symbol(_) => 4,
        Bson::Document(_) => 5,
        Bson::Array(_) => 6,
        Bson::Binary(_) => 7,
        Bson::ObjectId(_) => 8,
        Bson::Boolean(_) => 9,
        Bson::DateTime(_) => 10,
        Bson::Timestamp(_) => 11,
        Bson::RegularExpression(_) => 12,
        Bson::DbPointer(_) => 13,
        Bson::JavaScriptCode(_) => 14,
        Bson::JavaScriptCodeWithScope(_) => 15,
        Bson::MaxKey => 16,
    }
}

/// MongoDB's order of two `_id` values, where it is cheap to be sure of it; `None` where it
/// is not (decimals, documents, binary, NaN, integers too large for an exact float). Written
/// by hand because the bson crate orders no values. Callers treat `None` conservatively.
pub(super) fn compare(a: &Bson, b: &Bson) -> Option<Ordering> {
    let (ra, rb) = (bracket_of(a), bracket_of(b));
    if ra != rb {
        return Some(ra.cmp(&rb));
    }
    const EXACT: i64 = 1 << 53;
    let int = |v: &Bson| match v {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    };
    match (a, b) {
        (Bson::MinKey, _) | (Bson::MaxKey, _) | (Bson::Null, _) | (Bson::Undefined, _) => Some(Ordering::Equal),
        (Bson::String(x) | Bson::Symbol(x), Bson::String(y) | Bson::Symbol(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => Some(x.bytes().cmp(&y.bytes())),
        (Bson::Boolean(x), Bson::Boolean(y)) => Some(x.cmp(y)),
        (Bson::DateTime(x), Bson::DateTime(y)) => Some(x.timestamp_millis().cmp(&y.timestamp_millis())),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => Some((x.time, x.increment).cmp(&(y.time, y.increment))),
        _ => match (int(a), int(b)) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => {
                let float = |v: &Bson| match v {
                    Bson::Double(f) => Some(*f),
                    _ => int(v).filter(|n| n.abs() <= EXACT).map(|n| n as f64),
                };
                float(a)?.partial_cmp(&float(b)?)
            }
        },
    }
}

/// A position strictly before `id`? (`None`: not sure.)
fn before(cursor: &Cursor, id: &Bson) -> Option<bool> {
    let b = bracket_of(id);
    if b != cursor.bracket {
        return Some(cursor.bracket < b);
    }
    match &cursor.after {
        None => Some(true),
        Some(after) => compare(after, id).map(|o| o == Ordering::Less),
    }
}

/// The identity of an `_id` value, type included (`7` and `"7"` differ).
pub(super) fn id_key(id: &Bson) -> String {
    id.clone().into_canonical_extjson().to_string()
}

/// Keys of the collection being read that the stream changed since its snapshot began and
/// that the snapshot has yet to reach: their rows must not be sent. Only keys ahead of the
/// cursor and not beyond the collection's largest `_id` are kept, and keys the cursor has
/// passed are pruned as it moves, so this holds at most the keys changed between the cursor
/// and the end of the collection.
#[derive(Debug, Default)]
pub(super) struct Touched {
    keys: HashMap<String, Bson>,
    prune_at: usize,
}

const FIRST_PRUNE: usize = 4096;

impl Touched {
    /// Note a change to `id`, given where the snapshot stands.
    pub(super) fn note(&mut self, id: &Bson, cursor: &Cursor, max_id: Option<&Bson>) {
        let Some(max) = max_id else { return };
        let beyond = compare(id, max) == Some(Ordering::Greater);
        if beyond || before(cursor, id) == Some(false) {
            return;
        }
        self.keys.insert(id_key(id), id.clone());
    }

    /// Whether a row for `key` (an [`id_key`]) must be dropped.
    pub(super) fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Forget keys the cursor has passed, when there are enough of them to be worth a pass.
    pub(super) fn prune(&mut self, cursor: &Cursor) {
        if self.keys.len() < self.prune_at.max(FIRST_PRUNE) {
            return;
        }
        self.keys.retain(|_, id| before(cursor, id) != Some(false));
        self.prune_at = self.keys.len() * 2;
    }

    /// A new collection begins.
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.prune_at = 0;
    }

    /// Keys held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// No key held.
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One chunk of a collection, read and waiting for the stream to pass its watermark.
#[derive(Debug)]
pub(super) struct Chunk {
    /// The documents, in `_id` order.
    pub docs: Vec<RawDocumentBuf>,
    /// The cluster time of the read (the rows' `source.cluster_time`).
    pub read_at: ClusterTime,
    /// The watermark: the rows may go once the stream has passed it.
    pub watermark: ClusterTime,
    /// Wall time of the read, ms since the epoch.
    pub wall_ms: i64,
    /// The cursor after the chunk.
    pub next: Cursor,
    /// Nothing of the collection (up to its largest `_id`) comes after this chunk.
    pub last: bool,
}

/// What a collection's snapshot will read.
#[derive(Debug)]
pub(super) struct Bounds {
    /// The largest `_id`; `None` if the collection is empty.
    pub max_id: Option<Bson>,
    /// Estimated number of documents.
    pub estimate: u64,
}

/// Failures of the snapshot's reads.
pub(super) type Result<T> = std::result::Result<T, mongodb::error::Error>;

/// Reads a database's collections for a snapshot, and writes its watermarks. Cheap to clone.
///
/// A collection is read through one cursor in `_id` order, a chunk per batch, rather than
/// one range query per chunk: a server that cannot serve `_id` ranges from the index
/// (SecantusDB scans the collection for each) would otherwise read the collection once per
/// chunk. A task reads ahead of the chunk waiting for its watermark ([`Reader::read_ahead`]),
/// so the reads overlap with the stream and with publishing. The cursor opens again at the
/// checkpoint's position after a restart.
#[derive(Clone)]
pub(super) struct Reader {
    client: mongodb::Client,
    db: Database,
    watermarks: Collection<Document>,
    name: String,
    chunk: usize,
}

/// Chunks read ahead, in order, by a task that stops when this is dropped.
pub(super) struct ReadAhead {
    rx: mpsc::Receiver<Result<Chunk>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReadAhead {
    /// The next chunk, waiting for it. `None` once the collection's last chunk was taken.
    pub(super) async fn next(&mut self) -> Option<Result<Chunk>> {
        self.rx.recv().await
    }

    /// The next chunk if it is already read.
    pub(super) fn ready(&mut self) -> Option<Result<Chunk>> {
        self.rx.try_recv().ok()
    }
}

impl Reader {
    /// A reader of `db`, writing watermarks to `<state_db>.watermarks` under `name`, reading
    /// `chunk` documents at a time.
    pub(super) fn new(client: &mongodb::Client, db: &str, state_db: &str, name: &str, chunk: usize) -> Self {
        Self {
            client: client.clone(),
            db: client.database(db),
            watermarks: client.database(state_db).collection("watermarks"),
            name: name.to_string(),
            chunk: chunk.max(1),
        }
    }

    /// The collections to snapshot: every collection of the database (not views or
    /// `system.*`), limited to `only` when it is not empty, without `except`; by name.
    pub(super) async fn plan(&self, only: &[String], except: &[String]) -> Result<Vec<String>> {
        let mut names = self.db.list_collection_names().filter(doc! {"type": "collection"}).await?;
        names.retain(|n| !n.starts_with("system.") && (only.is_empty() || only.contains(n)) && !except.contains(n));
        names.sort();
        Ok(names)
    }

    /// What the snapshot of `collection` will read, as it is now.
    pub(super) async fn bounds(&self, collection: &str) -> Result<Bounds> {
        let coll = self.db.collection::<Document>(collection);
        let last = coll.find_one(doc! {}).sort(doc! {"_id": -1}).projection(doc! {"_id": 1}).await?;
        let estimate = coll.estimated_document_count().await.unwrap_or(0);
        Ok(Bounds { max_id: last.and_then(|d| d.get("_id").cloned()), estimate })
    }

    /// Start reading `collection` after `from`, up to `max_id`, one chunk ahead of the taker.
    pub(super) fn read_ahead(&self, collection: Arc<str>, from: Cursor, max_id: Option<Arc<Bson>>) -> ReadAhead {
        let (tx, rx) = mpsc::channel(1);
        let reader = self.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = reader.read_all(&collection, from, max_id.as_deref(), &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        ReadAhead { rx, task }
    }

    async fn read_all(
        &self,
        collection: &Arc<str>,
        from: Cursor,
        max_id: Option<&Bson>,
        tx: &mpsc::Sender<Result<Chunk>>,
    ) -> Result<()> {
        let mut session = self.client.start_session().await?;
        let mut cursor = self.open_at(collection, &from, &mut session).await?;
        let (mut peeked, mut exhausted, mut at) = (None, false, from);
        loop {
            let mut docs = Vec::with_capacity(self.chunk);
            let mut last = max_id.is_none();
            while !last && docs.len() < self.chunk {
                let next = match peeked.take() {
                    Some(d) => Some(d),
                    None if exhausted => None,
                    None => cursor.next(&mut session).await.transpose()?,
                };
                match next {
                    Some(d) if within(&d, max_id) => docs.push(d),
                    _ => last = true,
                }
            }
            if !last {
                // Read one ahead: if nothing follows, this chunk is the collection's last.
                peeked = cursor.next(&mut session).await.transpose()?;
                exhausted = peeked.is_none();
                last = peeked.as_ref().is_none_or(|d| !within(d, max_id));
            }
            let last_id =
                docs.last().and_then(|d| d.get("_id").ok().flatten()).map(|id| Bson::try_from(id.to_raw_bson()));
            if let Some(Ok(id)) = last_id {
                at = Cursor { bracket: bracket_of(&id), after: Some(id) };
            }
            let read_at = operation_time(&session)?;
            let wall_ms = now_ms();
            self.watermarks
                .update_one(
                    doc! {"_id": &self.name},
                    doc! {"$inc": {"n": 1_i64}, "$set": {"collection": &**collection}},
                )
                .upsert(true)
                .session(&mut session)
                .await?;
            let watermark = operation_time(&session)?;
            let chunk = Chunk { docs, read_at, watermark, wall_ms, next: at.clone(), last };
            if tx.send(Ok(chunk)).await.is_err() || last {
                return Ok(());
            }
        }
    }

    /// A cursor over `collection` in `_id` order, from just after `cursor`. `$gt` matches one
    /// type bracket only, so the brackets after the cursor's are asked for by type.
    async fn open_at(
        &self,
        collection: &str,
        cursor: &Cursor,
        session: &mut ClientSession,
    ) -> Result<SessionCursor<RawDocumentBuf>> {
        let later: Vec<&str> =
            BRACKETS.iter().skip(usize::from(cursor.bracket) + 1).flat_map(|b| b.iter().copied()).collect();
        let filter = match &cursor.after {
            None if cursor.bracket == 0 => doc! {},
            None => {
                let from: Vec<&str> =
                    BRACKETS.iter().skip(usize::from(cursor.bracket)).flat_map(|b| b.iter().copied()).collect();
                doc! {"_id": {"$type": from}}
            }
            Some(after) if later.is_empty() => doc! {"_id": {"$gt": after.clone()}},
            Some(after) => doc! {"$or": [{"_id": {"$gt": after.clone()}}, {"_id": {"$type": later}}]},
        };
        self.db
            .collection::<RawDocumentBuf>(collection)
            .find(filter)
            .sort(doc! {"_id": 1})
            .batch_size(self.chunk as u32 + 1)
            .session(session)
            .await
    }
}

fn operation_time(session: &ClientSession) -> Result<ClusterTime> {
    let ts = session.operation_time().ok_or_else(|| {
        mongodb::error::Error::custom("the server reports no operationTime; a snapshot needs a replica set")
    })?;
    Ok(ClusterTime { t: ts.time, i: ts.increment })
}

/// Whether a document is not beyond the collection's largest `_id` at the snapshot's start
/// (where the order is unsure, it is read: rows of keys changed meanwhile are dropped anyway).
fn within(doc: &RawDocumentBuf, max_id: Option<&Bson>) -> bool {
    let id = doc.get("_id").ok().flatten().and_then(|id| Bson::try_from(id.to_raw_bson()).ok());
    match (id, max_id) {
        (Some(id), Some(max)) => compare(&id, max) != Some(Ordering::Greater),
        _ => false,
    }
}

/// Wall time now, ms since the epoch.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A new snapshot id: the time it began, so ids sort by age and never repeat for one bridge.
pub(super) fn new_id() -> Arc<str> {
    mongodb::bson::oid::ObjectId::new().to_hex().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    #[test]
    fn brackets_follow_mongodbs_type_order() {
        let order = [
            Bson::MinKey,
            Bson::Null,
            Bson::Int32(1),
            Bson::String("a".into()),
            Bson::Document(doc! {"x": 1}),
            Bson::ObjectId(ObjectId::new()),
            Bson::Boolean(false),
            Bson::DateTime(mongodb::bson::DateTime::from_millis(0)),
            Bson::MaxKey,
        ];
        for w in order.windows(2) {
            assert!(bracket_of(&w[0]) < bracket_of(&w[1]), "{:?} before {:?}", w[0], w[1]);
            assert_eq!(compare(&w[0], &w[1]), Some(Ordering::Less));
        }
        assert_eq!(BRACKETS[usize::from(bracket_of(&Bson::Int64(1)))], BRACKETS[3]);
    }

    #[test]
    fn numbers_compare_across_types_and_unsure_cases_say_so() {
        assert_eq!(compare(&Bson::Int32(2), &Bson::Double(2.5)), Some(Ordering::Less));
        assert_eq!(compare(&Bson::Int64(3), &Bson::Int32(3)), Some(Ordering::Equal));
        assert_eq!(compare(&Bson::Double(f64::NAN), &Bson::Int32(1)), None);
        assert_eq!(compare(&Bson::Int64(i64::MAX), &Bson::Double(1.0)), None);
        assert_eq!(compare(&Bson::String("b".into()), &Bson::String("ab".into())), Some(Ordering::Greater));
        assert_eq!(compare(&Bson::Document(doc! {}), &Bson::Document(doc! {})), None);
    }

    #[test]
    fn touched_keeps_only_keys_ahead_of_the_cursor_and_within_the_collection() {
        let mut t = Touched::default();
        let cursor = Cursor { bracket: 3, after: Some(Bson::Int32(10)) };
        let max = Bson::Int32(100);
        for id in [5, 10, 11, 100, 101] {
            t.note(&Bson::Int32(id), &cursor, Some(&max));
        }
        t.note(&Bson::String("x".into()), &cursor, Some(&max));
        t.note(&Bson::Null, &cursor, Some(&max));
        let keys: Vec<bool> = [5, 10, 11, 100, 101].iter().map(|&i| t.contains(&id_key(&Bson::Int32(i)))).collect();
        assert_eq!(keys, [false, false, true, true, false]);
        assert!(!t.contains(&id_key(&Bson::String("x".into()))), "beyond the max bracket");
        assert!(!t.contains(&id_key(&Bson::Null)), "an earlier bracket is behind the cursor");
        assert!(!t.contains(&id_key(&Bson::Int64(11))), "the key keeps the type");
        // Pruning forgets what the cursor passed.
        for i in 12..(12 + FIRST_PRUNE as i32) {
            t.note(&Bson::Int32(i), &cursor, Some(&Bson::Int32(i32::MAX)));
        }
        let before_prune = t.len();
        t.prune(&Cursor { bracket: 3, after: Some(Bson::Int32(2000)) });
        assert!(t.len() < before_prune);
        assert!(!t.contains(&id_key(&Bson::Int32(11))));
        assert!(t.contains(&id_key(&Bson::Int32(2001))));
        assert_eq!(
            before(&Cursor { bracket: 4, after: None }, &Bson::Int32(2001)),
            Some(false),
            "a later bracket passed every number"
        );
    }
}
