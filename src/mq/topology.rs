//! Queue topology, declared the same way by the bridge and the sink: a durable queue whose
//! rejected messages go through the exchange `<queue>.dlx` to the queue `<queue>.dlq`.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::error::MqError;

/// Names derived from the main queue name.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The durable queue that receives every change.
    pub queue: String,
    /// The dead-letter exchange.
    pub dlx: String,
    /// The dead-letter queue.
    pub dlq: String,
}

impl Topology {
    /// The topology around `queue`.
    pub fn new(queue: &str) -> Self {
        Self { queue: queue.into(), dlx: format!("{queue}.dlx"), dlq: format!("{queue}.dlq") }
    }

    /// Declare everything (idempotent). A queue that already exists with other arguments is
    /// reported as such, since RabbitMQ then closes the channel.
    pub async fn declare(&self, ch: &Channel) -> Result<(), MqError> {
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(
            self.dlx.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
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
            if e.to_string().contains("PRECONDITION_FAILED") {
                MqError::Topology(format!(
                    "queue `{}` already exists with other arguments (no dead-letter exchange); delete it or choose another RABBITMQ_QUEUE_NAME",
                    self.queue
                ))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// Delete the queues and the exchange (used to reset the demo). Missing ones are fine.
    pub async fn delete(&self, ch: &Channel) -> Result<(), MqError> {
        ch.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default()).await?;
        ch.queue_delete(self.dlq.as_str().into(), QueueDeleteOptions::default()).await?;
        ch.exchange_delete(self.dlx.as_str().into(), ExchangeDeleteOptions::default()).await?;
        Ok(())
    }
}
