//! Where the bridge keeps its place: the [`Checkpoint`] (streaming, or a snapshot in
//! progress), a [`CheckpointStore`] (MongoDB-backed here), and the background writer that
//! persists the newest confirmed checkpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use mongodb::bson::{self, Bson, DateTime, Document, Timestamp, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::{Client, Collection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::MongoError;
use crate::event::ClusterTime;

/// Where the bridge stands, as of the newest message the broker confirmed (with every one
/// before it).
#[derive(Debug, Clone, PartialEq)]
pub enum Checkpoint {
    /// Streaming: resume the change stream after `token`.
    Stream {
        /// The change stream's resume token.
        token: ResumeToken,
    },
    /// A snapshot is in progress, and the change stream is read alongside it.
    Snapshot {
        /// The change stream's resume token.
        token: ResumeToken,
        /// How far the snapshot has come.
        progress: Box<SnapshotProgress>,
    },
}

impl Checkpoint {
    /// The change stream's resume token.
    pub fn token(&self) -> &ResumeToken {
        match self {
            Checkpoint::Stream { token } | Checkpoint::Snapshot { token, .. } => token,
        }
    }

    /// Move the stream's position to `token`.
    pub fn set_token(&mut self, token: ResumeToken) {
        match self {
            Checkpoint::Stream { token: t } | Checkpoint::Snapshot { token: t, .. } => *t = token,
        }
    }
}

/// Why a snapshot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// First start, with no checkpoint.
    Initial,
    /// The resume point fell off the oplog (`CDC_SNAPSHOT_MODE=when_needed`).
    Resync,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Resync => "resync",
        }
    }
}

/// A snapshot's progress: the collections still to read and the one being read.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotProgress {
    /// The snapshot's id (it prefixes the ids of its rows and control messages).
    pub id: Arc<str>,
    /// Why it runs.
    pub reason: Reason,
    /// Collections not started yet, in the order they will be read.
    pub pending: Arc<[String]>,
    /// The collection being read, once its `start` was sent; `None` between collections.
    pub current: Option<CollectionProgress>,
}

/// How far one collection's snapshot has come.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionProgress {
    /// The collection.
    pub name: Arc<str>,
    /// The stream position when its snapshot began (its control messages' `since`).
    pub since: ClusterTime,
    /// The largest `_id` when it began; documents inserted later with a larger `_id` arrive
    /// through the stream only. `None`: the collection was empty.
    pub max_id: Option<Arc<Bson>>,
    /// The last `_id` read, in MongoDB's `_id` order.
    pub cursor: Cursor,
    /// Rows sent so far.
    pub rows: u64,
    /// Documents it held when its snapshot began (estimated, for progress).
    pub estimate: u64,
}

/// A position in a collection's `_id` order. MongoDB compares `$gt` only within one type
/// bracket (numbers, strings, ObjectIds, ...), so the position names the bracket too.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    /// Index of the type bracket being read (see `bridge::snapshot`).
    pub bracket: u8,
    /// The last `_id` read in that bracket; `None` at the bracket's start.
    pub after: Option<Bson>,
}

/// Loads and saves one bridge's checkpoint.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The saved checkpoint, if any.
    fn load(&self) -> impl Future<Output = Result<Option<Checkpoint>, MongoError>> + Send;
    /// Replace the saved checkpoint.
    fn save(&self, checkpoint: &Checkpoint) -> impl Future<Output = Result<(), MongoError>> + Send;
}

/// Checkpoints in `<CDC_STATE_DATABASE>.checkpoints`, one document per `CDC_NAME`. Cheap to
/// clone (a collection handle on the shared client).
///
/// The document: `resume_token`, `database`, `updated_at`, and while a snapshot runs
/// `snapshot: {id, reason, pending, current: {collection, since, max_id, bracket, after,
/// rows, estimate}}`, so its progress can be read in the database as it runs.
#[derive(Clone)]
pub struct MongoCheckpointStore {
    coll: Collection<Document>,
    name: String,
    watched_db: String,
}

impl MongoCheckpointStore {
    /// The store for bridge `name` watching `watched_db`.
    pub fn new(client: &Client, state_db: &str, name: &str, watched_db: &str) -> Self {
        Self {
            coll: client.database(state_db).collection("checkpoints"),
            name: name.into(),
            watched_db: watched_db.into(),
        }
    }
}

impl CheckpointStore for MongoCheckpointStore {
    async fn load(&self) -> Result<Option<Checkpoint>, MongoError> {
        let Some(d) = self.coll.find_one(doc! {"_id": &self.name}).await? else {
            return Ok(None);
        };
        from_document(&d).map_err(|what| {
            MongoError::Driver(mongodb::error::Error::custom(format!(
                "the checkpoint of CDC_NAME `{}` is unreadable ({what})",
                self.name
            )))
        })
    }

    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), MongoError> {
        let mut d = to_document(checkpoint)?;
        d.insert("_id", &self.name);
        d.insert("database", &self.watched_db);
        d.insert("updated_at", DateTime::now());
        self.coll.replace_one(doc! {"_id": &self.name}, d).upsert(true).await?;
        Ok(())
    }
}

