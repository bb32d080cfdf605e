//! The settings the bridge and the sink share (MongoDB, RabbitMQ), from the environment (read
//! with `envy`, after loading `.env` if present); each side's own are in `bridge::settings` and
//! `sink::settings`.
//!
//! Variables already set in the process win over `.env`. Every variable is listed, with a
//! comment, in `.env.example`. Secrets are redacted in `Debug`.

use std::fmt;

use serde::Deserialize;

use crate::error::ConfigError;

/// Load `.env` (if any) without overriding variables that are already set.
pub fn load_dotenv() {
    // `dotenvy::dotenv` never overrides existing variables; a missing file is fine.
    let _ = dotenvy::dotenv();
}

fn default_mongo_host() -> String {
    "mongodb://127.0.0.1:27017/?replicaSet=secantus".into()
}
fn default_mongo_db() -> String {
    "scrabble".into()
}
fn default_rabbit_host() -> String {
    "127.0.0.1".into()
}
fn default_rabbit_port() -> u16 {
    5672
}
fn default_guest() -> String {
    "guest".into()
}
fn default_vhost() -> String {
    "/".into()
}
fn default_queue() -> String {
    "test_queue".into()
}
/// Where MongoDB is and what to watch.
#[derive(Clone, Deserialize)]
pub struct MongoSettings {
    /// `MONGO_DATABASE_HOST`: the connection string.
    #[serde(default = "default_mongo_host")]
    pub mongo_database_host: String,
    /// `MONGO_DATABASE_NAME`: the database to watch.
    #[serde(default = "default_mongo_db")]
    pub mongo_database_name: String,
    /// `MONGO_COLLECTIONS`: comma-separated collections to keep; empty keeps all.
    #[serde(default)]
    pub mongo_collections: String,
    /// `MONGO_EXCLUDE_COLLECTIONS`: comma-separated collections to leave out.
    #[serde(default)]
    pub mongo_exclude_collections: String,
}

impl MongoSettings {
    /// Read from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let s: Self = envy::from_env().map_err(ConfigError::from_envy)?;
        if s.mongo_database_name.trim().is_empty() {
            return Err(ConfigError::invalid("MONGO_DATABASE_NAME", "must not be empty"));
        }
        Ok(s)
    }

    /// The collections to keep, or an empty list for all of them.
    pub fn collections(&self) -> Vec<String> {
        split_list(&self.mongo_collections)
    }

    /// The collections to leave out.
    pub fn excluded_collections(&self) -> Vec<String> {
        split_list(&self.mongo_exclude_collections)
    }
}

impl fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSettings")
            .field("mongo_database_host", &redact_uri(&self.mongo_database_host))
            .field("mongo_database_name", &self.mongo_database_name)
            .field("mongo_collections", &self.mongo_collections)
            .field("mongo_exclude_collections", &self.mongo_exclude_collections)
            .finish()
    }
}

fn default_binding_keys() -> String {
    "#".into()
}

