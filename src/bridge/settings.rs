//! The bridge's settings: `CDC_*` from the environment (envy), with the MongoDB and RabbitMQ
//! ones it shares with the sink, validated into [`BridgeSettings`]; a wrong value is one line
//! naming the variable.

use serde::Deserialize;

use crate::config::{MongoSettings, RabbitSettings};
use crate::error::ConfigError;

fn default_cdc_format() -> String {
    "native".into()
}

fn default_cdc_name() -> String {
    "default".into()
}
fn default_state_db() -> String {
    "mongo_cdc".into()
}
fn default_confirm_window() -> usize {
    // With 512 the bridge waited on confirms: bench runs drained a backlog ~25% faster with
    // 4096. 2048 is the middle: fewer waits, at most 2048 republished after a crash.
    2048
}

fn default_snapshot_chunk() -> usize {
    1000
}

/// `CDC_SNAPSHOT_MODE`: when the bridge snapshots the data already in the collections
/// (Debezium's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Snapshot when there is no checkpoint, then stream.
    #[default]
    Initial,
    /// As `initial`, and snapshot again when the resume point has fallen off the oplog.
    WhenNeeded,
    /// Never snapshot: start from now, and stop if the resume point is lost.
    NoData,
    /// Snapshot when there is no checkpoint, then stop.
    InitialOnly,
}

impl SnapshotMode {
    /// Whether a first start (no checkpoint) begins with a snapshot.
    pub fn snapshots_first(self) -> bool {
        self != SnapshotMode::NoData
    }
}

/// The bridge's own identity and checkpoint location.
#[derive(Clone, Debug, Deserialize)]
pub struct CdcSettings {
    /// `CDC_NAME`: keys this bridge's checkpoint.
    #[serde(default = "default_cdc_name")]
    pub cdc_name: String,
    /// `CDC_STATE_DATABASE`: where the `checkpoints` collection lives.
    #[serde(default = "default_state_db")]
    pub cdc_state_database: String,
    /// `CDC_CONFIRM_WINDOW`: most messages published but not yet confirmed. Bounds memory
    /// and the duplicates a crash can cause; larger is faster up to a point.
    #[serde(default = "default_confirm_window")]
    pub cdc_confirm_window: usize,
    /// `CDC_SNAPSHOT_MODE`: `initial` (default), `when_needed`, `no_data` or `initial_only`.
    #[serde(default)]
    pub cdc_snapshot_mode: SnapshotMode,
    /// `CDC_SNAPSHOT_CHUNK`: documents per snapshot read.
    #[serde(default = "default_snapshot_chunk")]
    pub cdc_snapshot_chunk: usize,
    /// `CDC_EXCLUDE_FIELDS`: comma-separated `collection.path.to.field` (`*` for any
    /// collection) never published.
    #[serde(default)]
    pub cdc_exclude_fields: String,
    /// `CDC_OVERSIZE`: what to do with an event too large to publish whole.
    #[serde(default)]
    pub cdc_oversize: OversizeMode,
    /// `CDC_MAX_MESSAGE_BYTES`: the largest message body to publish (the broker's
    /// `max_message_size`; RabbitMQ's default is 128 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub cdc_max_message_bytes: usize,
    /// `CDC_FORMAT`: `native` (our contract, default) or `debezium` (Debezium's MongoDB
    /// connector envelope).
    #[serde(default = "default_cdc_format")]
    pub cdc_format: String,
    /// `CDC_DEBEZIUM_SCHEMAS`: with `CDC_FORMAT=debezium`, wrap each value as
    /// `{"schema": .., "payload": ..}` (Kafka Connect's JSON converter with schemas).
    #[serde(default)]
    pub cdc_debezium_schemas: bool,
    /// `CDC_HTTP_ADDR`: where `/health` and `/metrics` are served; empty disables them.
    #[serde(default = "default_cdc_http_addr")]
    pub cdc_http_addr: String,
    /// `CDC_OPLOG_HEADROOM_WARN`: `/health` says `degraded` when the checkpoint is closer
    /// than this to falling off the oplog (`1h`, `30m`, ...).
    #[serde(default = "default_headroom_warn")]
    pub cdc_oplog_headroom_warn: String,
}

