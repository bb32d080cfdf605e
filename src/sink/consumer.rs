//! The sink's AMQP loop: consume with a bounded prefetch, apply each delivery to the core,
//! dead-letter poison at once, and, at each flush, publish the alerts raised, checkpoint, then
//! acknowledge. A failed session (the broker restarted, dropped the connection or cancelled
//! the consumer) starts again with backoff; what was not acknowledged comes again and is
//! recognised.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;

use super::alerts::AlertPublisher;
use super::core::Outcome;
use super::decode::Delivery;
use super::pg_mirror::{PgMirror, Refused};
use super::redis_mirror::RedisMirror;
use super::settings::SinkSettings;
use super::state::Row;
use super::stats::Board;
use super::{SharedFile, http};
use crate::config::QueueType;
use crate::error::{MqError, SinkError};
use crate::mq::Rabbit;
use crate::mq::publisher::confirmed;
use crate::mq::topology::Topology;
use crate::supervise::Backoff;

/// How long without deliveries before unacknowledged work is checkpointed and acked.
const IDLE_FLUSH: Duration = Duration::from_millis(100);

/// How often the figures are published while deliveries flow (and at every checkpoint).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// The offset a stream gave a delivery (its `x-stream-offset` header).
fn stream_offset(delivery: &lapin::message::Delivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get("x-stream-offset")? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub(super) struct Consumer {
    pub(super) settings: SinkSettings,
    pub(super) topology: Topology,
    pub(super) file: SharedFile,
    pub(super) core: http::Shared,
    pub(super) rabbit: Rabbit,
    pub(super) board: Board,
    pub(super) mirrors: tokio::sync::Mutex<Mirrors>,
}

/// The PostgreSQL and Redis mirrors, each when configured.
pub(super) struct Mirrors {
    pg: Option<PgMirror>,
    redis: Option<RedisMirror>,
}

impl Mirrors {
    pub(super) fn new(settings: &SinkSettings, queue: &str) -> Result<Self, SinkError> {
        let m = &settings.mirrors;
        let pg = m.postgres_url.as_ref().map(|u| PgMirror::new(u, &m.postgres_schema)).transpose();
        let redis = m.redis_url.as_ref().map(|u| RedisMirror::new(u, queue)).transpose();
        if let Some(url) = &m.postgres_url {
            tracing::info!(url = %url, schema = %m.postgres_schema, "materialising records into PostgreSQL");
        }
        if let Some(url) = &m.redis_url {
            tracing::info!(url = %url, "mirroring stats and alerts into Redis");
        }
        Ok(Self { pg: pg.map_err(SinkError::Mirror)?, redis: redis.map_err(SinkError::Mirror)? })
    }

    fn any(&self) -> bool {
        self.pg.is_some() || self.redis.is_some()
    }

    /// Write what the next checkpoint covers: the changed records (after a start, every
    /// stored record first), the figures and the alerts. Retries with backoff until it
    /// succeeds; the records PostgreSQL refuses as data, to be dead-lettered; `None` if
    /// shutdown came first (then nothing is checkpointed nor acknowledged: it all comes again).
    async fn write(&mut self, core: &http::Shared, shutdown: &CancellationToken) -> Option<Vec<Refused>> {
        if !self.any() {
            return Some(Vec::new());
        }
        let mut refused = self.catch_up(core, shutdown).await?;
        let (rows, stats, alerts) = {
            let core = http::lock(core);
            let rows = if self.pg.is_some() { core.changed_rows() } else { Vec::new() };
            (rows, core.stats(), core.unpublished_alerts().to_vec())
        };
        if let Some(pg) = &mut self.pg {
            refused.extend(write_pg(pg, &rows, shutdown).await?);
        }
        if let Some(redis) = &mut self.redis {
            let mut backoff = Backoff::default();
            while let Err(e) = redis.write(&stats, &alerts).await {
                tracing::warn!(error = %e, "cannot write to Redis; not acknowledging, retrying");
                if !backoff.wait(shutdown).await {
                    return None;
                }
            }
        }
        Some(refused)
    }
}

impl Mirrors {
    /// After a start, write every stored record into PostgreSQL, a page at a time (the
    /// records are not all in memory); each page is one transaction, retried with backoff.
    /// The records PostgreSQL refuses; `None` if shutdown came first or the store cannot be read.
    async fn catch_up(&mut self, core: &http::Shared, shutdown: &CancellationToken) -> Option<Vec<Refused>> {
        let mut refused = Vec::new();
        let Some(pg) = self.pg.as_mut().filter(|pg| pg.wants_all()) else { return Some(refused) };
        let mut after: Option<String> = None;
        let mut written = 0;
        loop {
            let page = http::lock(core).stored_rows(after.as_deref(), MIRROR_PAGE);
            let (rows, next) = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the records to mirror; messages stay unacknowledged");
                    return None;
                }
            };
            refused.extend(write_pg(pg, &rows, shutdown).await?);
            written += rows.len();
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        tracing::info!(records = written, "PostgreSQL mirror caught up with the stored records");
        pg.mark_synced();
        Some(refused)
    }
}

