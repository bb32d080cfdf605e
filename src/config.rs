//! Settings from the environment (read with `envy`, after loading `.env` if present).
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
fn default_cdc_name() -> String {
    "default".into()
}
fn default_state_db() -> String {
    "mongo_cdc".into()
}
fn default_confirm_window() -> usize {
    512
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
}

impl fmt::Debug for MongoSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoSettings")
            .field("mongo_database_host", &redact_uri(&self.mongo_database_host))
            .field("mongo_database_name", &self.mongo_database_name)
            .field("mongo_collections", &self.mongo_collections)
            .finish()
    }
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
    /// `RABBITMQ_DEFAULT_PASSWORD`
    #[serde(default = "default_guest")]
    pub rabbitmq_default_password: String,
    /// `RABBITMQ_VHOST`
    #[serde(default = "default_vhost")]
    pub rabbitmq_vhost: String,
    /// `RABBITMQ_QUEUE_NAME`: the durable queue that receives every change.
    #[serde(default = "default_queue")]
    pub rabbitmq_queue_name: String,
}

impl RabbitSettings {
    /// Read from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let s: Self = envy::from_env().map_err(ConfigError::from_envy)?;
        if s.rabbitmq_queue_name.trim().is_empty() {
            return Err(ConfigError::invalid("RABBITMQ_QUEUE_NAME", "must not be empty"));
        }
        if s.rabbitmq_host.trim().is_empty() {
            return Err(ConfigError::invalid("RABBITMQ_HOST", "must not be empty"));
        }
        Ok(s)
    }

    /// The AMQP URI (with the password; never log it, use [`RabbitSettings::display_addr`]).
    pub fn amqp_uri(&self) -> String {
        format!(
            "amqp://{}:{}@{}:{}/{}",
            urlencode(&self.rabbitmq_default_username),
            urlencode(&self.rabbitmq_default_password),
            self.rabbitmq_host,
            self.rabbitmq_port,
            urlencode(&self.rabbitmq_vhost),
        )
    }

    /// `host:port` and vhost, safe to log.
    pub fn display_addr(&self) -> String {
        format!("{}:{} vhost {}", self.rabbitmq_host, self.rabbitmq_port, self.rabbitmq_vhost)
    }
}

impl fmt::Debug for RabbitSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitSettings")
            .field("rabbitmq_host", &self.rabbitmq_host)
            .field("rabbitmq_port", &self.rabbitmq_port)
            .field("rabbitmq_default_username", &self.rabbitmq_default_username)
            .field("rabbitmq_default_password", &"<redacted>")
            .field("rabbitmq_vhost", &self.rabbitmq_vhost)
            .field("rabbitmq_queue_name", &self.rabbitmq_queue_name)
            .finish()
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
        Ok(Self { mongo, rabbit, cdc })
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
