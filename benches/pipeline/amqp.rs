//! The bench's own RabbitMQ side: a plain lapin publisher with several confirm strategies
//! (the broker's ceiling), and a cheap probe of a queue's depth.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, PublisherConfirm};

use crate::common::amqp_uri;

/// How a publisher waits for the broker's confirms.
#[derive(Debug, Clone, Copy)]
pub enum Confirms {
    /// Publish one message at a time (each `basic_publish` awaited, as the bridge does) with
    /// at most `n` unconfirmed; confirms are collected as they arrive.
    Window(usize),
    /// Keep up to `publishes` `basic_publish` calls in flight at once (so frames leave in
    /// bursts), with at most `window` unconfirmed.
    Pipelined { publishes: usize, window: usize },
    /// Publish `n` messages, then `wait_for_confirms` for all of them.
    Batch(usize),
}

impl Confirms {
    /// The strategies the bench tries.
    pub const ALL: [Confirms; 5] = [
        Confirms::Window(512),
        Confirms::Window(4096),
        Confirms::Pipelined { publishes: 64, window: 512 },
        Confirms::Pipelined { publishes: 64, window: 4096 },
        Confirms::Batch(1000),
    ];

    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Confirms::Window(n) => format!("window-{n}"),
            Confirms::Pipelined { publishes, window } => format!("pipelined-{publishes}x{window}"),
            Confirms::Batch(n) => format!("batch-{n}"),
        }
    }

    /// One line describing it.
    pub fn describe(&self) -> String {
        match self {
            Confirms::Window(n) => format!(
                "sequential `basic_publish` (each awaited, like the bridge), at most {n} unconfirmed, confirms collected with `FuturesUnordered`"
            ),
            Confirms::Pipelined { publishes, window } => format!(
                "up to {publishes} `basic_publish` calls in flight at once (`buffered`), at most {window} unconfirmed, confirms collected with `FuturesUnordered`"
            ),
            Confirms::Batch(n) => format!("publish {n} (confirm futures dropped), then `wait_for_confirms`"),
        }
    }
}

/// A channel in confirm mode on a connection of its own.
pub async fn confirm_channel(vhost: &str) -> (Connection, Channel) {
    let conn =
        Connection::connect(&amqp_uri(vhost), ConnectionProperties::default()).await.expect("connect to RabbitMQ");
    let ch = conn.create_channel().await.expect("open a channel");
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm_select");
    (conn, ch)
}

fn acked(c: lapin::Result<Confirmation>) {
    match c.expect("publisher confirm") {
        Confirmation::Ack(None) => {}
        other => panic!("the broker did not confirm a publish: {other:?}"),
    }
}

/// Publish `body` `n` times to `queue` (default exchange, `mandatory`, `props`), waiting for
/// confirms as `how` says; returns the time from the first publish to the last confirm.
pub async fn publish_n(
    ch: &Channel,
    queue: &str,
    body: &[u8],
    props: &BasicProperties,
    n: usize,
    how: Confirms,
) -> Duration {
    let publish = || {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            props.clone(),
        )
    };
    let start = Instant::now();
    match how {
        Confirms::Window(window) => {
            let mut inflight: FuturesUnordered<PublisherConfirm> = FuturesUnordered::new();
            for _ in 0..n {
                if inflight.len() >= window {
                    acked(inflight.next().await.expect("a confirm in flight"));
                }
                inflight.push(publish().await.expect("basic_publish"));
            }
            while let Some(c) = inflight.next().await {
                acked(c);
            }
        }
        Confirms::Pipelined { publishes, window } => {
            let mut sends = futures::stream::iter(0..n).map(|_| publish()).buffered(publishes);
            let mut inflight: FuturesUnordered<PublisherConfirm> = FuturesUnordered::new();
            while let Some(sent) = sends.next().await {
                inflight.push(sent.expect("basic_publish"));
                while inflight.len() >= window {
                    acked(inflight.next().await.expect("a confirm in flight"));
                }
            }
            while let Some(c) = inflight.next().await {
                acked(c);
            }
        }
        Confirms::Batch(batch) => {
            let mut left = n;
            while left > 0 {
                for _ in 0..batch.min(left) {
                    drop(publish().await.expect("basic_publish"));
                }
                left -= batch.min(left);
                let returned = ch.wait_for_confirms().await.expect("wait_for_confirms");
                assert!(returned.is_empty(), "{} messages returned or nacked", returned.len());
            }
        }
    }
    start.elapsed()
}

/// Publish every message `messages` yields (default exchange, `mandatory`), keeping up to
/// `publishes` `basic_publish` calls in flight and at most `window` unconfirmed; returns how
/// many were published and confirmed.
pub async fn publish_stream(
    ch: &Channel,
    queue: &str,
    messages: impl futures::Stream<Item = (Vec<u8>, BasicProperties)>,
    publishes: usize,
    window: usize,
) -> u64 {
    publish_to(ch, "", queue, messages, publishes, window).await
}

/// [`publish_stream`] to `exchange` with `routing_key`.
pub async fn publish_to(
    ch: &Channel,
    exchange: &str,
    queue: &str,
    messages: impl futures::Stream<Item = (Vec<u8>, BasicProperties)>,
    publishes: usize,
    window: usize,
) -> u64 {
    let mut sends = std::pin::pin!(
        messages
            .map(|(body, props)| async move {
                ch.basic_publish(
                    exchange.into(),
                    queue.into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    props,
                )
                .await
            })
            .buffered(publishes)
    );
    let mut inflight: FuturesUnordered<PublisherConfirm> = FuturesUnordered::new();
    let mut count = 0;
    while let Some(sent) = sends.next().await {
        inflight.push(sent.expect("basic_publish"));
        count += 1;
        while inflight.len() >= window {
            acked(inflight.next().await.expect("a confirm in flight"));
        }
    }
    while let Some(c) = inflight.next().await {
        acked(c);
    }
    count
}

/// Asks the broker how many messages a queue holds, on one long-lived connection (a failed
/// passive declare closes the channel, so a new one is opened then).
pub struct QueueProbe {
    vhost: String,
    conn: Connection,
    ch: Option<Channel>,
}

impl QueueProbe {
    /// Connect to `vhost`.
    pub async fn connect(vhost: &str) -> Self {
        let conn =
            Connection::connect(&amqp_uri(vhost), ConnectionProperties::default()).await.expect("connect to RabbitMQ");
        Self { vhost: vhost.to_string(), conn, ch: None }
    }

    /// Ready messages in `queue`, or `None` if it does not exist (yet) or the broker is
    /// unreachable (the connection is made again on the next call).
    pub async fn len(&mut self, queue: &str) -> Option<u32> {
        if !self.conn.status().connected() {
            self.conn = Connection::connect(&amqp_uri(&self.vhost), ConnectionProperties::default()).await.ok()?;
            self.ch = None;
        }
        if self.ch.as_ref().is_none_or(|c| !c.status().connected()) {
            self.ch = Some(self.conn.create_channel().await.ok()?);
        }
        let ch = self.ch.as_ref()?;
        match ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
        {
            Ok(q) => Some(q.message_count()),
            Err(_) => {
                self.ch = None;
                None
            }
        }
    }

    /// Close the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, "done".into()).await;
    }
}
