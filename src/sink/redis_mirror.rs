//! `/stats` and the alerts mirrored into Redis (`SINK_REDIS_URL`): at every checkpoint the
//! hash `cdc:stats:<queue>` is replaced by the figures (one field per `/stats` field: numbers
//! and strings as they are, objects as JSON) and each alert raised since the last checkpoint,
//! of any kind, is appended to the list `cdc:alerts:<queue>` (oldest first, the newest
//! [`ALERTS_KEPT`] kept). At least once: a crash before the checkpoint pushes an alert again
//! with the same `id`.

use redis::aio::MultiplexedConnection;
use serde_json::Value;

use super::core::{ALERTS_KEPT, Alert, Stats};
use crate::config::SecretUrl;

/// The hash of the sink reading `queue`.
pub fn stats_key(queue: &str) -> String {
    format!("cdc:stats:{queue}")
}

/// The alerts list of the sink reading `queue`.
pub fn alerts_key(queue: &str) -> String {
    format!("cdc:alerts:{queue}")
}

/// Writes the figures and alerts into Redis.
pub struct RedisMirror {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    stats_key: String,
    alerts_key: String,
}

impl RedisMirror {
    /// A client for `url` (no connection is made yet), for the sink reading `queue`.
    pub fn new(url: &SecretUrl, queue: &str) -> Result<Self, String> {
        let client = redis::Client::open(url.expose()).map_err(|e| format!("`{url}` is not a Redis URL: {e}"))?;
        Ok(Self { client, conn: None, stats_key: stats_key(queue), alerts_key: alerts_key(queue) })
    }

    /// Replace the stats hash and append `alerts`, in one MULTI/EXEC.
    pub async fn write(&mut self, stats: &Stats, alerts: &[Alert]) -> Result<(), redis::RedisError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(self.client.get_multiplexed_async_connection().await?),
        };
        let fields: Vec<(String, String)> = match serde_json::to_value(stats) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k, text)
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut pipe = redis::pipe();
        pipe.atomic().del(&self.stats_key).ignore();
        if !fields.is_empty() {
            pipe.hset_multiple(&self.stats_key, &fields).ignore();
        }
        if !alerts.is_empty() {
            let bodies: Vec<String> = alerts.iter().map(|a| serde_json::to_string(a).unwrap_or_default()).collect();
            pipe.rpush(&self.alerts_key, bodies).ignore();
            pipe.ltrim(&self.alerts_key, -(ALERTS_KEPT as isize), -1).ignore();
        }
        let result: Result<(), _> = pipe.query_async(conn).await;
        if result.is_err() {
            // Connect afresh next time: the connection may be gone.
            self.conn = None;
        }
        result
    }
}
