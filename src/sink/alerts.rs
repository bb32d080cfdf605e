//! Alerts (anomaly, rule, schema, drift) to RabbitMQ: the durable queue `<queue>.alerts`, declared by the sink, and a
//! confirming publisher for it. Each alert is one persistent JSON message whose
//! `message_id` is the alert's id, so consumers can drop the repeats at-least-once delivery
//! allows.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};

use super::core::Alert;
use crate::error::MqError;
use crate::mq::Rabbit;
use crate::mq::publisher::confirmed;

/// The alerts queue of the sink reading `queue`.
pub fn queue_name(queue: &str) -> String {
    format!("{queue}.alerts")
}

/// Declare the alerts queue (durable; idempotent).
pub async fn declare(channel: &Channel, name: &str) -> Result<(), MqError> {
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(name.into(), durable, FieldTable::default()).await?;
    Ok(())
}

/// Publishes alerts to `<queue>.alerts` with publisher confirms.
pub struct AlertPublisher {
    channel: Channel,
    queue: String,
}

impl AlertPublisher {
    /// A confirming channel on the shared connection, with the queue declared.
    pub async fn open(rabbit: &Rabbit, queue: &str) -> Result<Self, MqError> {
        let channel = rabbit.channel().await?;
        let queue = queue_name(queue);
        declare(&channel, &queue).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel, queue })
    }

    /// Publish `alerts` in order and wait until the broker has confirmed every one; a nack or
    /// a returned message is an error.
    pub async fn publish(&self, alerts: &[Alert]) -> Result<(), MqError> {
        let mut confirms = Vec::with_capacity(alerts.len());
        for a in alerts {
            let body = serde_json::to_vec(a).expect("an alert serialises");
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(a.id.as_str().into())
                .with_type(a.kind.as_str().into())
                .with_timestamp((a.ts_ms / 1000).max(0) as u64);
            let confirm = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    props,
                )
                .await?;
            confirms.push(confirm);
        }
        for c in confirms {
            confirmed(c).await?;
        }
        if !alerts.is_empty() {
            tracing::info!(queue = %self.queue, alerts = alerts.len(), "published alerts");
        }
        Ok(())
    }

    /// Close the channel politely.
    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }
}
