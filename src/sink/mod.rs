//! The ML sink: consume the bridge's messages -> apply each once to versioned records and the
//! online models -> serve stats, predictions and drift alerts over HTTP, and publish the
//! alerts to `<queue>.alerts`.
//!
//! Exactly-once effect on top of at-least-once delivery: a message is acknowledged only after
//! a checkpoint that contains its effect is on disk, and the checkpoint also holds the ids of
//! recent events, so a redelivery (after a crash, a reconnect, or a bridge retry) is
//! recognised and skipped. A checkpoint (a delta of what changed, see [`checkpoint`]) is
//! written every `SINK_CHECKPOINT_EVERY` applied events, when the prefetch window is full
//! (nothing more can arrive until we ack), after a short idle pause, and at shutdown. The
//! drift alerts raised since the previous checkpoint are published, confirmed, before it is
//! written: a crash before the write replays their events, which raise them again with the
//! same ids (at least once).

pub mod alerts;
pub mod checkpoint;
pub mod core;
pub mod encoder;
pub mod features;
pub mod http;
pub mod learner;
pub mod spec;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use self::alerts::AlertPublisher;
use self::checkpoint::CheckpointFile;
use self::core::{Outcome, SinkCore};
use crate::config::SinkSettings;
use crate::error::{MqError, SinkError};
use crate::mq::Rabbit;
use crate::mq::topology::Topology;

/// How long without deliveries before unacknowledged work is checkpointed and acked.
const IDLE_FLUSH: Duration = Duration::from_millis(100);

/// Event ids remembered for dedupe: far more than can be unacknowledged at once.
fn dedupe_window(prefetch: u16) -> usize {
    (usize::from(prefetch) * 8).max(10_000)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Build the core from the checkpoint in `file`, or fresh; refuse a checkpoint made for other
/// models (names, tasks, kinds, features, labels or hyper-parameters).
pub fn load_core(settings: &SinkSettings, file: &mut CheckpointFile) -> Result<SinkCore, SinkError> {
    let window = dedupe_window(settings.prefetch);
    match file.load()? {
        Some(core) => {
            let path = file.path().display().to_string();
            let mut core = core.restored(window).map_err(|e| SinkError::Checkpoint(format!("{path} {e}")))?;
            let shorthand = settings.models_file.is_none();
            let name = |setting: &'static str| match (shorthand, setting) {
                (false, s) => format!("`{s}` in SINK_MODELS"),
                (true, "task") => "SINK_TASK".into(),
                (true, "kind") => "SINK_MODEL".into(),
                (true, "features") => "SINK_FEATURES".into(),
                (true, "label") => "SINK_LABEL".into(),
                (true, "hash_buckets") => "SINK_HASH_BUCKETS".into(),
                (true, "params") => "SINK_LEARNING_RATE / SINK_L2".into(),
                (true, _) => "SINK_DRIFT_ACTION".into(),
            };
            core.adopt(&settings.models, name).map_err(|what| SinkError::SpecChanged { path, what })?;
            tracing::info!(path = %file.path().display(), "loaded checkpoint");
            Ok(core)
        }
        None => SinkCore::new(settings.models.clone(), window).map_err(|e| SinkError::Model(e.to_string())),
    }
}

/// Run the sink until `shutdown`; then checkpoint, acknowledge and return.
pub async fn run(settings: SinkSettings, shutdown: CancellationToken) -> Result<(), SinkError> {
    let sink = Sink::open(settings)?;
    sink.serve(shutdown).await
}

/// A sink whose state is loaded, ready to serve. Keep [`Sink::core`] to watch it in process.
pub struct Sink {
    settings: SinkSettings,
    topology: Topology,
    file: SharedFile,
    core: http::Shared,
}

/// The checkpoint files, shared with the blocking task that writes them.
type SharedFile = Arc<Mutex<CheckpointFile>>;

impl Sink {
    /// Load the checkpoint (or start fresh).
    pub fn open(settings: SinkSettings) -> Result<Self, SinkError> {
        let topology = Topology::new(&settings.rabbit.rabbitmq_queue_name);
        let mut file = CheckpointFile::new(&settings.state_dir, &topology.queue)?;
        let core = Arc::new(Mutex::new(load_core(&settings, &mut file)?));
        Ok(Self { settings, topology, file: Arc::new(Mutex::new(file)), core })
    }

    /// The shared core (records, model, counters).
    pub fn core(&self) -> http::Shared {
        self.core.clone()
    }

