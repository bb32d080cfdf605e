//! A confirming publisher: persistent, `mandatory` messages on a channel in confirm mode.
//! A nack or a returned (unroutable) message is an error.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};

use super::Rabbit;
use super::topology::Topology;
use crate::error::MqError;
use crate::event::ChangeEvent;

/// Publishes change events to the queue and hands back their confirmations.
pub struct Publisher {
    channel: Channel,
    routing_key: String,
}

/// What a message carries besides its body (AMQP properties and headers).
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `message_id`: the event id.
    pub id: String,
    /// `type`: the op code.
    pub op: &'static str,
    /// Header `db`.
    pub db: String,
    /// Header `collection`.
    pub collection: String,
    /// Event time, ms since the epoch (the AMQP `timestamp` is in seconds).
    pub ts_ms: i64,
}

impl Envelope {
    /// The envelope of an event.
    pub fn of(ev: &ChangeEvent) -> Self {
        Self {
            id: ev.id.clone(),
            op: ev.op.code(),
            db: ev.source.db.clone(),
            collection: ev.source.collection.clone(),
            ts_ms: ev.ts_ms,
        }
    }

    fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert("db".into(), AMQPValue::LongString(self.db.as_str().into()));
        headers.insert("collection".into(), AMQPValue::LongString(self.collection.as_str().into()));
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(self.id.as_str().into())
            .with_type(self.op.into())
            .with_timestamp(u64::try_from(self.ts_ms / 1000).unwrap_or_default())
            .with_headers(headers)
    }
}

impl Publisher {
    /// Open a channel on the shared connection, declare the topology and enable confirms.
    pub async fn open(rabbit: &Rabbit, topology: &Topology) -> Result<Self, MqError> {
        let channel = rabbit.channel().await?;
        topology.declare(&channel).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel, routing_key: topology.queue.clone() })
    }

    /// Send one message; the returned future resolves when the broker confirms it.
    pub async fn publish(&self, body: &[u8], envelope: &Envelope) -> Result<PublisherConfirm, MqError> {
        Ok(self
            .channel
            .basic_publish(
                "".into(),
                self.routing_key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                envelope.properties(),
            )
            .await?)
    }

    /// Close the channel politely (errors are irrelevant at this point).
    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }
}

/// Wait for a confirmation; only a plain ack is success.
pub async fn confirmed(confirm: PublisherConfirm) -> Result<(), MqError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(MqError::Returned(format!("{} {}", returned.reply_code, returned.reply_text)))
        }
        Confirmation::Nack(None) => Err(MqError::Nack),
        Confirmation::NotRequested => Err(MqError::Nack),
    }
}
