//! mongo-cdc: MongoDB change streams -> RabbitMQ (the bridge), and RabbitMQ -> versioned
//! state and online models (the sink).
//!
//! Map of the modules:
//! - [`config`]: the settings bridge and sink share (MongoDB, RabbitMQ) and `.env`; each
//!   side reads its own in `bridge::settings` and `sink::settings`.
//! - [`error`]: one error enum per boundary.
//! - [`shutdown`]: SIGINT/SIGTERM -> cancellation token.
//! - [`supervise`]: restarting a failed session with backoff (bridge and sink).
//! - [`bson_json`]: BSON -> the contract's JSON, shared by the bridge and the sink.
//! - [`event`]: the wire contract: message bodies, AMQP envelope, routing key.
//! - [`db`]: the shared MongoDB client.
//! - [`mq`]: the shared RabbitMQ connection, topology and confirming publisher.
//! - [`bridge`]: snapshot + change stream -> publish -> checkpoint; BSON -> JSON.
//! - [`cli`]: the helper subcommands: `demo` (the whole product in one command),
//!   `insert-test` (documents for trying the bridge by hand) and `peek`.
//! - [`sink`]: consume -> idempotent apply -> state -> models -> HTTP.
//! - [`ml`]: online models (linear, Hoeffding tree, adaptive random forest), drift detection
//!   and metrics.

pub mod bridge;
pub mod bson_json;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod event;
pub mod ml;
pub mod mq;
pub mod shutdown;
pub mod sink;
pub mod supervise;
