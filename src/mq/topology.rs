//! Queue topology, declared the same way by the bridge and the sink.
//!
//! - A durable queue (`RABBITMQ_QUEUE_TYPE`: classic, quorum or stream) whose rejected
//!   messages go through the exchange `<queue>.dlx` to the queue `<queue>.dlq`.
//! - With `RABBITMQ_EXCHANGE`, a durable topic exchange the queue is bound to, whose alternate
//!   exchange `<exchange>.unrouted` keeps every message no binding matched in the durable
//!   queue `<exchange>.unrouted` (so nothing is lost, and the bridge never republishes it).
//! - With `RABBITMQ_PARTITIONS` as well, the exchange is a consistent-hash exchange (the
//!   `rabbitmq_consistent_hash_exchange` plugin) hashing the `key` header over the partition
//!   queues `<queue>.p0`..: every key lands on exactly one of them, so each partition's sink
//!   holds its keys alone. Snapshot control messages concern every key of a collection, so
//!   they go to every partition.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::config::{QueueType, RabbitSettings};
use crate::error::MqError;
use crate::event::{CONTROL_OP, Envelope, KEY_HEADER};

/// How the exchange spreads the messages.
#[derive(Debug, Clone)]
pub enum Spread {
    /// A topic exchange: the queue is bound with these keys.
    Topic(Vec<String>),
    /// A consistent-hash exchange over these partition queues (weight 1 each).
    Partitions(Vec<String>),
}

/// A durable exchange in front of the queue(s).
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The exchange the bridge publishes to.
    pub name: String,
    /// Topic keys, or hash partitions.
    pub spread: Spread,
    /// The alternate exchange, and the queue behind it, for messages no binding matched.
    pub unrouted: String,
}

/// Names derived from the queue name (and the exchange, when there is one).
#[derive(Debug, Clone)]
pub struct Topology {
    /// The queue this process consumes (the sink), or, for the bridge, the queue it feeds
    /// (unless partitioned: then the partitions are).
    pub queue: String,
    /// The dead-letter exchange.
    pub dlx: String,
    /// The dead-letter queue.
    pub dlq: String,
    /// The type of every queue declared.
    pub queue_type: QueueType,
    /// The exchange, if the messages go through one.
    pub exchange: Option<Exchange>,
}

/// The `n` partition queues of `queue`.
pub fn partition_queues(queue: &str, n: u16) -> Vec<String> {
    (0..n).map(|k| format!("{queue}.p{k}")).collect()
}

impl Topology {
    /// The topology around `queue`, on the default exchange, classic queues.
    pub fn new(queue: &str) -> Self {
        Self {
            queue: queue.into(),
            dlx: format!("{queue}.dlx"),
            dlq: format!("{queue}.dlq"),
            queue_type: QueueType::Classic,
            exchange: None,
        }
    }

    /// The topology the settings describe (`RABBITMQ_QUEUE_NAME`, `RABBITMQ_QUEUE_TYPE`,
    /// `RABBITMQ_EXCHANGE`, `RABBITMQ_BINDING_KEYS`, `RABBITMQ_PARTITIONS`). With partitions,
    /// `partition` names the one this process consumes (a sink); the bridge passes `None`.
    pub fn from_settings(s: &RabbitSettings, partition: Option<u16>) -> Self {
        let queue = match partition {
            Some(k) if s.rabbitmq_partitions > 0 => format!("{}.p{k}", s.rabbitmq_queue_name),
            _ => s.rabbitmq_queue_name.clone(),
        };
        let mut t = Self { queue_type: s.rabbitmq_queue_type, ..Self::new(&queue) };
        t.exchange = s.exchange().map(|name| Exchange {
            name: name.to_string(),
            spread: if s.rabbitmq_partitions > 0 {
                Spread::Partitions(partition_queues(&s.rabbitmq_queue_name, s.rabbitmq_partitions))
            } else {
                Spread::Topic(s.binding_keys())
            },
            unrouted: format!("{name}.unrouted"),
        });
        t
    }

    /// Where a message goes: `(exchange, routing key)`, once each. A snapshot control
    /// message goes to every partition, straight to its queue.
    pub fn routes(&self, envelope: &Envelope) -> Vec<(String, String)> {
        match &self.exchange {
            Some(Exchange { spread: Spread::Partitions(queues), .. }) if envelope.kind == CONTROL_OP => {
                queues.iter().map(|q| (String::new(), q.clone())).collect()
            }
            Some(x) => vec![(x.name.clone(), envelope.topic_key())],
            None => vec![(String::new(), self.queue.clone())],
        }
    }

