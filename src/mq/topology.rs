//! Queue topology, declared the same way by the bridge and the sink: a durable queue whose
//! rejected messages go through the exchange `<queue>.dlx` to the queue `<queue>.dlq`; and,
//! with `RABBITMQ_EXCHANGE`, a durable topic exchange the queue is bound to, whose alternate
//! exchange `<exchange>.unrouted` keeps every message no binding matched in the durable queue
//! `<exchange>.unrouted` (so nothing is lost, and the bridge never republishes it).

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::config::RabbitSettings;
use crate::error::MqError;
use crate::event::Envelope;

/// A topic exchange and the keys binding the queue to it.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The durable topic exchange the bridge publishes to.
    pub name: String,
    /// Keys binding the queue to it.
    pub keys: Vec<String>,
    /// The alternate exchange, and the queue behind it, for messages no binding matched.
    pub unrouted: String,
}

/// Names derived from the main queue name (and the exchange, when there is one).
#[derive(Debug, Clone)]
pub struct Topology {
    /// The durable queue that receives the changes.
    pub queue: String,
    /// The dead-letter exchange.
    pub dlx: String,
    /// The dead-letter queue.
    pub dlq: String,
    /// The topic exchange, if the messages go through one.
    pub exchange: Option<Exchange>,
}

impl Topology {
    /// The topology around `queue`, on the default exchange.
    pub fn new(queue: &str) -> Self {
        Self { queue: queue.into(), dlx: format!("{queue}.dlx"), dlq: format!("{queue}.dlq"), exchange: None }
    }

    /// The topology the settings describe (`RABBITMQ_QUEUE_NAME`, `RABBITMQ_EXCHANGE`,
    /// `RABBITMQ_BINDING_KEYS`).
    pub fn from_settings(s: &RabbitSettings) -> Self {
        let mut t = Self::new(&s.rabbitmq_queue_name);
        t.exchange = s.exchange().map(|name| Exchange {
            name: name.to_string(),
            keys: s.binding_keys(),
            unrouted: format!("{name}.unrouted"),
        });
        t
    }

    /// Where a message goes: `(exchange, routing key)`.
    pub fn route(&self, envelope: &Envelope) -> (String, String) {
        match &self.exchange {
            Some(x) => (x.name.clone(), envelope.topic_key()),
            None => (String::new(), self.queue.clone()),
        }
    }

    /// Declare everything (idempotent). Something that already exists with other arguments
    /// is reported as such, since RabbitMQ then closes the channel.
    pub async fn declare(&self, ch: &Channel) -> Result<(), MqError> {
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(self.dlx.as_str().into(), ExchangeKind::Direct, durable_exchange, FieldTable::default())
            .await?;
        ch.queue_declare(self.dlq.as_str().into(), durable, FieldTable::default()).await?;
        ch.queue_bind(
            self.dlq.as_str().into(),
            self.dlx.as_str().into(),
            self.queue.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dlx.as_str().into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(self.queue.as_str().into()));
        ch.queue_declare(self.queue.as_str().into(), durable, args).await.map_err(|e| {
            precondition(e, || {
                format!(
                    "queue `{}` already exists with other arguments (no dead-letter exchange); delete it or choose another RABBITMQ_QUEUE_NAME",
                    self.queue
                )
            })
        })?;
        let Some(x) = &self.exchange else { return Ok(()) };
        ch.exchange_declare(x.unrouted.as_str().into(), ExchangeKind::Fanout, durable_exchange, FieldTable::default())
            .await?;
        ch.queue_declare(x.unrouted.as_str().into(), durable, FieldTable::default()).await?;
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
        ch.exchange_declare(x.name.as_str().into(), ExchangeKind::Topic, durable_exchange, args).await.map_err(|e| {
            precondition(e, || {
                format!(
                    "exchange `{}` already exists with other arguments (not a durable topic exchange with alternate exchange `{}`); delete it or choose another RABBITMQ_EXCHANGE",
                    x.name, x.unrouted
                )
            })
        })?;
        for key in &x.keys {
            ch.queue_bind(
                self.queue.as_str().into(),
                x.name.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    /// Delete the queues and the exchanges (used to reset the demo). Missing ones are fine.
    pub async fn delete(&self, ch: &Channel) -> Result<(), MqError> {
        ch.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await?;
        ch.queue_delete(self.dlq.as_str().into(), QueueDeleteOptions::default()).await?;
        ch.exchange_delete(self.dlx.as_str().into(), ExchangeDeleteOptions::default()).await?;
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
