//! `mongo-cdc peek`: print up to `count` messages of the queue and leave them there.

use crate::config::RabbitSettings;
use crate::mq::Rabbit;

/// Print up to `count` message bodies of `RABBITMQ_QUEUE_NAME` (stdout) and how many were
/// shown (stderr); the messages stay in the queue.
pub async fn run(count: usize) -> anyhow::Result<()> {
    let settings = RabbitSettings::from_env()?;
    let rabbit = Rabbit::shared(&settings);
    rabbit.check().await?;
    let bodies = rabbit.peek(&settings.rabbitmq_queue_name, count).await?;
    for body in &bodies {
        println!("{}", String::from_utf8_lossy(body));
    }
    eprintln!("{} message(s) shown from `{}`, left in the queue", bodies.len(), settings.rabbitmq_queue_name);
    Ok(())
}
