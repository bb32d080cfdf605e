//! Faults in the middle of a stream: `kill -9` of the bridge, RabbitMQ dropping its
//! connections, SecantusDB restarting. Every change must arrive at least once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use mongodb::Client;
use mongodb::bson::{Document, doc};
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(60);

/// Insert `n` documents with `_id` 0..n, in small paced batches, retrying through outages
/// (a duplicate key on retry means the earlier attempt landed).
fn writer(client: Client, db: String, n: i64) -> JoinHandle<()> {
    tokio::spawn(async move {
        let coll = client.database(&db).collection::<Document>("events");
        for start in (0..n).step_by(10) {
            for i in start..(start + 10).min(n) {
                loop {
                    match coll.insert_one(doc! {"_id": i, "v": i * 2}).await {
                        Ok(_) => break,
                        Err(e) if e.to_string().contains("E11000") || e.to_string().contains("uplicate") => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn wait_published(vhost: &str, queue: &str, at_least: u32) {
    wait_for(&format!("{at_least} messages in {queue}"), LIMIT, || async move {
        queue_len(vhost, queue).await.filter(|&n| n >= at_least)
    })
    .await;
}

/// Consume until every key 0..n has arrived; returns (messages, distinct keys).
async fn collect_all(vhost: &str, queue: &str, n: usize) -> (usize, usize) {
    let mut keys = HashSet::new();
    let got = consume_until(vhost, queue, LIMIT, |m| {
        if let Some(last) = m.last() {
            keys.insert(last.event().key);
        }
        keys.len() >= n
    })
    .await;
    let distinct: HashSet<_> = got.iter().map(|m| m.event().key).collect();
    assert!(distinct.iter().all(|k| k.parse::<usize>().is_ok_and(|i| i < n)));
    (got.len(), distinct.len())
}

#[tokio::test]
async fn kill_9_mid_stream_loses_nothing_and_duplicates_at_most_a_window() {
    const N: usize = 2500;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("kill9");
    let queue = unique("q_kill9");
    let env = Env::bridge(&mongo.uri(), &db, &queue);
    let window: usize = 512;
    let env = env.set("CDC_CONFIRM_WINDOW", &window.to_string());
    let mut bridge = start_bridge(&client, &env).await;

    let w = writer(client.clone(), db.clone(), N as i64);
    wait_published("/", &queue, 400).await;
    bridge.kill9();
    assert!(!w.is_finished(), "the kill must land in the middle of the stream");
    let mut bridge = Proc::start(&["bridge"], &env);
    w.await.unwrap();

    let (messages, distinct) = collect_all("/", &queue, N).await;
    bridge.assert_running();
    assert_eq!(distinct, N, "every change arrives");
    assert!(messages - distinct <= window, "{} duplicates, more than one window ({window})", messages - distinct);
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn rabbitmq_dropping_connections_loses_nothing() {
    const N: usize = 2500;
    let vhost = Vhost::new();
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("mqdrop");
    let queue = unique("q_mqdrop");
    let env = Env::bridge(&mongo.uri(), &db, &queue).set("RABBITMQ_VHOST", &vhost.0);
    let mut bridge = start_bridge(&client, &env).await;

    let w = writer(client.clone(), db.clone(), N as i64);
    wait_published(&vhost.0, &queue, 300).await;
    rabbitmqctl(&["close_all_connections", "--vhost", &vhost.0, "test: drop everything"]);
    assert!(!w.is_finished(), "the fault must land in the middle of the stream");
    w.await.unwrap();

    let (_, distinct) = collect_all(&vhost.0, &queue, N).await;
    assert_eq!(distinct, N);
    bridge.assert_running();
    assert!(bridge.output().contains("RabbitMQ failed"), "the drop was noticed:\n{}", bridge.output());
    assert!(bridge.terminate(LIMIT).await.success());
}

#[tokio::test]
async fn secantus_restart_loses_nothing() {
    const N: usize = 2500;
    let mut mongo = Secantus::on_disk().await;
    let client = mongo.client().await;
    let db = unique("dbrestart");
    let queue = unique("q_dbrestart");
    let env = Env::bridge(&mongo.uri(), &db, &queue);
    let mut bridge = start_bridge(&client, &env).await;

    let w = writer(client.clone(), db.clone(), N as i64);
    wait_published("/", &queue, 300).await;
    mongo.restart().await;
    assert!(!w.is_finished(), "the restart must land in the middle of the stream");
    w.await.unwrap();

    let (_, distinct) = collect_all("/", &queue, N).await;
    assert_eq!(distinct, N);
    bridge.assert_running();
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn rabbitmq_dropping_connections_costs_the_sink_nothing() {
    const N: usize = 2500;
    let vhost = Vhost::new();
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("mqdrop_sink");
    let queue = unique("q_mqdrop_sink");
    let state = tempfile::tempdir().unwrap();
    let env = Env::bridge(&mongo.uri(), &db, &queue).set("RABBITMQ_VHOST", &vhost.0);
    let senv = sink_env(&queue, state.path(), "v", "label").set("RABBITMQ_VHOST", &vhost.0);
    let mut bridge = start_bridge(&client, &env).await;
    let mut sink = start_sink(&senv).await;

    // Every document carries a label, so each is trained once.
    let coll = client.database(&db).collection::<Document>("events");
    let w = tokio::spawn(async move {
        for start in (0..N as i64).step_by(10) {
            let docs: Vec<Document> =
                (start..start + 10).map(|i| doc! {"_id": i, "v": i, "label": i % 3 == 0}).collect();
            while coll.insert_many(docs.clone()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    for round in 1..=2u64 {
        wait_stats(&senv, "progress before the drop", LIMIT, |s| {
            s["events_applied"].as_u64().unwrap_or(0) >= round * 600
        })
        .await;
        rabbitmqctl(&["close_all_connections", "--vhost", &vhost.0, "test: drop everything"]);
    }
    assert!(!w.is_finished(), "the drops must land in the middle of the stream");
    w.await.unwrap();

    let s = wait_stats(&senv, "every change applied", LIMIT, |s| s["events_applied"].as_u64() == Some(N as u64)).await;
    assert_eq!(s["model"]["trained"].as_u64(), Some(N as u64), "trained exactly once: {s}");
    assert_eq!(s["records"].as_u64(), Some(N as u64), "{s}");
    sink.assert_running();
    assert!(sink.output().contains("RabbitMQ failed"), "the sink noticed and reconnected:\n{}", sink.output());
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert!(bridge.terminate(LIMIT).await.success());
}
