//! The ML sink: consume the bridge's messages -> apply each once to versioned records and the
//! online models, the declared rules and schema inference -> serve stats, predictions, the
//! schemas and alerts (anomaly, rule, schema, drift) over HTTP, and publish the alerts to
//! `<queue>.alerts`.
//!
//! Exactly-once effect on top of at-least-once delivery: a message is acknowledged only after
//! a checkpoint that contains its effect is on disk, and the checkpoint also holds the ids of
//! recent events, so a redelivery (after a crash, a reconnect, or a bridge retry) is
//! recognised and skipped. A checkpoint (one transaction of the state store holding what
//! changed, see [`checkpoint`]) is written every `SINK_CHECKPOINT_EVERY` applied events, when the prefetch window is full
//! (nothing more can arrive until we ack), after a short idle pause, and at shutdown. The
//! alerts raised since the previous checkpoint are published, confirmed, before it is
//! written: a crash before the write replays their events, which raise them again with the
//! same ids (at least once).

pub mod alerts;
pub mod analytics;
pub mod checkpoint;
mod consumer;
pub mod core;
pub mod dashboard;
pub mod decode;
pub mod encoder;
pub mod features;
pub mod http;
pub mod learner;
pub mod pg_mirror;
pub mod redis_mirror;
pub mod rules;
pub mod schema;
pub mod settings;
pub mod spec;
pub mod state;
pub mod stats;

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use self::checkpoint::CheckpointStore;
use self::consumer::Consumer;
use self::core::SinkCore;
use self::settings::SinkSettings;
use self::stats::Board;
use crate::error::SinkError;
use crate::mq::Rabbit;
use crate::mq::topology::Topology;

/// Event ids remembered for dedupe: far more than can be unacknowledged at once.
fn dedupe_window(prefetch: u16) -> usize {
    (usize::from(prefetch) * 8).max(10_000)
}

/// Build the core from the checkpoint in `store`, or fresh; refuse a checkpoint made for other
/// models (names, tasks, kinds, features, labels or hyper-parameters).
pub fn load_core(settings: &SinkSettings, store: &CheckpointStore) -> Result<SinkCore, SinkError> {
    let window = dedupe_window(settings.prefetch);
    match store.load(window)? {
        Some(mut core) => {
            let path = store.path().display().to_string();
            let shorthand = settings.models_file.is_none();
            let name = |setting: &'static str| match (shorthand, setting) {
                (false, s) => format!("`{s}` in SINK_MODELS"),
                (true, "task") => "SINK_TASK".into(),
                (true, "kind") => "SINK_MODEL".into(),
                (true, "features") => "SINK_FEATURES".into(),
                (true, "label") => "SINK_LABEL".into(),
                (true, "hash_buckets") => "SINK_HASH_BUCKETS".into(),
                (true, "params") => "SINK_LEARNING_RATE / SINK_L2".into(),
                (true, "threshold") => "SINK_ANOMALY_THRESHOLD".into(),
                (true, _) => "SINK_DRIFT_ACTION".into(),
            };
            core.adopt(&settings.models, name).map_err(|what| SinkError::SpecChanged { path, what })?;
            tracing::info!(path = %store.path().display(), "loaded checkpoint");
            Ok(core)
        }
        None => {
            let mut core =
                SinkCore::new(settings.models.clone(), window).map_err(|e| SinkError::Model(e.to_string()))?;
            store.attach(&mut core)?;
            Ok(core)
        }
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
    board: Board,
}

/// The state store, shared with the blocking task that writes the checkpoints.
pub(crate) type SharedFile = Arc<CheckpointStore>;

impl Sink {
    /// Load the checkpoint (or start fresh).
    pub fn open(settings: SinkSettings) -> Result<Self, SinkError> {
        let topology = Topology::from_settings(&settings.rabbit, settings.partition);
        let file = CheckpointStore::open(&settings.state_dir, &topology.queue)?;
        let mut core = load_core(&settings, &file)?;
        core.analytics_mut().configure(&settings.analytics);
        core.set_decoder(settings.decoder.clone());
        core.configure_alerts(settings.rules.clone(), settings.schema_warmup);
        let board = Board::new(&core);
        Ok(Self { settings, topology, file: Arc::new(file), core: Arc::new(Mutex::new(core)), board })
    }

    /// The shared core (records, model, counters).
    pub fn core(&self) -> http::Shared {
        self.core.clone()
    }

    /// The figures the consumer publishes as it goes.
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// Serve HTTP and consume until `shutdown`; then checkpoint, acknowledge and return.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), SinkError> {
        let Sink { settings, topology, file, core, board } = self;
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
        let dashboard = dashboard::Dashboard::new(board.clone(), settings.bridge_url.clone());
        tokio::spawn(dashboard.clone().sample(http_stop.clone()));
        let server = tokio::spawn(
            axum::serve(listener, http::router(core.clone(), board.clone()).merge(dashboard.router()))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .into_future(),
        );

        let mirrors = consumer::Mirrors::new(&settings, &topology.queue)?;
        let mut consumer =
            Consumer { settings, topology, file, core, rabbit, board, mirrors: tokio::sync::Mutex::new(mirrors) };
        let result = consumer.supervise(&shutdown).await;
        http_stop.cancel();
        let _ = server.await;
        result
    }
}