/// Write `rows` into PostgreSQL, retrying with backoff until it succeeds; the records
/// PostgreSQL refuses as data; `None` if shutdown came first.
async fn write_pg(pg: &mut PgMirror, rows: &[Row], shutdown: &CancellationToken) -> Option<Vec<Refused>> {
    let mut backoff = Backoff::default();
    loop {
        match pg.write(rows).await {
            Ok(refused) => return Some(refused),
            Err(e) => {
                tracing::warn!(error = %e, rows = rows.len(), "cannot write to PostgreSQL; not acknowledging, retrying")
            }
        }
        if !backoff.wait(shutdown).await {
            return None;
        }
    }
}

/// Publish `body` (persistent, with `props`) to the dead-letter queue `dlq` with `reason` in its
/// `x-reason` header, and wait for the broker's confirm (`channel` is in confirm mode).
async fn dead_letter(
    channel: &lapin::Channel,
    dlq: &str,
    body: &[u8],
    props: BasicProperties,
    reason: &str,
) -> Result<(), MqError> {
    let mut headers = FieldTable::default();
    headers.insert("x-reason".into(), AMQPValue::LongString(reason.into()));
    let props = props.with_headers(headers).with_delivery_mode(2);
    let mandatory = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm = channel.basic_publish("".into(), dlq.into(), mandatory, body, props).await?;
    confirmed(confirm).await
}

/// Records per PostgreSQL transaction while a mirror catches up after a start.
const MIRROR_PAGE: usize = 5_000;

/// Deliveries applied in memory but not yet covered by a checkpoint.
#[derive(Default)]
struct Pending {
    /// Deliveries since the last checkpoint (acked or rejected alike).
    count: u64,
    /// Highest delivery tag to acknowledge (`multiple`); poison is rejected at once instead.
    ack_upto: Option<u64>,
    /// Deliveries not yet settled with the broker.
    unsettled: u64,
}

impl Consumer {
    pub(super) async fn supervise(&mut self, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let mut backoff = Backoff::default();
        loop {
            backoff.session_started();
            match self.session(shutdown).await {
                Ok(()) => return Ok(()),
                Err(SinkError::Mq(
                    e @ (MqError::Auth { .. } | MqError::Vhost { .. } | MqError::Tls { .. } | MqError::Topology(_)),
                )) => {
                    return Err(e.into());
                }
                Err(SinkError::Mq(e)) => {
                    tracing::warn!(error = %e, "RabbitMQ failed; reconnecting (unacknowledged messages come again and are deduplicated)")
                }
                // The state store failed: stop; nothing since the last checkpoint was acknowledged.
                Err(e) => return Err(e),
            }
            if !backoff.wait(shutdown).await {
                return self.last_checkpoint().await;
            }
        }
    }

