//! The bridge: a [`source`] yields the messages (streamed changes, snapshot rows and control
//! messages) in order -> the session publishes them with confirms -> the [`checkpoint`]
//! advances once every earlier message is confirmed.
//!
//! A session is one change stream plus one confirming channel. The source task reads and
//! encodes; the session publishes in order with at most `window` unconfirmed and advances the
//! checkpoint only in order (an "ordered finalizer"). When RabbitMQ or MongoDB fails, the
//! session ends and the next one resumes from the newest confirmed checkpoint, so whatever
//! was unconfirmed is published again: at-least-once, with at most one window of duplicates.

pub mod checkpoint;
pub mod encode;
mod snapshot;
mod source;

use std::io::IsTerminal;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use indicatif::{ProgressBar, ProgressStyle};
use mongodb::bson::{Document, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::checkpoint::{Checkpoint, CheckpointStore, CheckpointWriter, MongoCheckpointStore, Reason, SnapshotProgress};
use self::source::{Item, Source, SourceError};
use crate::config::{BridgeSettings, SnapshotMode};
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
    /// The snapshot cannot run here.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Changes per `getMore`: fewer round trips while draining a backlog; an idle stream still
/// returns as soon as anything arrives.
const READ_BATCH: u32 = 1000;

/// How long shutdown waits for outstanding confirms and the last checkpoint write.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// Most bytes of message bodies sent and not yet confirmed: sends are pipelined, so large
/// documents must not pile up in memory while the socket catches up.
const INFLIGHT_BYTES: usize = 64 << 20;

/// How often a running snapshot reports its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// While a snapshot runs, an idle stream's `getMore` returns after this long at most, so a
/// chunk never waits long for the stream to pass its watermark (a real `mongod` otherwise
/// waits up to a second on a stream whose database is quiet).
const SNAPSHOT_AWAIT: Duration = Duration::from_millis(100);

/// Run the bridge until `shutdown` is cancelled (then drain, checkpoint and return `Ok`), a
/// snapshot completes under `CDC_SNAPSHOT_MODE=initial_only`, or a fatal error occurs.
/// Connection failures after start-up are retried with backoff.
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
    let mode = settings.cdc.cdc_snapshot_mode;
    let mut resume = store.load().await.map_err(|e| classify(&mongo, e))?;
    match &resume {
        Some(Checkpoint::Stream { .. }) if mode == SnapshotMode::InitialOnly => {
            tracing::info!(name = %settings.cdc.cdc_name, "CDC_SNAPSHOT_MODE=initial_only and the snapshot is complete");
            return Ok(());
        }
        Some(Checkpoint::Snapshot { token, progress }) if mode == SnapshotMode::NoData => {
            tracing::warn!(snapshot = %progress.id, "CDC_SNAPSHOT_MODE=no_data: abandoning the snapshot in progress");
            resume = Some(Checkpoint::Stream { token: token.clone() });
        }
        Some(Checkpoint::Snapshot { progress, .. }) => {
            tracing::info!(name = %settings.cdc.cdc_name, snapshot = %progress.id, "resuming the snapshot in progress")
        }
        Some(Checkpoint::Stream { .. }) => tracing::info!(name = %settings.cdc.cdc_name, "resuming from checkpoint"),
        None if mode.snapshots_first() => {
            tracing::info!(name = %settings.cdc.cdc_name, "no checkpoint: snapshot, then stream")
        }
        None => tracing::info!(name = %settings.cdc.cdc_name, "no checkpoint, starting from now"),
    }

    let mut bridge = Bridge {
        topology: Topology::new(&settings.rabbit.rabbitmq_queue_name),
        window: settings.cdc.cdc_confirm_window.max(1),
        confirmed: resume,
        resync: false,
        writer: CheckpointWriter::spawn(store.clone()),
        progress: Progress::default(),
        store,
        settings,
        mongo,
        rabbit,
    };
    let result = bridge.supervise(&shutdown).await;
    bridge.writer.finish(DRAIN_LIMIT).await;
    bridge.progress.finish();
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
    /// The newest checkpoint whose message, and every message before it, the broker confirmed.
    confirmed: Option<Checkpoint>,
    /// The resume point was lost and the next session snapshots again.
    resync: bool,
    writer: CheckpointWriter,
    /// For the one synchronous write: pinning the start on a first run.
    store: MongoCheckpointStore,
    progress: Progress,
}

/// How a session ended without error.
enum End {
    Shutdown,
    /// The stream closed (for example after an `invalidate`); open a new one.
    StreamClosed,
    /// The snapshot is complete and the mode says stop.
    Finished,
}

/// A session failure, by the side that failed.
enum Failure {
    Mongo(mongodb::error::Error),
    Mq(MqError),
    HistoryLost,
    Fatal(BridgeError),
}

