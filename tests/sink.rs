//! The ML sink against real RabbitMQ (and, end to end, SecantusDB and the bridge): learning,
//! versioned state, exactly-once training through crashes, duplicates, and poison.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(90);

/// The rule the synthetic stream follows.
fn rule(x1: f64, x2: f64, x3: f64) -> bool {
    2.0 * x1 - x2 + 0.5 * x3 > 0.0
}

fn count(s: &Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_default()
}

fn trained(s: &Value) -> u64 {
    s["model"]["trained"].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn end_to_end_learns_a_linear_rule_and_predicts_it() {
    const N: usize = 3000;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("e2e");
    let queue = unique("q_e2e");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "x1,x2,x3", "label");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    let mut rng = Rng::new(7);
    let docs: Vec<Document> = (0..N)
        .map(|i| {
            let (x1, x2, x3) = (rng.unit(), rng.unit(), rng.unit());
            doc! {"_id": i as i64, "x1": x1, "x2": x2, "x3": x3, "label": rule(x1, x2, x3)}
        })
        .collect();
    let coll = client.database(&db).collection::<Document>("points");
    for chunk in docs.chunks(500) {
        coll.insert_many(chunk.to_vec()).await.unwrap();
    }

    let s = wait_stats(&senv, "every insert trained", LIMIT, |s| trained(s) >= N as u64).await;
    assert_eq!(trained(&s), N as u64);
    assert_eq!(count(&s, "records"), N as u64);
    assert_eq!(s["model"]["task"], "classification");
    let rolling = s["model"]["rolling_1000"]["accuracy"].as_f64().unwrap();
    assert!(rolling > 0.9, "rolling accuracy {rolling}");
    assert!(s["model"]["progressive"]["log_loss"].as_f64().unwrap() > 0.0);
    let lag = &s["lag_ms"];
    assert!(lag["p50"].as_i64().unwrap() >= 0 && lag["p99"].as_i64().unwrap() >= lag["p50"].as_i64().unwrap(), "{lag}");

    // New points, clear of the boundary: predictions follow the rule.
    let mut rng = Rng::new(99);
    let mut checked = 0;
    while checked < 30 {
        let (x1, x2, x3) = (rng.unit(), rng.unit(), rng.unit());
        if (2.0 * x1 - x2 + 0.5 * x3).abs() < 0.5 {
            continue;
        }
        let (status, p) = sink_post(&senv, "/predict", &json!({"x1": x1, "x2": x2, "x3": x3}).to_string()).await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["prediction"], json!(rule(x1, x2, x3)), "at ({x1}, {x2}, {x3}): {p}");
        checked += 1;
    }
    // Bad requests get a reason.
    let (status, p) = sink_post(&senv, "/predict", "{not json").await;
    assert_eq!(status, 400);
    assert!(p["error"].as_str().unwrap().contains("JSON"));
    let (status, p) = sink_post(&senv, "/predict", r#"{"x1": 1}"#).await;
    assert_eq!(status, 400);
    assert!(p["error"].as_str().unwrap().contains("x2"), "{p}");
    // Prometheus text.
    let metrics =
        reqwest::get(format!("http://{}/metrics", senv.get("SINK_HTTP_ADDR"))).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("sink_events_applied_total {N}")), "{metrics}");
    assert!(metrics.contains("sink_model_progressive_accuracy "), "{metrics}");

    bridge.assert_running();
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn records_and_versions_match_mongodb() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("state");
    let queue = unique("q_state");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "v", "label");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    let coll = client.database(&db).collection::<Document>("items");
    let mut versions = vec![0u64; 200];
    for i in 0..200i64 {
        coll.insert_one(doc! {"_id": i, "v": i, "label": i % 2 == 0}).await.unwrap();
        versions[i as usize] += 1;
    }
    for i in (0..200i64).step_by(2) {
        coll.update_one(doc! {"_id": i}, doc! {"$inc": {"v": 1000}}).await.unwrap();
        versions[i as usize] += 1;
    }
    for i in (0..200i64).step_by(4) {
        coll.replace_one(doc! {"_id": i}, doc! {"v": -i, "label": true, "replaced": true}).await.unwrap();
        versions[i as usize] += 1;
    }
    for i in (0..200i64).step_by(5) {
        coll.delete_one(doc! {"_id": i}).await.unwrap();
        versions[i as usize] += 1;
    }
    let total: u64 = versions.iter().sum();
    let s = wait_stats(&senv, "every change applied", LIMIT, |s| count(s, "events_applied") >= total).await;
    assert_eq!(count(&s, "events_applied"), total);
    let live = coll.count_documents(doc! {}).await.unwrap();
    assert_eq!(count(&s, "records"), live);

    for i in 0..200i64 {
        let rec = sink_get(&senv, &format!("/records/items/{i}")).await.expect("record served");
        assert_eq!(rec["version"], json!(versions[i as usize]), "version of {i}: {rec}");
        match coll.find_one(doc! {"_id": i}).await.unwrap() {
            Some(d) => assert_eq!(rec["doc"], Value::Object(mongo_cdc::bridge::encode::doc_to_json(&d)), "doc {i}"),
            None => assert_eq!(rec["doc"], Value::Null, "deleted {i}"),
        }
    }
    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn kill_9_the_sink_repeatedly_trains_exactly_once() {
    const N: i64 = 5000;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("sinkkill");
    let queue = unique("q_sinkkill");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "a,b", "label").set("SINK_CHECKPOINT_EVERY", "300");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    let writer = {
        let coll = client.database(&db).collection::<Document>("events");
        tokio::spawn(async move {
            let mut rng = Rng::new(3);
            for start in (0..N).step_by(50) {
                let docs: Vec<Document> = (start..start + 50)
                    .map(|i| {
                        let (a, b) = (rng.unit(), rng.unit());
                        doc! {"_id": i, "a": a, "b": b, "label": a > b}
                    })
                    .collect();
                coll.insert_many(docs).await.unwrap();
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        })
    };

    let mut kills = 0;
    for round in 1..=4u64 {
        wait_stats(&senv, "progress before a kill", LIMIT, |s| count(s, "events_applied") >= round * 700).await;
        sink.kill9();
        kills += 1;
        sink = start_sink(&senv).await;
    }
    assert!(!writer.is_finished(), "the kills must land during the stream");
    writer.await.unwrap();

    wait_stats(&senv, "all events trained", LIMIT, |s| trained(s) >= N as u64).await;
    // Stop cleanly: with the consumer gone, anything unacknowledged would be back in the
    // queue, so an empty queue means every delivery was settled after its checkpoint.
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert_eq!(queue_len("/", &queue).await, Some(0));
    let mut sink = start_sink(&senv).await;
    let s = sink_get(&senv, "/stats").await.unwrap();
    assert_eq!(kills, 4);
    assert_eq!(trained(&s), N as u64, "trained exactly once per distinct labelled event: {s}");
    assert_eq!(count(&s, "events_applied"), N as u64);
    let live = client.database(&db).collection::<Document>("events").count_documents(doc! {}).await.unwrap();
    assert_eq!(count(&s, "records"), live);
    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

fn event(id: &str, key: &str, t: u32, after: Value) -> Value {
    json!({
        "id": id, "op": "c", "key": key, "before": null, "after": after,
        "updated_fields": null, "removed_fields": null,
        "source": {"db": "d", "collection": "c", "cluster_time": {"t": t, "i": 1}},
        "ts_ms": 1_700_000_000_000i64,
    })
}

#[tokio::test]
async fn the_same_message_twice_trains_once() {
    let queue = unique("q_dup");
    let state = tempfile::tempdir().unwrap();
    let senv = sink_env(&queue, state.path(), "x", "y");
    let mut sink = start_sink(&senv).await;
    let body = event("tok-1", "k1", 100, json!({"_id": "k1", "x": 1.0, "y": true})).to_string().into_bytes();
    publish_raw("/", &queue, &[body.clone(), body]).await;

    let s = wait_stats(&senv, "both deliveries handled", LIMIT, |s| {
        count(s, "events_applied") + count(s, "duplicates_skipped") >= 2
    })
    .await;
    assert_eq!(trained(&s), 1);
    assert_eq!(count(&s, "events_applied"), 1);
    assert_eq!(count(&s, "duplicates_skipped"), 1);
    assert_eq!(s["last_event_id"], "tok-1");

    // An older event for the same key is stale.
    let older = event("tok-0", "k1", 50, json!({"_id": "k1", "x": 2.0, "y": false})).to_string().into_bytes();
    publish_raw("/", &queue, &[older]).await;
    let s = wait_stats(&senv, "stale skipped", LIMIT, |s| count(s, "stale_skipped") >= 1).await;
    assert_eq!(trained(&s), 1);
    assert!(sink.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_queue_and_good_messages_keep_flowing() {
    let queue = unique("q_poison");
    let state = tempfile::tempdir().unwrap();
    let senv = sink_env(&queue, state.path(), "x,nested.y", "label");
    let mut sink = start_sink(&senv).await;

    let good = |i: u32| {
        event(
            &format!("good-{i}"),
            &format!("g{i}"),
            1000 + i,
            json!({"x": i, "nested": {"y": 1}, "label": i.is_multiple_of(2)}),
        )
    };
    let mut poison: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        b"[1, 2, 3]".to_vec(),
        br#"{"id": "no-other-fields"}"#.to_vec(),
        event("p-op", "k", 5, json!({"x": 1})).to_string().replace(r#""op":"c""#, r#""op":"zz""#).into_bytes(),
        event("p-str", "k", 5, json!({"x": "abc", "nested": {"y": 1}, "label": true})).to_string().into_bytes(),
        event("p-obj", "k", 5, json!({"x": {"a": 1}, "nested": {"y": 1}, "label": true})).to_string().into_bytes(),
        event("p-arr", "k", 5, json!({"x": 1, "nested": {"y": [1]}, "label": true})).to_string().into_bytes(),
        event("p-label", "k", 5, json!({"x": 1, "nested": {"y": 1}, "label": {"no": 1}})).to_string().into_bytes(),
        event("p-after", "k", 5, json!(null)).to_string().into_bytes(),
        br#"{"id": 1, "op": "c"}"#.to_vec(),
    ];
    let n_poison = poison.len() as u64;
    let mut bodies = Vec::new();
    for (i, p) in poison.drain(..).enumerate() {
        bodies.push(good(i as u32).to_string().into_bytes());
        bodies.push(p);
    }
    bodies.push(good(999).to_string().into_bytes());
    let n_good = n_poison + 1;
    publish_raw("/", &queue, &bodies).await;

    let s = wait_stats(&senv, "everything handled", LIMIT, |s| {
        count(s, "events_applied") + count(s, "dead_lettered") >= n_good + n_poison
    })
    .await;
    assert_eq!(count(&s, "events_applied"), n_good);
    assert_eq!(count(&s, "dead_lettered"), n_poison);
    assert_eq!(trained(&s), n_good);
    let dlq = format!("{queue}.dlq");
    let in_dlq = wait_for("poison in the DLQ", LIMIT, || {
        let dlq = dlq.clone();
        async move { queue_len("/", &dlq).await.filter(|&n| n >= n_poison as u32) }
    })
    .await;
    assert_eq!(in_dlq as u64, n_poison);
    let out = sink.output();
    assert!(out.contains("not numeric"), "reasons are logged:\n{out}");
    assert!(sink.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}