    /// The arguments of a queue of this topology's type.
    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type != QueueType::Classic {
            args.insert("x-queue-type".into(), AMQPValue::LongString(self.queue_type.as_str().into()));
        }
        args
    }

    /// Declare `queue` and its dead-letter exchange and queue. A stream cannot dead-letter
    /// (the sink then publishes poison to the dead-letter queue itself).
    async fn declare_queue(&self, ch: &Channel, queue: &str) -> Result<(), MqError> {
        let (dlx, dlq) = (format!("{queue}.dlx"), format!("{queue}.dlq"));
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(dlx.as_str().into(), ExchangeKind::Direct, durable_exchange, FieldTable::default()).await?;
        ch.queue_declare(dlq.as_str().into(), durable, self.queue_args()).await.map_err(|e| {
            precondition(e, || format!("queue `{dlq}` already exists with other arguments (another queue type?)"))
        })?;
        ch.queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            queue.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let mut args = self.queue_args();
        if self.queue_type != QueueType::Stream {
            args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(dlx.as_str().into()));
            args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
        }
        ch.queue_declare(queue.into(), durable, args).await.map_err(|e| {
            precondition(e, || {
                format!(
                    "queue `{queue}` already exists with other arguments (another RABBITMQ_QUEUE_TYPE, or no dead-letter exchange); delete it or choose another RABBITMQ_QUEUE_NAME"
                )
            })
        })?;
        Ok(())
    }

    /// Declare everything (idempotent). Something that already exists with other arguments
    /// is reported as such, since RabbitMQ then closes the channel.
    pub async fn declare(&self, ch: &Channel) -> Result<(), MqError> {
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let Some(x) = &self.exchange else { return self.declare_queue(ch, &self.queue).await };
        ch.exchange_declare(x.unrouted.as_str().into(), ExchangeKind::Fanout, durable_exchange, FieldTable::default())
            .await?;
        let unrouted = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.queue_declare(x.unrouted.as_str().into(), unrouted, self.queue_args()).await?;
        ch.queue_bind(
            x.unrouted.as_str().into(),
            x.unrouted.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let mut args = FieldTable::default();
        args.insert("alternate-exchange".into(), AMQPValue::LongString(x.unrouted.as_str().into()));
        let (kind, what) = match &x.spread {
            Spread::Topic(_) => (ExchangeKind::Topic, "a durable topic exchange"),
            Spread::Partitions(_) => {
                args.insert("hash-header".into(), AMQPValue::LongString(KEY_HEADER.into()));
                (ExchangeKind::Custom("x-consistent-hash".into()), "a consistent-hash exchange on the `key` header")
            }
        };
        ch.exchange_declare(x.name.as_str().into(), kind, durable_exchange, args).await.map_err(|e| {
            let text = e.to_string();
            if text.contains("invalid exchange type") || text.contains("COMMAND_INVALID") {
                return MqError::Topology(
                    "RabbitMQ has no consistent-hash exchange: enable it with `rabbitmq-plugins enable rabbitmq_consistent_hash_exchange` (RABBITMQ_PARTITIONS needs it)".to_string(),
                );
            }
            precondition(e, || {
                format!(
                    "exchange `{}` already exists with other arguments (not {what} with alternate exchange `{}`); delete it or choose another RABBITMQ_EXCHANGE",
                    x.name, x.unrouted
                )
            })
        })?;
        let bindings: Vec<(String, String)> = match &x.spread {
            Spread::Topic(keys) => keys.iter().map(|k| (self.queue.clone(), k.clone())).collect(),
            // Weight 1 each: the same share of the keys. The bridge declares every partition,
            // so no change waits for its sink to start.
            Spread::Partitions(queues) => queues.iter().map(|q| (q.clone(), "1".to_string())).collect(),
        };
        let mut declared = std::collections::HashSet::new();
        for (queue, key) in bindings {
            if declared.insert(queue.clone()) {
                self.declare_queue(ch, &queue).await?;
            }
            ch.queue_bind(
                queue.as_str().into(),
                x.name.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        if !declared.contains(&self.queue) && matches!(x.spread, Spread::Topic(_)) {
            self.declare_queue(ch, &self.queue).await?;
        }
        Ok(())
    }

    /// Delete the queues and the exchanges (used to reset the demo). Missing ones are fine.
    pub async fn delete(&self, ch: &Channel) -> Result<(), MqError> {
        let mut queues = vec![self.queue.clone()];
        if let Some(Exchange { spread: Spread::Partitions(p), .. }) = &self.exchange {
            queues.extend(p.iter().cloned());
        }
        for q in queues {
            ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
            ch.queue_delete(format!("{q}.dlq").as_str().into(), QueueDeleteOptions::default()).await?;
            ch.exchange_delete(format!("{q}.dlx").as_str().into(), ExchangeDeleteOptions::default()).await?;
        }
        if let Some(x) = &self.exchange {
            ch.exchange_delete(x.name.as_str().into(), ExchangeDeleteOptions::default()).await?;
            ch.queue_delete(x.unrouted.as_str().into(), QueueDeleteOptions::default()).await?;
            ch.exchange_delete(x.unrouted.as_str().into(), ExchangeDeleteOptions::default()).await?;
        }
        Ok(())
    }
}

/// A `PRECONDITION_FAILED` (something exists with other arguments) as a readable error.
fn precondition(e: lapin::Error, what: impl FnOnce() -> String) -> MqError {
    if e.to_string().contains("PRECONDITION_FAILED") { MqError::Topology(what()) } else { e.into() }
}
