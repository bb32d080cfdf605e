//! A confirming publisher: persistent, `mandatory` messages on a channel in confirm mode.
//! A nack or a returned (unroutable) message is an error.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, PublisherConfirm};

use super::Rabbit;
use super::topology::Topology;
use crate::error::MqError;
use crate::event::Envelope;

/// Publishes messages to the queue (or the topic exchange) and hands back their confirmations.
pub struct Publisher {
    channel: Channel,
    topology: Topology,
}

impl Publisher {
    /// Open a channel on the shared connection, declare the topology and enable confirms.
    pub async fn open(rabbit: &Rabbit, topology: &Topology) -> Result<Self, MqError> {
        let channel = rabbit.channel().await?;
        topology.declare(&channel).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel, topology: topology.clone() })
    }

    /// Send one message (to each of its routes: a partitioned snapshot control message goes
    /// to every partition). The future's first poll queues the message's frames on the
    /// channel, so messages go out in the order their futures are first polled; it then
    /// resolves, once they are written, to the confirmation of every copy. It borrows nothing,
    /// so many can be in flight.
    pub fn send(
        &self,
        body: Vec<u8>,
        envelope: Envelope,
    ) -> impl Future<Output = Result<Confirms, MqError>> + Send + 'static {
        let channel = self.channel.clone();
        let routes = self.topology.routes(&envelope);
        async move {
            let properties = envelope.properties();
            let mut confirms = Vec::with_capacity(routes.len());
            for (exchange, routing_key) in routes {
                confirms.push(
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            routing_key.as_str().into(),
                            BasicPublishOptions { mandatory: true, ..Default::default() },
                            &body,
                            properties.clone(),
                        )
                        .await?,
                );
            }
            Ok(Confirms(confirms))
        }
    }

    /// Close the channel politely (errors are irrelevant at this point).
    pub async fn close(self) {
        let _ = self.channel.close(200, "bye".into()).await;
    }
}

/// The broker's confirmations of one message's copies.
pub struct Confirms(Vec<PublisherConfirm>);

/// Wait for a confirmation; only a plain ack is success.
pub async fn confirmed(confirm: PublisherConfirm) -> Result<(), MqError> {
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(MqError::Returned(format!("{} {}", returned.reply_code, returned.reply_text)))
        }
        Confirmation::Nack(None) | Confirmation::NotRequested => Err(MqError::Nack),
    }
}

/// Wait for the confirmations of every copy of a message.
pub async fn confirmed_all(confirms: Confirms) -> Result<(), MqError> {
    for confirm in confirms.0 {
        confirmed(confirm).await?;
    }
    Ok(())
}
