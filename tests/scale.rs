//! More than one machine, on RabbitMQ's own clustering, against real SecantusDB and
//! RabbitMQ: three partitioned sinks sharing the keys through a consistent-hash exchange
//! (through a `kill -9` of one), quorum queues, and a stream a new sink replays from its
//! start.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::QueueDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use mongodb::bson::{Document, doc};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

fn count(s: &Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_default()
}

/// Delete queues, and exchanges, by name (missing ones are fine).
async fn delete(queues: &[String], exchanges: &[String]) {
    let Ok(conn) = Connection::connect(&amqp_uri("/"), ConnectionProperties::default()).await else { return };
    if let Ok(ch) = conn.create_channel().await {
        for q in queues {
            for name in [q.clone(), format!("{q}.dlq"), format!("{q}.alerts")] {
                let _ = ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await;
            }
            let _ = ch.exchange_delete(format!("{q}.dlx").as_str().into(), Default::default()).await;
        }
        for x in exchanges {
            let _ = ch.exchange_delete(x.as_str().into(), Default::default()).await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn three_partitioned_sinks_each_hold_their_keys_through_a_kill_9() {
    const N: i64 = 1500;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("parts");
    let (queue, exchange) = (unique("q_parts"), unique("x_parts"));
    let coll = client.database(&db).collection::<Document>("items");
    // Some documents exist before the bridge starts: the snapshot's rows are spread too, and
    // each partition gets the control messages.
    coll.insert_many((0..300).map(|i| doc! {"_id": i, "v": i, "label": i % 2 == 0})).await.unwrap();
    let benv =
        Env::bridge(&mongo.uri(), &db, &queue).set("RABBITMQ_EXCHANGE", &exchange).set("RABBITMQ_PARTITIONS", "3");
    let states: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let senvs: Vec<Env> = (0..3)
        .map(|k| {
            sink_env(&queue, states[k].path(), "v", "label")
                .set("RABBITMQ_EXCHANGE", &exchange)
                .set("RABBITMQ_PARTITIONS", "3")
                .set("SINK_PARTITION", &k.to_string())
        })
        .collect();
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sinks = Vec::new();
    for senv in &senvs {
        sinks.push(start_sink(senv).await);
    }

    let writer = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for start in (300..N).step_by(20) {
                coll.insert_many((start..start + 20).map(|i| doc! {"_id": i, "v": i, "label": i % 2 == 0}))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for i in (0..N).step_by(7) {
                coll.update_one(doc! {"_id": i}, doc! {"$set": {"v": -i}}).await.unwrap();
            }
            for i in (0..N).step_by(11) {
                coll.delete_one(doc! {"_id": i}).await.unwrap();
            }
        })
    };
    // One sink dies mid-stream and comes back.
    wait_stats(&senvs[1], "partition 1 under way", LIMIT, |s| count(s, "events_applied") >= 150).await;
    sinks[1].kill9();
    sinks[1] = start_sink(&senvs[1]).await;
    assert!(!writer.is_finished(), "the kill lands during the stream");
    writer.await.unwrap();

    // Every key is held by exactly one sink, and together they hold MongoDB.
    let live = coll.count_documents(doc! {}).await.unwrap();
    wait_for("the partitions to hold every document", LIMIT, || async {
        let mut total = 0;
        for senv in &senvs {
            total += count(&sink_get(senv, "/stats").await?, "records");
        }
        (total == live).then_some(())
    })
    .await;
    let mut shares = [0u64; 3];
    for i in 0..N {
        let mut holders = Vec::new();
        for (k, senv) in senvs.iter().enumerate() {
            if let Some(doc) = sink_get_raw_doc(senv, &format!("/records/items/{i}")).await.filter(|d| d != "null") {
                holders.push((k, doc));
            }
        }
        match coll.find_one(doc! {"_id": i}).await.unwrap() {
            Some(d) => {
                assert_eq!(holders.len(), 1, "key {i} is held by {} sinks", holders.len());
                let want = serde_json::to_string(&mongo_cdc::bridge::encode::doc_to_json(&d)).unwrap();
                assert_eq!(holders[0].1, want, "key {i}");
                shares[holders[0].0] += 1;
            }
            None => assert!(holders.is_empty(), "deleted key {i} still held by {holders:?}"),
        }
    }
    assert!(shares.iter().all(|&s| s > live / 6), "the keys are spread: {shares:?}");
    // Training exactly once over the three: every document once, and every update that
    // changed `v` (`-0` is `0`: the update of key 0 teaches nothing).
    let mut trained = 0;
    for senv in &senvs {
        let s = sink_get(senv, "/stats").await.unwrap();
        assert_eq!(count(&s, "snapshot_controls"), 2, "each partition saw the snapshot's start and end: {s}");
        trained += s["model"]["trained"].as_u64().unwrap();
    }
    let updates = (0..N).step_by(7).filter(|&i| i != 0).count() as u64;
    assert_eq!(trained, N as u64 + updates, "trained exactly once across the partitions");
    for mut sink in sinks {
        assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    }
    assert!(bridge.terminate(LIMIT).await.success());
    let partitions: Vec<String> = (0..3).map(|k| format!("{queue}.p{k}")).collect();
    delete(&partitions, &[exchange.clone(), format!("{exchange}.unrouted")]).await;
    delete(&[format!("{exchange}.unrouted")], &[]).await;
}

#[tokio::test]
async fn quorum_queues_carry_the_stream_and_a_stream_queue_replays_its_history_to_a_new_sink() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    for queue_type in ["quorum", "stream"] {
        let db = unique(&format!("qt_{queue_type}"));
        let queue = unique(&format!("q_{queue_type}"));
        let benv = Env::bridge(&mongo.uri(), &db, &queue).set("RABBITMQ_QUEUE_TYPE", queue_type);
        let state = tempfile::tempdir().unwrap();
        let senv = sink_env(&queue, state.path(), "v", "label").set("RABBITMQ_QUEUE_TYPE", queue_type);
        let mut bridge = start_bridge(&client, &benv).await;
        let mut sink = start_sink(&senv).await;
        let coll = client.database(&db).collection::<Document>("items");
        coll.insert_many((0..500).map(|i| doc! {"_id": i, "v": i, "label": i % 2 == 0})).await.unwrap();
        wait_stats(&senv, "the inserts applied", LIMIT, |s| count(s, "events_applied") >= 500).await;
        let types = rabbitmqctl(&["list_queues", "name", "type"]);
        for name in [queue.clone(), format!("{queue}.dlq")] {
            let line = types.lines().find(|l| l.split_whitespace().next() == Some(name.as_str()));
            assert!(line.is_some_and(|l| l.ends_with(queue_type)), "{name} is a {queue_type} queue:\n{types}");
        }
        if queue_type == "stream" {
            // The sink restarts where it stopped; a new sink replays the retained history.
            sink.kill9();
            coll.insert_many((500..600).map(|i| doc! {"_id": i, "v": i, "label": true})).await.unwrap();
            let mut again = start_sink(&senv).await;
            let s = wait_stats(&senv, "the rest applied", LIMIT, |s| count(s, "events_applied") >= 600).await;
            assert_eq!(s["model"]["trained"], 600, "no message applied twice: {s}");
            // Poison cannot be rejected into a dead-letter exchange from a stream: the sink
            // publishes it to the dead-letter queue (a stream too) with its reason.
            publish_routed("/", "", &[(queue.as_str(), b"{not json".as_slice())]).await;
            let dlq = consume_stream_until("/", &format!("{queue}.dlq"), LIMIT, |got| !got.is_empty()).await;
            assert_eq!(dlq[0].body, b"{not json");
            let reason = dlq[0].props.headers().as_ref().and_then(|h| h.inner().get("x-reason").cloned());
            assert!(matches!(reason, Some(lapin::types::AMQPValue::LongString(_))), "{:?}", dlq[0].props);
            wait_stats(&senv, "the poison counted", LIMIT, |s| count(s, "dead_lettered") == 1).await;
            let fresh_state = tempfile::tempdir().unwrap();
            let fresh = sink_env(&queue, fresh_state.path(), "v", "label")
                .set("RABBITMQ_QUEUE_TYPE", "stream")
                .set("SINK_STREAM_START", "first");
            let mut replay = start_sink(&fresh).await;
            let s = wait_stats(&fresh, "the history replayed", LIMIT, |s| count(s, "events_applied") >= 600).await;
            assert_eq!(s["model"]["trained"], 600, "a new model trained on the whole history: {s}");
            assert_eq!(count(&s, "records"), 600);
            assert!(replay.terminate(LIMIT).await.success());
            assert!(again.terminate(LIMIT).await.success());
        } else {
            assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
        }
        assert!(bridge.terminate(LIMIT).await.success());
        delete(&[queue], &[]).await;
    }
}