/// Where RabbitMQ is and which queue receives the changes.
#[derive(Clone, Deserialize)]
pub struct RabbitSettings {
    /// `RABBITMQ_HOST`
    #[serde(default = "default_rabbit_host")]
    pub rabbitmq_host: String,
    /// `RABBITMQ_PORT`
    #[serde(default = "default_rabbit_port")]
    pub rabbitmq_port: u16,
    /// `RABBITMQ_DEFAULT_USERNAME`
    #[serde(default = "default_guest")]
    pub rabbitmq_default_username: String,
    /// `RABBITMQ_DEFAULT_PASSWORD` (or the contents of `RABBITMQ_DEFAULT_PASSWORD_FILE`)
    #[serde(default = "default_guest")]
    pub rabbitmq_default_password: String,
    /// `RABBITMQ_DEFAULT_PASSWORD_FILE`: read the password from this file (container secrets).
    #[serde(default)]
    pub rabbitmq_default_password_file: String,
    /// `RABBITMQ_VHOST`
    #[serde(default = "default_vhost")]
    pub rabbitmq_vhost: String,
    /// `RABBITMQ_QUEUE_NAME`: the durable queue that receives every change.
    #[serde(default = "default_queue")]
    pub rabbitmq_queue_name: String,
    /// `RABBITMQ_EXCHANGE`: a durable topic exchange to publish to; empty publishes to the
    /// default exchange with the queue name as routing key.
    #[serde(default)]
    pub rabbitmq_exchange: String,
    /// `RABBITMQ_BINDING_KEYS`: comma-separated keys binding the queue to the exchange.
    #[serde(default = "default_binding_keys")]
    pub rabbitmq_binding_keys: String,
    /// `RABBITMQ_QUEUE_TYPE`: `classic`, `quorum` (replicated) or `stream`.
    #[serde(default)]
    pub rabbitmq_queue_type: QueueType,
    /// `RABBITMQ_PARTITIONS`: with `RABBITMQ_EXCHANGE`, spread the changes by key over this
    /// many queues `<RABBITMQ_QUEUE_NAME>.p<k>` (a consistent-hash exchange); 0 does not.
    #[serde(default)]
    pub rabbitmq_partitions: u16,
    /// `RABBITMQ_TLS`: connect with `amqps`.
    #[serde(default)]
    pub rabbitmq_tls: bool,
    /// `RABBITMQ_TLS_CA_FILE`: a PEM file of CA certificates to trust (private CAs).
    #[serde(default)]
    pub rabbitmq_tls_ca_file: String,
    /// The PEM text of `RABBITMQ_TLS_CA_FILE`, read at start-up.
    #[serde(skip)]
    pub tls_ca_pem: Option<String>,
}

impl RabbitSettings {
    /// Read from the environment (and the password and CA files it names).
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut s: Self = envy::from_env().map_err(ConfigError::from_envy)?;
        if s.rabbitmq_queue_name.trim().is_empty() {
            return Err(ConfigError::invalid("RABBITMQ_QUEUE_NAME", "must not be empty"));
        }
        if s.rabbitmq_host.trim().is_empty() {
            return Err(ConfigError::invalid("RABBITMQ_HOST", "must not be empty"));
        }
        let file = s.rabbitmq_default_password_file.trim();
        if !file.is_empty() {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConfigError::invalid("RABBITMQ_DEFAULT_PASSWORD_FILE", format!("cannot read {file}: {e}"))
            })?;
            // A secret file usually ends with a newline that is not part of the password.
            s.rabbitmq_default_password = text.trim_end_matches(['\n', '\r']).to_string();
        }
        let ca = s.rabbitmq_tls_ca_file.trim();
        if !ca.is_empty() {
            if !s.rabbitmq_tls {
                return Err(ConfigError::invalid("RABBITMQ_TLS_CA_FILE", "is set but RABBITMQ_TLS is not true"));
            }
            let pem = std::fs::read_to_string(ca)
                .map_err(|e| ConfigError::invalid("RABBITMQ_TLS_CA_FILE", format!("cannot read {ca}: {e}")))?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::invalid("RABBITMQ_TLS_CA_FILE", format!("{ca} holds no PEM certificate")));
            }
            s.tls_ca_pem = Some(pem);
        }
        if !s.rabbitmq_exchange.trim().is_empty() && s.binding_keys().is_empty() {
            return Err(ConfigError::invalid("RABBITMQ_BINDING_KEYS", "must name at least one key (`#` for all)"));
        }
        if s.rabbitmq_partitions > 0 && s.exchange().is_none() {
            return Err(ConfigError::invalid(
                "RABBITMQ_PARTITIONS",
                "needs RABBITMQ_EXCHANGE: the partitions are fed by a consistent-hash exchange of that name",
            ));
        }
        Ok(s)
    }

    /// The AMQP URI (with the password; never log it, use [`RabbitSettings::display_addr`]).
    pub fn amqp_uri(&self) -> String {
        format!(
            "{}://{}:{}@{}:{}/{}",
            if self.rabbitmq_tls { "amqps" } else { "amqp" },
            urlencode(&self.rabbitmq_default_username),
            urlencode(&self.rabbitmq_default_password),
            self.rabbitmq_host,
            self.rabbitmq_port,
            urlencode(&self.rabbitmq_vhost),
        )
    }

    /// `host:port` and vhost, safe to log.
    pub fn display_addr(&self) -> String {
        let scheme = if self.rabbitmq_tls { "amqps " } else { "" };
        format!("{scheme}{}:{} vhost {}", self.rabbitmq_host, self.rabbitmq_port, self.rabbitmq_vhost)
    }

    /// The topic exchange, when one is set.
    pub fn exchange(&self) -> Option<&str> {
        Some(self.rabbitmq_exchange.trim()).filter(|e| !e.is_empty())
    }

    /// The keys binding the queue to the exchange.
    pub fn binding_keys(&self) -> Vec<String> {
        split_list(&self.rabbitmq_binding_keys)
    }
}

