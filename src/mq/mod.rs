//! The one shared RabbitMQ connection (created lazily, reconnected with backoff), the queue
//! topology, and the confirming publisher.

pub mod publisher;
pub mod topology;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use tokio::sync::Mutex;

use crate::config::RabbitSettings;
use crate::error::MqError;

/// A handle on the process's RabbitMQ connection. Clones share one connection; when it
/// drops, the next [`Rabbit::channel`] call reconnects.
#[derive(Clone)]
pub struct Rabbit {
    settings: Arc<RabbitSettings>,
    conn: Arc<Mutex<Option<Arc<Connection>>>>,
}

impl Rabbit {
    /// The process's handle for the broker, user and vhost of `settings`: the first call makes
    /// it, later calls clone it. Nothing connects until first used.
    pub fn shared(settings: &RabbitSettings) -> Self {
        static ALL: OnceLock<std::sync::Mutex<HashMap<String, Rabbit>>> = OnceLock::new();
        let mut all = ALL.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        all.entry(settings.amqp_uri())
            .or_insert_with(|| Self { settings: Arc::new(settings.clone()), conn: Arc::new(Mutex::new(None)) })
            .clone()
    }

    /// The settings this handle connects with.
    pub fn settings(&self) -> &RabbitSettings {
        &self.settings
    }

    /// Connect once, now, without retrying: the start-up check that turns a wrong address or
    /// wrong credentials into one readable error.
    pub async fn check(&self) -> Result<(), MqError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| !c.status().connected()) {
            *guard = Some(Arc::new(self.connect_once().await?));
            tracing::info!(addr = %self.settings.display_addr(), "connected to RabbitMQ");
        }
        Ok(())
    }

    /// A new channel on the shared connection, reconnecting (with exponential backoff) if the
    /// connection is gone. Refused credentials are not retried.
    pub async fn channel(&self) -> Result<Channel, MqError> {
        let conn = self.connection().await?;
        Ok(conn.create_channel().await?)
    }

    /// Look at up to `n` messages at the head of `queue` without consuming them: they are
    /// fetched unacknowledged and go back when the channel closes.
    pub async fn peek(&self, queue: &str, n: usize) -> Result<Vec<Vec<u8>>, MqError> {
        let ch = self.channel().await?;
        let mut bodies = Vec::new();
        while bodies.len() < n {
            match ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: false }).await? {
                Some(msg) => bodies.push(msg.delivery.data),
                None => break,
            }
        }
        let _ = ch.close(200, "peeked".into()).await;
        Ok(bodies)
    }

    async fn connection(&self) -> Result<Arc<Connection>, MqError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref().filter(|c| c.status().connected()) {
            return Ok(c.clone());
        }
        let conn = (|| self.connect_once())
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_times(usize::MAX),
            )
            .when(|e| !matches!(e, MqError::Auth { .. } | MqError::Vhost { .. } | MqError::Tls { .. }))
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "RabbitMQ unavailable, retrying"))
            .await?;
        let conn = Arc::new(conn);
        *guard = Some(conn.clone());
        tracing::info!(addr = %self.settings.display_addr(), "connected to RabbitMQ");
        Ok(conn)
    }

    async fn connect_once(&self) -> Result<Connection, MqError> {
        let name = format!("mongo-cdc (pid {})", std::process::id());
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let uri = self.settings.amqp_uri();
        let connected = match &self.settings.tls_ca_pem {
            // A private CA: trusted on top of the usual roots.
            Some(pem) => {
                let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: Some(pem.clone()) };
                let runtime = lapin::runtime::default_runtime().map_err(|e| self.classify(e))?;
                Connection::connect_with_config(&uri, props, tls, runtime).await
            }
            None => Connection::connect(&uri, props).await,
        };
        connected.map_err(|e| self.classify(e))
    }

    fn classify(&self, e: lapin::Error) -> MqError {
        let addr = self.settings.display_addr();
        match e.kind() {
            ErrorKind::ProtocolError(amqp) => match amqp.kind() {
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                    MqError::Auth { addr, user: self.settings.rabbitmq_default_username.clone() }
                }
                AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => MqError::Vhost {
                    addr,
                    user: self.settings.rabbitmq_default_username.clone(),
                    vhost: self.settings.rabbitmq_vhost.clone(),
                },
                _ => MqError::Unreachable { addr, reason: e.to_string() },
            },
            _ if self.settings.rabbitmq_tls && is_tls_failure(&e.to_string()) => {
                MqError::Tls { addr, reason: e.to_string() }
            }
            _ => MqError::Unreachable { addr, reason: e.to_string() },
        }
    }
}

/// Whether a connection error is the TLS handshake failing (certificate, protocol), which
/// retrying will not fix.
fn is_tls_failure(message: &str) -> bool {
    let m = message.to_lowercase();
    ["certificate", "handshake", "tls", "ssl", "unknownissuer", "invalid peer"].iter().any(|w| m.contains(w))
}