    /// Serve HTTP and consume until `shutdown`; then checkpoint, acknowledge and return.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), SinkError> {
        let Sink { settings, topology, file, core } = self;
        let listener = tokio::net::TcpListener::bind(settings.http_addr)
            .await
            .map_err(|e| SinkError::Http { addr: settings.http_addr.to_string(), reason: e.to_string() })?;
        let rabbit = Rabbit::shared(&settings.rabbit);
        rabbit.check().await?;
        // Declared before the API answers, so whatever is published once /health is up has a
        // queue to land in.
        let channel = rabbit.channel().await?;
        topology.declare(&channel).await?;
        alerts::declare(&channel, &alerts::queue_name(&topology.queue)).await?;
        let _ = channel.close(200, "declared".into()).await;
        tracing::info!(addr = %settings.http_addr, queue = %topology.queue, "sink started");

        let http_stop = shutdown.child_token();
        let stop = http_stop.clone();
        let server = tokio::spawn(
            axum::serve(listener, http::router(core.clone()))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .into_future(),
        );

        let mut consumer = Consumer { settings, topology, file, core, rabbit };
        let result = consumer.supervise(&shutdown).await;
        http_stop.cancel();
        let _ = server.await;
        result
    }
}

struct Consumer {
    settings: SinkSettings,
    topology: Topology,
    file: SharedFile,
    core: http::Shared,
    rabbit: Rabbit,
}

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
    async fn supervise(&mut self, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.session(shutdown).await {
                Ok(()) => return Ok(()),
                Err(
                    e @ (MqError::Auth { .. } | MqError::Vhost { .. } | MqError::Tls { .. } | MqError::Topology(_)),
                ) => {
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "RabbitMQ failed; reconnecting (unacknowledged messages come again and are deduplicated)")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return self.last_checkpoint().await,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn session(&mut self, shutdown: &CancellationToken) -> Result<(), MqError> {
        let channel = self.rabbit.channel().await?;
        self.topology.declare(&channel).await?;
        let alerts = AlertPublisher::open(&self.rabbit, &self.topology.queue).await?;
        channel.basic_qos(self.settings.prefetch, BasicQosOptions::default()).await?;
        let mut deliveries = channel
            .basic_consume(
                self.topology.queue.as_str().into(),
                "mongo-cdc-sink".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut pending = Pending::default();
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                d = tokio::time::timeout(IDLE_FLUSH, deliveries.next()) => d,
            };
            match next {
                Err(_idle) => {
                    if pending.unsettled > 0 || pending.count > 0 {
                        self.flush(&channel, &alerts, &mut pending).await?;
                    }
                }
                Ok(None) => return Err(MqError::Topology("the broker cancelled the consumer".into())),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(delivery))) => {
                    let outcome = {
                        let mut core = http::lock(&self.core);
                        let outcome = core.apply_bytes(&delivery.data);
                        if let Outcome::Applied { ts_ms, .. } = outcome {
                            core.record_lag(ts_ms, now_ms());
                        }
                        outcome
                    };
                    pending.count += 1;
                    if let Outcome::Poison(reason) = &outcome {
                        tracing::warn!(reason = %reason, tag = delivery.delivery_tag, "dead-lettering a poison message");
                        channel.basic_reject(delivery.delivery_tag, BasicRejectOptions { requeue: false }).await?;
                    } else {
                        pending.ack_upto = Some(delivery.delivery_tag);
                        pending.unsettled += 1;
                    }
                    if pending.count >= self.settings.checkpoint_every
                        || pending.unsettled >= u64::from(self.settings.prefetch)
                    {
                        self.flush(&channel, &alerts, &mut pending).await?;
                    }
                }
            }
        }
        // Shutdown: stop deliveries, cover what was applied, then acknowledge it.
        self.flush(&channel, &alerts, &mut pending).await?;
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
    ) -> Result<(), MqError> {
        let unpublished = http::lock(&self.core).unpublished_alerts().to_vec();
        alerts.publish(&unpublished).await?;
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
        self.checkpoint().await
    }

    async fn checkpoint(&self) -> Result<(), SinkError> {
        let (file, core) = (self.file.clone(), self.core.clone());
        // Written while holding the core: the consumer waits for it anyway, and streaming the
        // state to disk needs no copy of it in memory.
        tokio::task::spawn_blocking(move || {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            file.save(&mut http::lock(&core))
        })
        .await
        .map_err(|e| SinkError::Checkpoint(e.to_string()))?
    }
}