impl Bridge {
    async fn supervise(&mut self, shutdown: &CancellationToken) -> Result<(), BridgeError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.session(shutdown).await {
                Ok(End::Shutdown | End::Finished) => return Ok(()),
                Ok(End::StreamClosed) => {
                    tracing::info!("change stream closed, reopening");
                    continue;
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::HistoryLost) => self.history_lost()?,
                Err(Failure::Mongo(e)) if history_lost(&e) => self.history_lost()?,
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

    /// The resume point is gone: snapshot again (`when_needed`) or stop with how to start over.
    fn history_lost(&mut self) -> Result<(), BridgeError> {
        if self.settings.cdc.cdc_snapshot_mode != SnapshotMode::WhenNeeded {
            return Err(MongoError::HistoryLost {
                name: self.settings.cdc.cdc_name.clone(),
                state_db: self.settings.cdc.cdc_state_database.clone(),
            }
            .into());
        }
        tracing::warn!(
            name = %self.settings.cdc.cdc_name,
            "the resume point has fallen off the oplog: snapshotting again from now (CDC_SNAPSHOT_MODE=when_needed)"
        );
        self.confirmed = None;
        self.resync = true;
        Ok(())
    }

    /// One change stream and one channel, until shutdown, a closed stream or a failure.
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<End, Failure> {
        let publisher = Publisher::open(&self.rabbit, &self.topology).await.map_err(|e| match e {
            MqError::Auth { .. } | MqError::Vhost { .. } | MqError::Topology(_) => Failure::Fatal(e.into()),
            e => Failure::Mq(e),
        })?;
        let client = self.mongo.client().await.map_err(|e| Failure::Fatal(e.into()))?.clone();
        if let Some(checkpoint) = &self.confirmed
            && oplog_lost(&client, checkpoint.token()).await
        {
            return Err(Failure::HistoryLost);
        }
        let (stream, at) = self.open(&client).await?;
        let snapshot = match &at {
            Checkpoint::Snapshot { .. } => Some(source::Snapshot::new(self.reader(&client))),
            Checkpoint::Stream { .. } => None,
        };
        let stop_after = self.settings.cdc.cdc_snapshot_mode == SnapshotMode::InitialOnly;
        let source = Source::new(stream, at, snapshot, stop_after, self.settings.mongo.mongo_database_name.clone());

        // Room for at least two chunks, so the next one is read while one is published.
        let (tx, mut rx) = mpsc::channel(self.window.max(2 * self.settings.cdc.cdc_snapshot_chunk));
        let reader = tokio::spawn(source.run(tx));
        let _stop_reader = AbortOnDrop(reader.abort_handle());
        // Messages sent and not yet confirmed, in order, each resolving to where the bridge
        // stands once it is confirmed (and to its size, for the byte bound).
        let mut inflight: FuturesOrdered<BoxFuture<'static, Result<(Checkpoint, usize), MqError>>> =
            FuturesOrdered::new();
        let mut inflight_bytes = 0usize;
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);

        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(End::Shutdown),
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    let (at, bytes) = done.map_err(Failure::Mq)?;
                    inflight_bytes -= bytes;
                    self.advance(at);
                }
                _ = ticker.tick() => self.progress.log(),
                item = rx.recv(), if inflight.len() < self.window && inflight_bytes < INFLIGHT_BYTES => match item {
                    None => break Ok(End::StreamClosed),
                    Some(Err(SourceError::Mongo(e))) => break Err(Failure::Mongo(e)),
                    Some(Err(SourceError::Fatal(why))) => break Err(Failure::Fatal(BridgeError::Snapshot(why))),
                    Some(Ok(Item::Mark(at))) => {
                        if inflight.is_empty() {
                            self.advance(at);
                        } else {
                            inflight.push_back(Box::pin(async move { Ok((at, 0)) }));
                        }
                    }
                    Some(Ok(Item::Finished(at))) => {
                        inflight.push_back(Box::pin(async move { Ok((at, 0)) }));
                        break Ok(End::Finished);
                    }
                    Some(Ok(Item::Publish { body, envelope, at })) => {
                        let bytes = body.len();
                        inflight_bytes += bytes;
                        let mut send = Box::pin(publisher.send(body, envelope));
                        // Polled once here, so the frames are queued in the source's order;
                        // writing them out and the broker's confirm complete in flight.
                        let queued = futures::poll!(send.as_mut());
                        inflight.push_back(Box::pin(async move {
                            let confirm = match queued {
                                Poll::Ready(sent) => sent?,
                                Poll::Pending => send.await?,
                            };
                            confirmed(confirm).await.map(|()| (at, bytes))
                        }));
                    }
                },
            }
        };
        drop(rx);

        // Stop reading, then let what is in flight land (bounded), so the checkpoint covers it.
        let drained = tokio::time::timeout(DRAIN_LIMIT, async {
            while let Some(done) = inflight.next().await {
                self.advance(done?.0);
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

    /// Open the change stream where the bridge stands; on a first start (or a resync), open
    /// it at "now", plan the snapshot the mode asks for, and save that starting point before
    /// anything is published, so a crash from here on resumes instead of skipping.
    async fn open(
        &mut self,
        client: &mongodb::Client,
    ) -> Result<(ChangeStream<ChangeStreamEvent<Document>>, Checkpoint), Failure> {
        if let Some(at) = self.confirmed.clone() {
            let snapshotting = matches!(at, Checkpoint::Snapshot { .. });
            let stream = self.open_stream(client, Some(at.token()), snapshotting).await.map_err(Failure::Mongo)?;
            return Ok((stream, at));
        }
        let mode = self.settings.cdc.cdc_snapshot_mode;
        let snapshotting = mode.snapshots_first() || self.resync;
        let stream = self.open_stream(client, None, snapshotting).await.map_err(Failure::Mongo)?;
        let Some(token) = stream.resume_token() else {
            return Err(Failure::Fatal(BridgeError::Snapshot(
                "the server gave no resume token for a new change stream (MongoDB 4.0.7 or later is needed)".into(),
            )));
        };
        let at = if snapshotting {
            let reader = self.reader(client);
            let mongo = &self.settings.mongo;
            let collections = reader.plan(&mongo.collections(), &[]).await.map_err(Failure::Mongo)?;
            let progress = SnapshotProgress {
                id: snapshot::new_id(),
                reason: if self.resync { Reason::Resync } else { Reason::Initial },
                pending: collections.into(),
                current: None,
            };
            tracing::info!(snapshot = %progress.id, collections = ?progress.pending, "snapshot planned");
            Checkpoint::Snapshot { token, progress: Box::new(progress) }
        } else {
            Checkpoint::Stream { token }
        };
        self.store.save(&at).await.map_err(|e| match e {
            MongoError::Driver(d) => Failure::Mongo(d),
            e => Failure::Fatal(e.into()),
        })?;
        self.resync = false;
        self.confirmed = Some(at.clone());
        Ok((stream, at))
    }

    fn reader(&self, client: &mongodb::Client) -> snapshot::Reader {
        let s = &self.settings;
        snapshot::Reader::new(
            client,
            &s.mongo.mongo_database_name,
            &s.cdc.cdc_state_database,
            &s.cdc.cdc_name,
            s.cdc.cdc_snapshot_chunk,
        )
    }

    fn advance(&mut self, at: Checkpoint) {
        self.progress.update(&at);
        self.writer.advance(at.clone());
        self.confirmed = Some(at);
    }

    async fn open_stream(
        &self,
        client: &mongodb::Client,
        after: Option<&ResumeToken>,
        snapshotting: bool,
    ) -> Result<ChangeStream<ChangeStreamEvent<Document>>, mongodb::error::Error> {
        let db = client.database(&self.settings.mongo.mongo_database_name);
        // Other operation types are dropped as they are read (`encode::change`), not by a
        // server-side `$match`: it costs the server per event, and the post-batch resume
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
        let watch = if snapshotting { watch.max_await_time(SNAPSHOT_AWAIT) } else { watch };
        match after {
            // `start_after` (not `resume_after`) so a token from an `invalidate` still works.
            Some(token) => watch.start_after(token.clone()).await,
            None => watch.await,
        }
    }
}

/// A running snapshot's progress, for people: a log line per collection every few seconds
/// (documents done of the estimate, rate, ETA), and a progress bar on a terminal.
#[derive(Default)]
struct Progress {
    current: Option<(String, u64, u64)>,
    started: Option<(String, Instant, u64)>,
    bar: Option<ProgressBar>,
}

impl Progress {
    fn update(&mut self, at: &Checkpoint) {
        let Some(c) = (match at {
            Checkpoint::Snapshot { progress, .. } => progress.current.as_ref(),
            Checkpoint::Stream { .. } => None,
        }) else {
            if self.current.take().is_some() {
                self.finish();
            }
            return;
        };
        if self.started.as_ref().is_none_or(|(name, ..)| name != &*c.name) {
            self.finish();
            self.started = Some((c.name.to_string(), Instant::now(), c.rows));
            if std::io::stderr().is_terminal() {
                let bar = ProgressBar::new(c.estimate.max(1));
                if let Ok(style) =
                    ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} ({per_sec}, {eta})")
                {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(c.name.to_string());
                self.bar = Some(bar);
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_position(c.rows);
        }
        self.current = Some((c.name.to_string(), c.rows, c.estimate));
    }

    fn log(&self) {
        let (Some((name, rows, estimate)), Some((_, since, at_start))) = (&self.current, &self.started) else { return };
        let secs = since.elapsed().as_secs_f64().max(1e-3);
        let rate = (rows - at_start.min(rows)) as f64 / secs;
        let eta_s = if rate > 0.0 { (estimate.saturating_sub(*rows) as f64 / rate).round() as u64 } else { 0 };
        tracing::info!(collection = %name, done = rows, estimate, rate_per_s = rate.round() as u64, eta_s, "snapshot progress");
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.started = None;
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
    let Some(at) = encode::token_cluster_time(token) else { return false };
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