impl fmt::Debug for RabbitSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitSettings")
            .field("rabbitmq_host", &self.rabbitmq_host)
            .field("rabbitmq_port", &self.rabbitmq_port)
            .field("rabbitmq_default_username", &self.rabbitmq_default_username)
            .field("rabbitmq_default_password", &"<redacted>")
            .field("rabbitmq_default_password_file", &self.rabbitmq_default_password_file)
            .field("rabbitmq_vhost", &self.rabbitmq_vhost)
            .field("rabbitmq_queue_name", &self.rabbitmq_queue_name)
            .field("rabbitmq_exchange", &self.rabbitmq_exchange)
            .field("rabbitmq_binding_keys", &self.rabbitmq_binding_keys)
            .field("rabbitmq_queue_type", &self.rabbitmq_queue_type)
            .field("rabbitmq_partitions", &self.rabbitmq_partitions)
            .field("rabbitmq_tls", &self.rabbitmq_tls)
            .field("rabbitmq_tls_ca_file", &self.rabbitmq_tls_ca_file)
            .finish()
    }
}

/// `RABBITMQ_QUEUE_TYPE`: the type of the queues the bridge and the sink declare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// A classic queue (one node).
    #[default]
    Classic,
    /// A quorum queue: replicated over the cluster's nodes (Raft); the production choice.
    Quorum,
    /// A stream: an append-only log; consumers read by offset, messages stay (retention).
    Stream,
}

impl QueueType {
    /// The `x-queue-type` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// A connection string that may hold a password: its `Debug` and `Display` hide it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(pub String);

impl SecretUrl {
    /// The URL itself, to connect with (never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = redact_uri(&self.0);
        // The key=value form: `host=.. password=..`.
        let shown = match shown.find("password=") {
            Some(at) => {
                let rest = &shown[at + 9..];
                let end = rest.find(' ').map_or(shown.len(), |e| at + 9 + e);
                format!("{}password=<redacted>{}", &shown[..at], &shown[end..])
            }
            None => shown,
        };
        f.write_str(&shown)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Split a comma-separated list, trimming blanks and dropping empty items.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect()
}

/// Hide the password of a `scheme://user:pass@host` URI so it can be logged.
pub fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &uri[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:<redacted>{}", &uri[..scheme_end + 3], user, &uri[at..])
        }
        _ => uri.to_string(),
    }
}

/// Percent-encode one URI component (user, password or vhost).
fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_uri("mongodb://u:secret@h:1/x"), "mongodb://u:<redacted>@h:1/x");
        assert_eq!(redact_uri("mongodb://h:1/x"), "mongodb://h:1/x");
    }

    #[test]
    fn splits_lists() {
        assert_eq!(split_list(" a, b,,c "), vec!["a", "b", "c"]);
        assert!(split_list("").is_empty());
    }

    #[test]
    fn encodes_vhost() {
        assert_eq!(urlencode("/"), "%2F");
        assert_eq!(urlencode("a b"), "a%20b");
    }
}
