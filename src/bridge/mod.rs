//! The bridge: watch the database's change stream -> publish each change with confirms ->
//! checkpoint the resume token once every earlier message is confirmed.
//!
//! A session is one change stream plus one confirming channel. A reader task pulls changes
//! and turns them into messages; the session publishes them in stream order with at most
//! `window` unconfirmed, and advances the checkpoint only in order (an "ordered finalizer").
//! When RabbitMQ or MongoDB fails, the session ends and the next one resumes from the newest
//! confirmed token, so whatever was unconfirmed is published again: at-least-once, with at
//! most one window of duplicates.

pub mod checkpoint;
mod reader;

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use mongodb::bson::{Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::checkpoint::{CheckpointStore, CheckpointWriter, MongoCheckpointStore};
use self::reader::Item;
use crate::config::BridgeSettings;
use crate::db::Mongo;
use crate::error::{MongoError, MqError};
use crate::mq::Rabbit;
use crate::mq::publisher::{Publisher, confirmed};
use crate::mq::topology::Topology;

/// Why the bridge stopped.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// A MongoDB problem that retrying will not fix.
    #[error(transparent)]
    Mongo(#[from] MongoError),
    /// A RabbitMQ problem that retrying will not fix.
    #[error(transparent)]
    Mq(#[from] MqError),
}

/// Changes per `getMore`: fewer round trips while draining a backlog; an idle stream still
/// returns as soon as anything arrives.
const READ_BATCH: u32 = 1000;

/// How long shutdown waits for outstanding confirms and the last checkpoint write.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Run the bridge until `shutdown` is cancelled (then drain, checkpoint and return `Ok`) or a
/// fatal error occurs. Connection failures after start-up are retried with backoff.
pub async fn run(settings: BridgeSettings, shutdown: CancellationToken) -> Result<(), BridgeError> {
    let mongo = Mongo::shared(&settings.mongo.mongo_database_host);
    mongo.ping().await?;
    let rabbit = Rabbit::shared(&settings.rabbit);
    rabbit.check().await?;

    let client = mongo.client().await?.clone();
    let store = MongoCheckpointStore::new(
        &client,
        &settings.cdc.cdc_state_database,
        &settings.cdc.cdc_name,
        &settings.mongo.mongo_database_name,
    );
    let resume = store.load().await.map_err(|e| classify(&mongo, e))?;
    match &resume {
        Some(_) => tracing::info!(name = %settings.cdc.cdc_name, "resuming from checkpoint"),
        None => tracing::info!(name = %settings.cdc.cdc_name, "no checkpoint, starting from now"),
    }

    let mut bridge = Bridge {
        topology: Topology::new(&settings.rabbit.rabbitmq_queue_name),
        window: settings.cdc.cdc_confirm_window.max(1),
        confirmed: resume,
        writer: CheckpointWriter::spawn(store.clone()),
        store,
        settings,
        mongo,
        rabbit,
    };
    let result = bridge.supervise(&shutdown).await;
    bridge.writer.finish(DRAIN_LIMIT).await;
    result
}

fn classify(mongo: &Mongo, e: MongoError) -> MongoError {
    match e {
        MongoError::Driver(d) => mongo.classify(d),
        other => other,
    }
}

struct Bridge {
    settings: BridgeSettings,
    mongo: Mongo,
    rabbit: Rabbit,
    topology: Topology,
    window: usize,
    /// The newest token whose change, and every change before it, the broker confirmed.
    confirmed: Option<ResumeToken>,
    writer: CheckpointWriter,
    /// For the one synchronous write: pinning the start on a first run.
    store: MongoCheckpointStore,
}

/// How a session ended without error.
enum End {
    Shutdown,
    /// The stream closed (for example after an `invalidate`); open a new one.
    StreamClosed,
}

/// A session failure, by the side that failed.
enum Failure {
    Mongo(mongodb::error::Error),
    Mq(MqError),
    Fatal(BridgeError),
}

impl Bridge {
    async fn supervise(&mut self, shutdown: &CancellationToken) -> Result<(), BridgeError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.session(shutdown).await {
                Ok(End::Shutdown) => return Ok(()),
                Ok(End::StreamClosed) => {
                    tracing::info!("change stream closed, reopening");
                    continue;
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Mongo(e)) if history_lost(&e) => return Err(self.history_lost().into()),
                Err(Failure::Mongo(e)) => {
                    tracing::warn!(error = %e, "MongoDB failed, resuming from the last confirmed change")
                }
                Err(Failure::Mq(e)) => {
                    tracing::warn!(error = %e, "RabbitMQ failed, republishing from the last confirmed change")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// One change stream and one channel, until shutdown, a closed stream or a failure.
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<End, Failure> {
        let publisher = Publisher::open(&self.rabbit, &self.topology).await.map_err(|e| match e {
            MqError::Auth { .. } | MqError::Vhost { .. } | MqError::Topology(_) => Failure::Fatal(e.into()),
            e => Failure::Mq(e),
        })?;
        if let Some(token) = &self.confirmed {
            let client = self.mongo.client().await.map_err(|e| Failure::Fatal(e.into()))?;
            if oplog_lost(client, token).await {
                return Err(Failure::Fatal(self.history_lost().into()));
            }
        }
        let stream = self.open_stream().await.map_err(Failure::Mongo)?;
        if self.confirmed.is_none() {
            // First start: pin "now" before anything is published, so a crash from here on
            // resumes instead of skipping what happened in between.
            let token = stream.resume_token();
            if let Some(t) = &token {
                self.store.save(t).await.map_err(|e| match e {
                    MongoError::Driver(d) => Failure::Mongo(d),
                    e => Failure::Fatal(e.into()),
                })?;
            }
            self.confirmed = token;
        }

        let (tx, mut rx) = mpsc::channel(self.window);
        let reader = tokio::spawn(reader::read(stream, tx));
        let _stop_reader = AbortOnDrop(reader.abort_handle());
        let mut inflight: FuturesOrdered<BoxFuture<'static, Result<ResumeToken, MqError>>> = FuturesOrdered::new();

        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(End::Shutdown),
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    self.advance(done.map_err(Failure::Mq)?);
                }
                item = rx.recv(), if inflight.len() < self.window => match item {
                    None => break Ok(End::StreamClosed),
                    Some(Err(e)) => break Err(Failure::Mongo(e)),
                    Some(Ok(Item::Mark(token))) => {
                        if inflight.is_empty() {
                            self.advance(token);
                        } else {
                            inflight.push_back(Box::pin(async move { Ok(token) }));
                        }
                    }
                    Some(Ok(Item::Change { token, body, envelope })) => {
                        let confirm = publisher.publish(&body, &envelope).await.map_err(Failure::Mq)?;
                        inflight.push_back(Box::pin(async move { confirmed(confirm).await.map(|()| token) }));
                    }
                },
            }
        };
        drop(rx);

        // Stop reading, then let what is in flight land (bounded), so the checkpoint covers it.
        let drained = tokio::time::timeout(DRAIN_LIMIT, async {
            while let Some(done) = inflight.next().await {
                self.advance(done?);
            }
            Ok::<(), MqError>(())
        })
        .await;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Failure::Mq(e)),
            Err(_) => tracing::warn!("confirms still outstanding after {DRAIN_LIMIT:?}; they will be published again"),
        }
        publisher.close().await;
        end
    }

    fn history_lost(&self) -> MongoError {
        MongoError::HistoryLost {
            name: self.settings.cdc.cdc_name.clone(),
            state_db: self.settings.cdc.cdc_state_database.clone(),
        }
    }

    fn advance(&mut self, token: ResumeToken) {
        self.writer.advance(token.clone());
        self.confirmed = Some(token);
    }

    async fn open_stream(&self) -> Result<ChangeStream<ChangeStreamEvent<Document>>, mongodb::error::Error> {
        let client = self.mongo.client().await.map_err(|e| match e {
            MongoError::Driver(d) => d,
            other => mongodb::error::Error::custom(other.to_string()),
        })?;
        let db = client.database(&self.settings.mongo.mongo_database_name);
        // Other operation types are dropped as they are read (`ChangeEvent::from_change`), not
        // by a server-side `$match`: it costs the server per event, and the post-batch resume
        // token moves on either way.
        let collections = self.settings.mongo.collections();
        let pipeline = if collections.is_empty() {
            Vec::new()
        } else {
            vec![doc! {"$match": {"$or": [{"ns.coll": {"$in": collections}}, {"operationType": "invalidate"}]}}]
        };
        let watch = db
            .watch()
            .pipeline(pipeline)
            .full_document(FullDocumentType::UpdateLookup)
            .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
            .batch_size(READ_BATCH);
        match &self.confirmed {
            // `start_after` (not `resume_after`) so a token from an `invalidate` still works.
            Some(token) => watch.start_after(token.clone()).await,
            None => watch.await,
        }
    }
}

/// `ChangeStreamHistoryLost` (286) or `ChangeStreamFatalError` (280): the resume point is
/// no longer in the oplog.
fn history_lost(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 286 || c.code == 280)
}

/// Some servers (SecantusDB) resume silently from a pruned position instead of failing with
/// 286, so check ourselves: the oldest oplog entry must not be newer than the token. When the
/// oplog cannot be read (no privilege, mongos), the server's own check is all there is.
async fn oplog_lost(client: &mongodb::Client, token: &ResumeToken) -> bool {
    let Some(at) = crate::event::token_cluster_time(token) else { return false };
    let oldest = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .projection(doc! {"ts": 1})
        .await;
    match oldest.ok().flatten().and_then(|d| d.get_timestamp("ts").ok()) {
        Some(ts) => (ts.time, ts.increment) > (at.t, at.i),
        None => false,
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
