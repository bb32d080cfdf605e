//! Error enums, one per boundary. Each variant's message is one line that says what to fix.
//! `anyhow` is used only in `main`.

use thiserror::Error;

/// Bad or missing configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{var} is not set: {hint}")]
    Missing {
        /// The variable to set.
        var: String,
        /// What it should hold.
        hint: String,
    },
    /// A variable is set to something unusable.
    #[error("{var} is invalid: {reason}")]
    Invalid {
        /// The variable to fix.
        var: String,
        /// Why it is unusable.
        reason: String,
    },
}

impl ConfigError {
    /// A variable with an unusable value.
    pub fn invalid(var: &str, reason: impl Into<String>) -> Self {
        Self::Invalid { var: var.into(), reason: reason.into() }
    }

    /// A required variable that is not set.
    pub fn missing(var: &str, hint: impl Into<String>) -> Self {
        Self::Missing { var: var.into(), hint: hint.into() }
    }

    /// Turn an `envy` error into one naming the environment variable.
    pub fn from_envy(e: envy::Error) -> Self {
        match e {
            envy::Error::MissingValue(field) => Self::missing(&field.to_uppercase(), "it is required"),
            envy::Error::Custom(msg) => {
                // envy reports `<reason> while parsing value '<v>' provided by <FIELD>`
                match msg.rsplit_once("provided by ") {
                    Some((reason, field)) => Self::invalid(
                        &field.trim().to_uppercase(),
                        reason.trim().trim_end_matches(" while parsing value").to_string(),
                    ),
                    None => Self::invalid("environment", msg),
                }
            }
        }
    }
}

/// Failures talking to MongoDB.
#[derive(Debug, Error)]
pub enum MongoError {
    /// The connection string does not parse.
    #[error("MONGO_DATABASE_HOST is not a valid MongoDB connection string ({uri}): {reason}")]
    BadUri {
        /// The URI, password redacted.
        uri: String,
        /// The driver's complaint.
        reason: String,
    },
    /// No server answered in time.
    #[error("cannot reach MongoDB at {uri} (check MONGO_DATABASE_HOST and that the server is running): {reason}")]
    Unreachable {
        /// The URI, password redacted.
        uri: String,
        /// The driver's complaint.
        reason: String,
    },
    /// The server refused our credentials.
    #[error("MongoDB refused the credentials in MONGO_DATABASE_HOST: {0}")]
    Auth(String),
    /// The resume point is older than the oldest oplog entry.
    #[error(
        "the checkpoint of CDC_NAME `{name}` has fallen off the oplog, so changes were missed; set CDC_SNAPSHOT_MODE=when_needed to snapshot again by itself, or delete the checkpoint to start over: db.getSiblingDB(\"{state_db}\").checkpoints.deleteOne({{_id: \"{name}\"}})"
    )]
    HistoryLost {
        /// The bridge name.
        name: String,
        /// The checkpoint database.
        state_db: String,
    },
    /// Any other driver error.
    #[error("MongoDB error: {0}")]
    Driver(#[from] mongodb::error::Error),
}

/// Failures talking to RabbitMQ.
#[derive(Debug, Error)]
pub enum MqError {
    /// The broker refused the login.
    #[error(
        "RabbitMQ at {addr} refused the login of `{user}` (check RABBITMQ_DEFAULT_USERNAME and RABBITMQ_DEFAULT_PASSWORD)"
    )]
    Auth {
        /// host:port and vhost.
        addr: String,
        /// The user name.
        user: String,
    },
    /// The vhost does not exist, or the user may not use it.
    #[error(
        "RabbitMQ at {addr} does not let `{user}` use vhost `{vhost}` (check RABBITMQ_VHOST, and the user's permissions)"
    )]
    Vhost {
        /// host:port and vhost.
        addr: String,
        /// The user name.
        user: String,
        /// The vhost.
        vhost: String,
    },
    /// The broker could not be reached.
    #[error("cannot reach RabbitMQ at {addr} (check RABBITMQ_HOST and RABBITMQ_PORT): {reason}")]
    Unreachable {
        /// host:port and vhost.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake with the broker failed.
    #[error(
        "RabbitMQ at {addr}: the TLS handshake failed (check RABBITMQ_TLS_CA_FILE, RABBITMQ_HOST and RABBITMQ_PORT): {reason}"
    )]
    Tls {
        /// host:port and vhost.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The broker negatively acknowledged a message.
    #[error("RabbitMQ nacked a published message")]
    Nack,
    /// The broker returned a message as unroutable.
    #[error("RabbitMQ returned a message as unroutable: {0}")]
    Returned(String),
    /// The queues cannot be declared as we need them.
    #[error("{0}")]
    Topology(String),
    /// The broker cancelled our consumer (the queue was deleted, or a node failed over).
    #[error("RabbitMQ cancelled the consumer")]
    Cancelled,
    /// The channel or connection closed.
    #[error("RabbitMQ channel closed: {0}")]
    ChannelClosed(#[from] lapin::Error),
}

/// Failures of the sink's own making (state, checkpoints, HTTP).
#[derive(Debug, Error)]
pub enum SinkError {
    /// The state directory is unusable.
    #[error("SINK_STATE_DIR is unusable: {0}")]
    StateDir(String),
    /// A checkpoint cannot be read or written.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The checkpoint was made for other features, label or task.
    #[error(
        "the checkpoint {path} was made with other settings ({what}); move it away to start over, or restore the settings"
    )]
    SpecChanged {
        /// The checkpoint file.
        path: String,
        /// What differs.
        what: String,
    },
    /// The model settings are invalid.
    #[error("model settings: {0}")]
    Model(String),
    /// The HTTP API cannot listen.
    #[error("cannot listen on SINK_HTTP_ADDR {addr}: {reason}")]
    Http {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A mirror (`SINK_POSTGRES_URL`, `SINK_REDIS_URL`) cannot be set up.
    #[error("mirror: {0}")]
    Mirror(String),
    /// RabbitMQ failed in a way retrying will not fix.
    #[error(transparent)]
    Mq(#[from] MqError),
}