    async fn session(&mut self, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let channel = self.rabbit.channel().await?;
        self.topology.declare(&channel).await?;
        let alerts = AlertPublisher::open(&self.rabbit, &self.topology.queue).await?;
        channel.basic_qos(self.settings.prefetch, BasicQosOptions::default()).await.map_err(MqError::from)?;
        // A stream keeps its messages: read on after the last one applied (checkpointed), or,
        // with no checkpoint, from `SINK_STREAM_START`. Poison cannot be dead-lettered from a
        // stream, so it is published to the dead-letter queue here.
        let stream = self.topology.queue_type == QueueType::Stream;
        let mut args = FieldTable::default();
        let mut dead_letters = None;
        if stream {
            let offset = match http::lock(&self.core).stream_offset() {
                Some(last) => AMQPValue::LongLongInt(last as i64 + 1),
                None => AMQPValue::LongString(self.settings.stream_start.as_str().into()),
            };
            args.insert("x-stream-offset".into(), offset);
            let ch = self.rabbit.channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(MqError::from)?;
            dead_letters = Some(ch);
        }
        let mut deliveries = channel
            .basic_consume(
                self.topology.queue.as_str().into(),
                "mongo-cdc-sink".into(),
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(MqError::from)?;
        let mut pending = Pending::default();
        let mut published = Instant::now();
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                d = tokio::time::timeout(IDLE_FLUSH, deliveries.next()) => d,
            };
            match next {
                Err(_idle) => {
                    if pending.unsettled > 0 || pending.count > 0 {
                        self.flush(&channel, &alerts, &mut pending, shutdown).await?;
                    }
                }
                // The queue was deleted, or its node failed over: consume again.
                Ok(None) => return Err(MqError::Cancelled.into()),
                Ok(Some(Err(e))) => return Err(MqError::from(e).into()),
                Ok(Some(Ok(delivery))) => {
                    let outcome = {
                        let mut core = http::lock(&self.core);
                        let outcome = core.apply_delivery(&Delivery::of(
                            &delivery.data,
                            delivery.routing_key.as_str(),
                            delivery.properties.headers().as_ref(),
                        ));
                        if let Some(offset) = stream.then(|| stream_offset(&delivery)).flatten() {
                            core.set_stream_offset(offset);
                        }
                        if let Outcome::Applied { ts_ms, .. } = outcome {
                            let now = now_ms();
                            core.record_lag(ts_ms, now);
                            self.board.observe_lag(now - ts_ms);
                        }
                        if published.elapsed() >= PUBLISH_EVERY {
                            self.board.publish(&core);
                            published = Instant::now();
                        }
                        outcome
                    };
                    if let Outcome::Unavailable(reason) = &outcome {
                        return Err(SinkError::Checkpoint(reason.clone()));
                    }
                    pending.count += 1;
                    if let (Outcome::Poison(reason), Some(dlq)) = (&outcome, &dead_letters) {
                        tracing::warn!(reason = %reason, tag = delivery.delivery_tag, "dead-lettering a poison message");
                        let props = delivery.properties.clone();
                        dead_letter(dlq, &self.topology.dlq, &delivery.data, props, reason).await?;
                        pending.ack_upto = Some(delivery.delivery_tag);
                        pending.unsettled += 1;
                    } else if let Outcome::Poison(reason) = &outcome {
                        tracing::warn!(reason = %reason, tag = delivery.delivery_tag, "dead-lettering a poison message");
                        channel
                            .basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false })
                            .await
                            .map_err(MqError::from)?;
                    } else {
                        pending.ack_upto = Some(delivery.delivery_tag);
                        pending.unsettled += 1;
                    }
                    if pending.count >= self.settings.checkpoint_every
                        || pending.unsettled >= u64::from(self.settings.prefetch)
                    {
                        self.flush(&channel, &alerts, &mut pending, shutdown).await?;
                    }
                }
            }
        }
        // Shutdown: stop deliveries, cover what was applied, then acknowledge it.
        self.flush(&channel, &alerts, &mut pending, shutdown).await?;
        alerts.close().await;
        let _ = channel.close(200, "bye".into()).await;
        Ok(())
    }

    /// Publish the alerts raised since the last checkpoint (confirmed), checkpoint, then
    /// acknowledge everything the checkpoint covers. An alert that cannot be published fails
    /// the session before anything is written or acknowledged.
    async fn flush(
        &self,
        channel: &lapin::Channel,
        alerts: &AlertPublisher,
        pending: &mut Pending,
        shutdown: &CancellationToken,
    ) -> Result<(), MqError> {
        let unpublished = http::lock(&self.core).unpublished_alerts().to_vec();
        alerts.publish(&unpublished).await?;
        let Some(refused) = self.mirrors.lock().await.write(&self.core, shutdown).await else {
            tracing::warn!("stopping before the mirrors were written; messages stay unacknowledged");
            return Ok(());
        };
        self.dead_letter_refused(&refused).await?;
        if let Err(e) = self.checkpoint().await {
            // Not acking keeps the messages; they come again after a restart.
            tracing::error!(error = %e, "checkpoint failed; messages stay unacknowledged");
            return Ok(());
        }
        if let Some(tag) = pending.ack_upto.take() {
            channel.basic_ack(tag, BasicAckOptions { multiple: true }).await?;
        }
        *pending = Pending::default();
        Ok(())
    }

    /// The checkpoint at shutdown after a failed session: written only if the alerts it
    /// covers can be published first; otherwise the unacknowledged messages come again after
    /// the restart and raise them again.
    async fn last_checkpoint(&self) -> Result<(), SinkError> {
        let unpublished = http::lock(&self.core).unpublished_alerts().to_vec();
        if !unpublished.is_empty() {
            let published = tokio::time::timeout(Duration::from_secs(5), async {
                let alerts = AlertPublisher::open(&self.rabbit, &self.topology.queue).await?;
                alerts.publish(&unpublished).await?;
                alerts.close().await;
                Ok::<_, MqError>(())
            })
            .await;
            if !matches!(published, Ok(Ok(()))) {
                tracing::warn!(
                    alerts = unpublished.len(),
                    "cannot publish drift alerts; not checkpointing, so their events come again"
                );
                return Ok(());
            }
        }
        // One attempt: this is shutdown.
        let once = CancellationToken::new();
        once.cancel();
        let Some(refused) = self.mirrors.lock().await.write(&self.core, &once).await else {
            return Ok(());
        };
        let dead_lettered = tokio::time::timeout(Duration::from_secs(5), self.dead_letter_refused(&refused)).await;
        if !matches!(dead_lettered, Ok(Ok(()))) {
            tracing::warn!(
                records = refused.len(),
                "cannot dead-letter the records PostgreSQL refuses; not checkpointing"
            );
            return Ok(());
        }
        self.checkpoint().await
    }

    /// Dead-letter the records PostgreSQL refuses (confirmed), before the checkpoint that
    /// covers them: each goes to the dead-letter queue as `{collection, key, version, doc}`
    /// with its reason in `x-reason`, and the sink goes on. Its row in PostgreSQL keeps the
    /// last version PostgreSQL took.
    async fn dead_letter_refused(&self, refused: &[Refused]) -> Result<(), MqError> {
        if refused.is_empty() {
            return Ok(());
        }
        let channel = self.rabbit.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        for r in refused {
            let row = &r.row;
            tracing::warn!(collection = %row.collection, key = %row.key, version = row.version, reason = %r.reason,
                "dead-lettering a record PostgreSQL refuses");
            let props = BasicProperties::default().with_content_type("application/json".into());
            dead_letter(&channel, &self.topology.dlq, &r.body(), props, &r.reason).await?;
        }
        let _ = channel.close(200, "bye".into()).await;
        Ok(())
    }

    /// Checkpoint: one transaction of the state store, committed (fsync'd) on a blocking
    /// thread under the state's lock (nothing else changes the state meanwhile: the consumer
    /// waits for it); then publish the figures.
    async fn checkpoint(&self) -> Result<(), SinkError> {
        let (file, core) = (self.file.clone(), self.core.clone());
        let written = tokio::task::spawn_blocking(move || file.save(&mut http::lock(&core)))
            .await
            .map_err(|e| SinkError::Checkpoint(e.to_string()))?;
        self.board.publish(&http::lock(&self.core));
        written
    }
}
