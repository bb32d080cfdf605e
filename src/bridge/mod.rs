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
pub mod debezium;
pub mod encode;
mod json;
pub mod metrics;
pub mod settings;
mod snapshot;
mod source;

use std::io::IsTerminal;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use indicatif::{ProgressBar, ProgressStyle};
use mongodb::bson::{Document, RawDocumentBuf, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::checkpoint::{Checkpoint, CheckpointStore, CheckpointWriter, MongoCheckpointStore, Reason, SnapshotProgress};
use self::metrics::BridgeMetrics;
use self::settings::{BridgeSettings, SnapshotMode};
use self::source::{Encoding, Item, Source, SourceError};
use crate::db::Mongo;
use crate::error::{MongoError, MqError};
use crate::mq::Rabbit;
use crate::mq::publisher::{Publisher, confirmed_all};
use crate::mq::topology::Topology;
use crate::supervise::Backoff;

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
    /// An event that cannot be published (`CDC_OVERSIZE=fail`), or a stream we cannot read.
    #[error("{0}")]
    Source(String),
    /// `/health` and `/metrics` cannot be served.
    #[error("cannot listen on CDC_HTTP_ADDR {addr}: {reason}")]
    Http {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
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

    let metrics = Arc::new(BridgeMetrics::new(settings.headroom_warn));
    let http_stop = shutdown.child_token();
    let http = match settings.http_addr {
        Some(addr) => Some(
            metrics::serve(addr, metrics.clone(), http_stop.clone())
                .await
                .map_err(|reason| BridgeError::Http { addr: addr.to_string(), reason })?,
        ),
        None => None,
    };
    let headroom = tokio::spawn(watch_headroom(client.clone(), metrics.clone()));
    let saved = {
        let m = metrics.clone();
        move |c: &Checkpoint| m.checkpoint_written(encode::token_cluster_time(c.token()))
    };
    let mut bridge = Bridge {
        topology: Topology::from_settings(&settings.rabbit, None),
        window: settings.cdc.cdc_confirm_window.max(1),
        confirmed: resume,
        resync: false,
        writer: CheckpointWriter::spawn(store.clone(), saved),
        progress: Progress::default(),
        split_events: None,
        metrics,
        confirmed_messages: 0,
        store,
        settings,
        mongo,
        rabbit,
    };
    let result = bridge.supervise(&shutdown).await;
    bridge.writer.finish(DRAIN_LIMIT).await;
    bridge.progress.finish();
    headroom.abort();
    http_stop.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    result
}

/// Every 10 s: how long until the checkpoint falls off the oplog (the time between the oldest
/// oplog entry and the checkpoint), for `/metrics` and `/health`. Nothing where the oplog
/// cannot be read (no privilege, `mongos`).
async fn watch_headroom(client: mongodb::Client, metrics: Arc<BridgeMetrics>) {
    loop {
        let pause = match metrics.checkpoint_time() {
            Some(at) => {
                let oldest = oldest_oplog_entry(&client).await;
                metrics.set_headroom(oldest.map(|(t, _)| i64::from(at.t) - i64::from(t)));
                Duration::from_secs(10)
            }
            // Until the first checkpoint is written.
            None => Duration::from_secs(1),
        };
        tokio::time::sleep(pause).await;
    }
}

/// The timestamp of the oldest oplog entry, if the oplog can be read.
async fn oldest_oplog_entry(client: &mongodb::Client) -> Option<(u32, u32)> {
    let oldest = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"$natural": 1})
        .projection(doc! {"ts": 1})
        .await;
    oldest.ok().flatten().and_then(|d| d.get_timestamp("ts").ok()).map(|ts| (ts.time, ts.increment))
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
    /// Whether the server splits events over 16 MB (`$changeStreamSplitLargeEvent`, MongoDB
    /// 6.0.9 and 7.0+); asked once.
    split_events: Option<bool>,
    metrics: Arc<BridgeMetrics>,
    /// Messages confirmed so far (by this process).
    confirmed_messages: u64,
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
        let mut backoff = Backoff::default();
        loop {
            backoff.session_started();
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
                    self.metrics.set_down(format!("MongoDB failed: {e}"));
                    tracing::warn!(error = %e, "MongoDB failed, resuming from the last confirmed change")
                }
                Err(Failure::Mq(e)) => {
                    self.metrics.set_down(format!("RabbitMQ failed: {e}"));
                    tracing::warn!(error = %e, "RabbitMQ failed, republishing from the last confirmed change")
                }
            }
            if !backoff.wait(shutdown).await {
                return Ok(());
            }
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
            MqError::Auth { .. } | MqError::Vhost { .. } | MqError::Tls { .. } | MqError::Topology(_) => {
                Failure::Fatal(e.into())
            }
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
        let encoding = Encoding {
            db: self.settings.mongo.mongo_database_name.clone(),
            redact: self.settings.exclude_fields.clone(),
            max_bytes: self.settings.cdc.cdc_max_message_bytes,
            oversize: self.settings.cdc.cdc_oversize,
            metrics: self.metrics.clone(),
            format: match self.settings.cdc.cdc_format.as_str() {
                "debezium" => Some(debezium::Options {
                    name: self.settings.cdc.cdc_name.clone(),
                    schemas: self.settings.cdc.cdc_debezium_schemas,
                }),
                _ => None,
            },
        };
        let source = Source::new(stream, at, snapshot, stop_after, encoding);
        self.metrics.set_up();

        // Room for at least two chunks, so the next one is read while one is published.
        let (tx, mut rx) = mpsc::channel(self.window.max(2 * self.settings.cdc.cdc_snapshot_chunk));
        let reader = tokio::spawn(source.run(tx));
        let _stop_reader = AbortOnDrop(reader.abort_handle());
        // Messages sent and not yet confirmed, in order, each resolving to where the bridge
        // stands once it is confirmed (and to its size, for the byte bound).
        let mut inflight: FuturesOrdered<BoxFuture<'static, Result<(Checkpoint, usize), MqError>>> =
            FuturesOrdered::new();
        let mut inflight_bytes = 0usize;
        // What a `kill -9` would publish again: the unconfirmed messages, and the confirmed
        // ones the stored checkpoint does not cover yet. Both together stay within the window.
        let mut persisted = self.writer.persisted();
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);

        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(End::Shutdown),
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    let (at, bytes) = done.map_err(Failure::Mq)?;
                    inflight_bytes -= bytes;
                    self.advance(at, bytes > 0);
                }
                Ok(()) = persisted.changed() => {}
                _ = ticker.tick() => {
                    self.progress.log();
                    self.sample_unrouted().await;
                }
                item = rx.recv(), if self.room(inflight.len(), *persisted.borrow()) && inflight_bytes < INFLIGHT_BYTES => match item {
                    None => break Ok(End::StreamClosed),
                    Some(Err(SourceError::Mongo(e))) => break Err(Failure::Mongo(e)),
                    Some(Err(SourceError::Fatal(why))) => break Err(Failure::Fatal(BridgeError::Source(why))),
                    Some(Ok(Item::Mark(at))) => {
                        if inflight.is_empty() {
                            self.advance(at, false);
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
                        let (collection, op, ts_ms) = (envelope.collection.clone(), envelope.kind, envelope.ts_ms);
                        let mut send = Box::pin(publisher.send(body, envelope));
                        // Polled once here, so the frames are queued in the source's order;
                        // writing them out and the broker's confirm complete in flight.
                        let queued = futures::poll!(send.as_mut());
                        let metrics = self.metrics.clone();
                        let sent_at = Instant::now();
                        inflight.push_back(Box::pin(async move {
                            let confirm = match queued {
                                Poll::Ready(sent) => sent?,
                                Poll::Pending => send.await?,
                            };
                            match confirmed_all(confirm).await {
                                Ok(()) => {
                                    metrics.confirm_latency.observe(sent_at.elapsed().as_secs_f64());
                                    metrics.published.with_label_values(&[collection.as_str(), op]).inc();
                                    if matches!(op, "c" | "u" | "d") {
                                        metrics.change_published(ts_ms);
                                    }
                                    Ok((at, bytes))
                                }
                                Err(e) => {
                                    match e {
                                        MqError::Nack => metrics.nacks.inc(),
                                        MqError::Returned(_) => metrics.returns.inc(),
                                        _ => {}
                                    }
                                    Err(e)
                                }
                            }
                        }));
                    }
                },
            }
        };
        drop(rx);
        if end.is_err() {
            // What is in flight is published again by the next session.
            self.metrics.republished.inc_by(inflight.len() as u64);
        }

        // Stop reading, then let what is in flight land (bounded), so the checkpoint covers it.
        let drained = tokio::time::timeout(DRAIN_LIMIT, async {
            while let Some(done) = inflight.next().await {
                let (at, bytes) = done?;
                self.advance(at, bytes > 0);
            }
            Ok::<(), MqError>(())
        })
        .await;
        match drained {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.metrics.republished.inc_by(inflight.len() as u64 + 1);
                return Err(Failure::Mq(e));
            }
            Err(_) => tracing::warn!("confirms still outstanding after {DRAIN_LIMIT:?}; they will be published again"),
        }
        publisher.close().await;
        end
    }

    /// Open the change stream where the bridge stands; on a first start (or a resync), open
    /// it at "now", plan the snapshot the mode asks for, and save that starting point before
    /// anything is published, so a crash from here on resumes instead of skipping.
    async fn open(&mut self, client: &mongodb::Client) -> Result<(ChangeStream<RawDocumentBuf>, Checkpoint), Failure> {
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
            let collections =
                reader.plan(&mongo.collections(), &mongo.excluded_collections()).await.map_err(Failure::Mongo)?;
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

    /// Whether another message may go out: the unconfirmed ones and the confirmed ones not
    /// yet in the stored checkpoint stay within `CDC_CONFIRM_WINDOW`, so a `kill -9` never
    /// publishes more than that again.
    fn room(&self, unconfirmed: usize, persisted: u64) -> bool {
        let unpersisted = self.confirmed_messages.saturating_sub(persisted) as usize;
        unconfirmed + unpersisted < self.window
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

    /// `at` is confirmed (with everything before it); `message` says whether it was a
    /// published message rather than a mark.
    fn advance(&mut self, at: Checkpoint, message: bool) {
        self.confirmed_messages += u64::from(message);
        self.progress.update(&at, &self.metrics);
        self.writer.advance(at.clone(), self.confirmed_messages);
        self.confirmed = Some(at);
    }

    async fn open_stream(
        &mut self,
        client: &mongodb::Client,
        after: Option<&ResumeToken>,
        snapshotting: bool,
    ) -> Result<ChangeStream<RawDocumentBuf>, mongodb::error::Error> {
        let split = match self.split_events {
            Some(split) => split,
            None => *self.split_events.insert(splits_large_events(client).await),
        };
        let db = client.database(&self.settings.mongo.mongo_database_name);
        // Other operation types are dropped as they are read (`encode::change`), not by a
        // server-side `$match`: it costs the server per event, and the post-batch resume
        // token moves on either way. Collections are filtered on the server.
        let (only, except) = (self.settings.mongo.collections(), self.settings.mongo.excluded_collections());
        let mut pipeline = Vec::new();
        if !only.is_empty() || !except.is_empty() {
            let mut coll = Document::new();
            if !only.is_empty() {
                coll.insert("$in", only);
            }
            if !except.is_empty() {
                coll.insert("$nin", except);
            }
            pipeline.push(doc! {"$match": {"$or": [{"ns.coll": coll}, {"operationType": "invalidate"}]}});
        }
        if split {
            // An event over 16 MB comes in fragments the source puts back together.
            pipeline.push(doc! {"$changeStreamSplitLargeEvent": {}});
        }
        let watch = db
            .watch()
            .pipeline(pipeline)
            .full_document(FullDocumentType::UpdateLookup)
            .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
            .batch_size(READ_BATCH);
        let watch = if snapshotting { watch.max_await_time(SNAPSHOT_AWAIT) } else { watch };
        let stream = match after {
            // `start_after` (not `resume_after`) so a token from an `invalidate` still works.
            Some(token) => watch.start_after(token.clone()).await?,
            None => watch.await?,
        };
        Ok(stream.with_type::<RawDocumentBuf>())
    }

    /// How many messages wait in `<exchange>.unrouted`, for `/metrics`.
    async fn sample_unrouted(&self) {
        let Some(x) = &self.topology.exchange else { return };
        let Ok(ch) = self.rabbit.channel().await else { return };
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        if let Ok(q) = ch.queue_declare(x.unrouted.as_str().into(), passive, Default::default()).await {
            self.metrics.unrouted.set(i64::from(q.message_count()));
        }
        let _ = ch.close(200, "sampled".into()).await;
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
    fn update(&mut self, at: &Checkpoint, metrics: &BridgeMetrics) {
        metrics.snapshot_running.set(i64::from(matches!(at, Checkpoint::Snapshot { .. })));
        let Some(c) = (match at {
            Checkpoint::Snapshot { progress, .. } => progress.current.as_ref(),
            Checkpoint::Stream { .. } => None,
        }) else {
            if self.current.take().is_some() {
                self.finish();
            }
            return;
        };
        metrics.snapshot_rows.with_label_values(&[&*c.name]).set(c.rows as i64);
        metrics.snapshot_estimate.with_label_values(&[&*c.name]).set(c.estimate as i64);
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
    oldest_oplog_entry(client).await.is_some_and(|oldest| oldest > (at.t, at.i))
}

/// Whether the server splits events over 16 MB into fragments (MongoDB 6.0.9 and 7.0+, and
/// SecantusDB, which says it is 8.x); `false` when its version cannot be read.
async fn splits_large_events(client: &mongodb::Client) -> bool {
    let info = client.database("admin").run_command(doc! {"buildInfo": 1}).await;
    let version = info.ok().and_then(|d| d.get_str("version").ok().map(String::from)).unwrap_or_default();
    let parts: Vec<u32> = version.split(['.', '-']).map_while(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [major, ..] if *major >= 7 => true,
        [6, 0, patch, ..] => *patch >= 9,
        _ => false,
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