/// A value that may itself be null, wrapped so that "absent" and "null" stay apart.
fn boxed(v: &Bson) -> Document {
    doc! {"v": v.clone()}
}

fn unboxed(d: &Document, key: &str) -> Option<Bson> {
    d.get_document(key).ok().and_then(|b| b.get("v").cloned())
}

fn to_document(checkpoint: &Checkpoint) -> Result<Document, MongoError> {
    let token = bson::to_bson(checkpoint.token()).map_err(mongodb::error::Error::from)?;
    let mut d = doc! {"resume_token": token};
    if let Checkpoint::Snapshot { progress: p, .. } = checkpoint {
        let mut s = doc! {
            "id": &*p.id,
            "reason": p.reason.as_str(),
            "pending": p.pending.iter().map(String::as_str).collect::<Vec<_>>(),
        };
        if let Some(c) = &p.current {
            let mut cur = doc! {
                "collection": &*c.name,
                "since": Timestamp { time: c.since.t, increment: c.since.i },
                "bracket": i32::from(c.cursor.bracket),
                "rows": c.rows as i64,
                "estimate": c.estimate as i64,
            };
            if let Some(max) = &c.max_id {
                cur.insert("max_id", boxed(max));
            }
            if let Some(after) = &c.cursor.after {
                cur.insert("after", boxed(after));
            }
            s.insert("current", cur);
        }
        d.insert("snapshot", s);
    }
    Ok(d)
}

fn from_document(d: &Document) -> Result<Option<Checkpoint>, String> {
    let Some(token) = d.get("resume_token") else { return Ok(None) };
    let token: ResumeToken = bson::from_bson(token.clone()).map_err(|e| format!("resume_token: {e}"))?;
    let Ok(s) = d.get_document("snapshot") else { return Ok(Some(Checkpoint::Stream { token })) };
    let field = |what: &str| format!("snapshot.{what} is missing or of the wrong type");
    let reason = match s.get_str("reason") {
        Ok("resync") => Reason::Resync,
        _ => Reason::Initial,
    };
    let pending = s
        .get_array("pending")
        .map_err(|_| field("pending"))?
        .iter()
        .map(|c| c.as_str().map(String::from).ok_or_else(|| field("pending")))
        .collect::<Result<Vec<_>, _>>()?;
    let current = match s.get_document("current") {
        Ok(c) => {
            let since = c.get_timestamp("since").map_err(|_| field("current.since"))?;
            let int = |k: &str| c.get_i64(k).map(|v| v.max(0) as u64).map_err(|_| field(&format!("current.{k}")));
            Some(CollectionProgress {
                name: c.get_str("collection").map_err(|_| field("current.collection"))?.into(),
                since: ClusterTime { t: since.time, i: since.increment },
                max_id: unboxed(c, "max_id").map(Arc::new),
                cursor: Cursor {
                    bracket: c.get_i32("bracket").map_err(|_| field("current.bracket"))?.clamp(0, 255) as u8,
                    after: unboxed(c, "after"),
                },
                rows: int("rows")?,
                estimate: int("estimate")?,
            })
        }
        Err(_) => None,
    };
    let progress = SnapshotProgress {
        id: s.get_str("id").map_err(|_| field("id"))?.into(),
        reason,
        pending: pending.into(),
        current,
    };
    Ok(Some(Checkpoint::Snapshot { token, progress: Box::new(progress) }))
}

