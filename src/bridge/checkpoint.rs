//! Where the bridge keeps its place: a [`CheckpointStore`] (MongoDB-backed here), and the
//! background writer that persists the newest confirmed resume token.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use mongodb::bson::{self, DateTime, Document, doc};
use mongodb::change_stream::event::ResumeToken;
use mongodb::{Client, Collection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::MongoError;

/// Loads and saves one bridge's resume token.
pub trait CheckpointStore: Send + Sync + 'static {
    /// The saved token, if any.
    fn load(&self) -> impl Future<Output = Result<Option<ResumeToken>, MongoError>> + Send;
    /// Replace the saved token.
    fn save(&self, token: &ResumeToken) -> impl Future<Output = Result<(), MongoError>> + Send;
}

/// Checkpoints in `<CDC_STATE_DATABASE>.checkpoints`, one document per `CDC_NAME`. Cheap to
/// clone (a collection handle on the shared client).
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
    async fn load(&self) -> Result<Option<ResumeToken>, MongoError> {
        let Some(d) = self.coll.find_one(doc! {"_id": &self.name}).await? else {
            return Ok(None);
        };
        match d.get("resume_token") {
            Some(t) => Ok(Some(bson::from_bson(t.clone()).map_err(mongodb::error::Error::from)?)),
            None => Ok(None),
        }
    }

    async fn save(&self, token: &ResumeToken) -> Result<(), MongoError> {
        let token = bson::to_bson(token).map_err(mongodb::error::Error::from)?;
        self.coll
            .replace_one(
                doc! {"_id": &self.name},
                doc! {
                    "_id": &self.name,
                    "resume_token": token,
                    "database": &self.watched_db,
                    "updated_at": DateTime::now(),
                },
            )
            .upsert(true)
            .await?;
        Ok(())
    }
}

/// Persists the newest token sent to it, coalescing bursts: while one write is in flight,
/// later tokens replace each other and only the newest is written next.
pub struct CheckpointWriter {
    tx: watch::Sender<Option<ResumeToken>>,
    task: JoinHandle<()>,
}

impl CheckpointWriter {
    /// Start the writer over `store`.
    pub fn spawn<S: CheckpointStore>(store: S) -> Self {
        let (tx, mut rx) = watch::channel::<Option<ResumeToken>>(None);
        let task = tokio::spawn(async move {
            loop {
                let closed = rx.changed().await.is_err();
                let token = rx.borrow_and_update().clone();
                if let Some(token) = token {
                    save_with_retry(&store, &token).await;
                }
                if closed {
                    return;
                }
            }
        });
        Self { tx, task }
    }

    /// Ask for `token` to be persisted (soon; the newest one wins).
    pub fn advance(&self, token: ResumeToken) {
        self.tx.send_replace(Some(token));
    }

    /// Write the newest token and stop, waiting at most `limit`.
    pub async fn finish(self, limit: Duration) {
        drop(self.tx);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(limit, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("last checkpoint not saved in time; a restart will publish the latest changes again");
        }
    }
}

/// Checkpoint writes retry forever (MongoDB may be restarting); [`CheckpointWriter::finish`]
/// bounds the wait at shutdown.
async fn save_with_retry<S: CheckpointStore>(store: &S, token: &ResumeToken) {
    let _ = (|| store.save(token))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_max_times(usize::MAX),
        )
        .notify(|e, _| tracing::warn!(error = %e, "checkpoint write failed, retrying"))
        .await;
}