/// `CDC_OVERSIZE`: what the bridge does with an event it cannot publish whole (the server
/// cannot return it, or it is larger than `CDC_MAX_MESSAGE_BYTES`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OversizeMode {
    /// Stop with one line naming the event.
    #[default]
    Fail,
    /// Log it, count it, and go on.
    Skip,
    /// Publish it without the parts that did not fit, listed in `truncated`.
    Truncate,
}

fn default_max_message_bytes() -> usize {
    128 << 20
}

fn default_cdc_http_addr() -> String {
    "127.0.0.1:8089".into()
}

fn default_headroom_warn() -> String {
    "1h".into()
}

/// Everything `mongo-cdc bridge` needs.
#[derive(Clone, Debug)]
pub struct BridgeSettings {
    /// MongoDB side.
    pub mongo: MongoSettings,
    /// RabbitMQ side.
    pub rabbit: RabbitSettings,
    /// Checkpoint identity.
    pub cdc: CdcSettings,
    /// The fields never published (`CDC_EXCLUDE_FIELDS`, parsed).
    pub exclude_fields: super::encode::Redaction,
    /// Where `/health` and `/metrics` are served (`CDC_HTTP_ADDR`), if anywhere.
    pub http_addr: Option<std::net::SocketAddr>,
    /// `CDC_OPLOG_HEADROOM_WARN`, parsed.
    pub headroom_warn: std::time::Duration,
}

impl BridgeSettings {
    /// Read and validate from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mongo = MongoSettings::from_env()?;
        let rabbit = RabbitSettings::from_env()?;
        let cdc: CdcSettings = envy::from_env().map_err(ConfigError::from_envy)?;
        if cdc.cdc_name.trim().is_empty() {
            return Err(ConfigError::invalid("CDC_NAME", "must not be empty"));
        }
        let mut cdc = cdc;
        cdc.cdc_format = cdc.cdc_format.trim().to_lowercase();
        if !["native", "debezium"].contains(&cdc.cdc_format.as_str()) {
            return Err(ConfigError::invalid("CDC_FORMAT", format!("`{}`; use native or debezium", cdc.cdc_format)));
        }
        if cdc.cdc_snapshot_chunk == 0 {
            return Err(ConfigError::invalid("CDC_SNAPSHOT_CHUNK", "must be at least 1"));
        }
        if cdc.cdc_state_database.trim().is_empty() {
            return Err(ConfigError::invalid("CDC_STATE_DATABASE", "must not be empty"));
        }
        if cdc.cdc_state_database == mongo.mongo_database_name {
            return Err(ConfigError::invalid(
                "CDC_STATE_DATABASE",
                format!(
                    "is `{}`, the watched database (MONGO_DATABASE_NAME); checkpoints must live in another database",
                    cdc.cdc_state_database
                ),
            ));
        }
        let exclude_fields = super::encode::Redaction::parse(&cdc.cdc_exclude_fields)
            .map_err(|reason| ConfigError::invalid("CDC_EXCLUDE_FIELDS", reason))?;
        let addr = cdc.cdc_http_addr.trim();
        let http_addr = if addr.is_empty() {
            None
        } else {
            Some(addr.parse().map_err(|_| {
                ConfigError::invalid(
                    "CDC_HTTP_ADDR",
                    format!("`{addr}` is not host:port (e.g. 127.0.0.1:8089), or empty"),
                )
            })?)
        };
        let headroom_warn = humantime::parse_duration(cdc.cdc_oplog_headroom_warn.trim()).map_err(|e| {
            ConfigError::invalid(
                "CDC_OPLOG_HEADROOM_WARN",
                format!("`{}`: {e} (e.g. 1h, 30m)", cdc.cdc_oplog_headroom_warn),
            )
        })?;
        if cdc.cdc_max_message_bytes < 1024 {
            return Err(ConfigError::invalid("CDC_MAX_MESSAGE_BYTES", "must be at least 1024"));
        }
        Ok(Self { mongo, rabbit, cdc, exclude_fields, http_addr, headroom_warn })
    }
}