/// Persists the newest checkpoint sent to it, coalescing bursts: while one write is in
/// flight, later checkpoints replace each other and only the newest is written next. Each
/// checkpoint comes with the number of messages confirmed up to it; [`Self::persisted`]
/// tells how many of those the stored checkpoint covers, so the session can bound what a
/// crash would publish again.
pub struct CheckpointWriter {
    tx: watch::Sender<Option<(Checkpoint, u64)>>,
    persisted: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl CheckpointWriter {
    /// Start the writer over `store`; `saved` hears of every checkpoint written.
    pub fn spawn<S: CheckpointStore>(store: S, saved: impl Fn(&Checkpoint) + Send + 'static) -> Self {
        let (tx, mut rx) = watch::channel::<Option<(Checkpoint, u64)>>(None);
        let (persisted_tx, persisted) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let (mut written, mut last, mut snapshotting) = (0u64, tokio::time::Instant::now(), None);
            // Only the position moved: no new message, and no snapshot began or ended.
            let idle = |next: &Option<(Checkpoint, u64)>, written: u64, snapshotting: Option<bool>| {
                next.as_ref().is_some_and(|(c, m)| {
                    *m == written && Some(matches!(c, Checkpoint::Snapshot { .. })) == snapshotting
                })
            };
            loop {
                let mut closed = rx.changed().await.is_err();
                let pace = if idle(&rx.borrow(), written, snapshotting) { IDLE_EVERY } else { EVERY };
                // Each write is an oplog entry, which moves the stream's position, which is a
                // new checkpoint: without a pace the bridge would checkpoint its own writes in a
                // loop. Messages are written every `EVERY` at most; a position alone (a quiet
                // database, dropped rows) every `IDLE_EVERY`, unless messages come meanwhile.
                while !closed && last.elapsed() < pace {
                    tokio::select! {
                        _ = tokio::time::sleep_until(last + pace) => break,
                        changed = rx.changed() => {
                            closed = changed.is_err();
                            if pace == IDLE_EVERY && !idle(&rx.borrow(), written, snapshotting) {
                                tokio::time::sleep_until(last + EVERY).await;
                                break;
                            }
                        }
                    }
                }
                let next = rx.borrow_and_update().clone();
                if let Some((checkpoint, messages)) = next {
                    save_with_retry(&store, &checkpoint).await;
                    saved(&checkpoint);
                    persisted_tx.send_replace(messages);
                    (written, last) = (messages, tokio::time::Instant::now());
                    snapshotting = Some(matches!(checkpoint, Checkpoint::Snapshot { .. }));
                }
                if closed {
                    return;
                }
            }
        });
        Self { tx, persisted, task }
    }

    /// Ask for `checkpoint`, which covers the first `messages` messages confirmed, to be
    /// persisted (soon; the newest one wins).
    pub fn advance(&self, checkpoint: Checkpoint, messages: u64) {
        self.tx.send_replace(Some((checkpoint, messages)));
    }

    /// How many confirmed messages the stored checkpoint covers (it changes as writes land).
    pub fn persisted(&self) -> watch::Receiver<u64> {
        self.persisted.clone()
    }

    /// Write the newest checkpoint and stop, waiting at most `limit`.
    pub async fn finish(self, limit: Duration) {
        drop(self.tx);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("last checkpoint not saved in time; a restart will publish the latest changes again");
        }
    }
}

/// Least time between two checkpoint writes that cover new messages.
const EVERY: Duration = Duration::from_millis(50);

/// Least time between two checkpoint writes that only move the position.
const IDLE_EVERY: Duration = Duration::from_secs(10);

/// Checkpoint writes retry forever (MongoDB may be restarting); [`CheckpointWriter::finish`]
/// bounds the wait at shutdown.
async fn save_with_retry<S: CheckpointStore>(store: &S, checkpoint: &Checkpoint) {
    let _ = (|| store.save(checkpoint))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(usize::MAX),
        )
        .notify(|e, _| tracing::warn!(error = %e, "checkpoint write failed, retrying"))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::oid::ObjectId;

    fn token(s: &str) -> ResumeToken {
        bson::from_document(doc! {"_data": s}).unwrap()
    }

    #[test]
    fn documents_round_trip_every_shape() {
        let stream = Checkpoint::Stream { token: token("82aa") };
        let progress = SnapshotProgress {
            id: "s1".into(),
            reason: Reason::Resync,
            pending: vec!["b".to_string(), "c".to_string()].into(),
            current: Some(CollectionProgress {
                name: "a".into(),
                since: ClusterTime { t: 7, i: 3 },
                max_id: Some(Arc::new(Bson::Null)),
                cursor: Cursor { bracket: 6, after: Some(Bson::ObjectId(ObjectId::new())) },
                rows: 12,
                estimate: 40,
            }),
        };
        let snap = Checkpoint::Snapshot { token: token("82bb"), progress: Box::new(progress.clone()) };
        let between = Checkpoint::Snapshot {
            token: token("82cc"),
            progress: Box::new(SnapshotProgress { current: None, ..progress.clone() }),
        };
        let empty = Checkpoint::Snapshot {
            token: token("82dd"),
            progress: Box::new(SnapshotProgress {
                current: Some(CollectionProgress {
                    max_id: None,
                    cursor: Cursor { bracket: 0, after: None },
                    ..progress.current.clone().unwrap()
                }),
                ..progress
            }),
        };
        for c in [stream, snap, between, empty] {
            let d = to_document(&c).unwrap();
            assert_eq!(from_document(&d).unwrap(), Some(c));
        }
        assert_eq!(from_document(&doc! {"database": "x"}).unwrap(), None);
        assert!(from_document(&doc! {"resume_token": {"_data": "82"}, "snapshot": {"id": "x"}}).is_err());
    }
}
