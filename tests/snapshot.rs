//! The snapshot of existing data, against real SecantusDB and RabbitMQ: resumable through
//! `kill -9`, interleaved with writes (per-key order on the queue), longer than the oplog,
//! a re-snapshot after the resume point is lost (with the sink reconciling deletes), the
//! snapshot modes, and training exactly once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use common::*;
use mongodb::Client;
use mongodb::bson::{Bson, Document, doc, oid::ObjectId};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn count(s: &Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_default()
}

fn trained(s: &Value) -> u64 {
    s["model"]["trained"].as_u64().unwrap_or_default()
}

/// A labelled document with feature `x`.
fn labelled(id: impl Into<Bson>, rng: &mut Rng) -> Document {
    let x = rng.unit();
    doc! {"_id": id.into(), "x": x, "label": x > 0.0}
}

async fn insert_all(client: &Client, db: &str, coll: &str, docs: Vec<Document>) {
    let c = client.database(db).collection::<Document>(coll);
    for chunk in docs.chunks(500) {
        c.insert_many(chunk.to_vec()).await.unwrap();
    }
}

/// Wait until the bridge's snapshot is complete (its checkpoint streams).
async fn wait_snapshot_done(client: &Client, env: &Env, bridge: &mut Proc) {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let cp = checkpoint(client, env).await;
        if cp.as_ref().is_some_and(|c| !c.contains_key("snapshot")) {
            return;
        }
        bridge.assert_running();
        assert!(std::time::Instant::now() < deadline, "snapshot not complete; checkpoint {cp:?}:\n{}", bridge.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the snapshot is reading `collection` and has sent at least `rows` of it.
async fn wait_snapshot_in(client: &Client, env: &Env, collection: &str, rows: i64) {
    wait_for(&format!("the snapshot to be in `{collection}`"), LIMIT, || async {
        let p = snapshot_progress(client, env).await?;
        let cur = p.get_document("current").ok()?;
        (cur.get_str("collection").ok()? == collection && cur.get_i64("rows").ok()? >= rows).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_snapshot_of_three_collections_survives_two_kill_9s() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("snap3");
    let queue = unique("q_snap3");
    let state = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(11);
    // `beta` mixes three `_id` types, which `$gt` alone would not read whole.
    insert_all(&client, &db, "alpha", (0..2000i64).map(|i| labelled(i, &mut rng)).collect()).await;
    let mut beta: Vec<Document> = (0..500i64).map(|i| labelled(10_000 + i, &mut rng)).collect();
    beta.extend((0..500).map(|i| labelled(format!("s{i:04}"), &mut rng)));
    beta.extend((0..500).map(|_| labelled(ObjectId::new(), &mut rng)));
    insert_all(&client, &db, "beta", beta).await;
    insert_all(&client, &db, "gamma", (0..1500).map(|_| labelled(ObjectId::new(), &mut rng)).collect()).await;

    let benv = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_SNAPSHOT_CHUNK", "20").set("CDC_CONFIRM_WINDOW", "100");
    let senv = sink_env(&queue, state.path(), "x", "label");
    let mut sink = start_sink(&senv).await;
    let mut bridge = start_bridge(&client, &benv).await;
    for collection in ["beta", "gamma"] {
        wait_snapshot_in(&client, &benv, collection, 100).await;
        if collection == "beta" {
            // Its progress, readable while it runs.
            let (_, m) = bridge_get(&benv, "/metrics").await.expect("the bridge serves /metrics");
            assert_eq!(sample(&m, "cdc_snapshot_running "), Some(1.0), "{m}");
            assert!(sample(&m, "cdc_snapshot_rows{collection=\"beta\"}").is_some_and(|r| r >= 1.0), "{m}");
            assert_eq!(sample(&m, "cdc_snapshot_documents_estimated{collection=\"beta\"}"), Some(1500.0), "{m}");
        }
        bridge.kill9();
        bridge = Proc::start(&["bridge"], &benv);
    }
    // SIGTERM during the snapshot: drain, checkpoint the progress, exit 0; the next start
    // continues from there.
    wait_snapshot_in(&client, &benv, "gamma", 600).await;
    assert!(bridge.terminate(LIMIT).await.success(), "SIGTERM during a snapshot exits 0:\n{}", bridge.output());
    let kept = snapshot_progress(&client, &benv).await.expect("the snapshot's progress is checkpointed");
    let current = kept.get_document("current").unwrap();
    assert_eq!(current.get_str("collection").unwrap(), "gamma");
    assert!(current.get_i64("rows").unwrap() >= 600, "{kept}");
    let mut bridge = Proc::start(&["bridge"], &benv);
    wait_snapshot_done(&client, &benv, &mut bridge).await;
    let s = wait_stats(&senv, "every document applied", LIMIT, |s| count(s, "records") >= 5000).await;

    let diffs = sink_differs_from_mongo(&senv, &client, &db, &["alpha", "beta", "gamma"]).await;
    assert!(diffs.is_empty(), "the sink differs from MongoDB: {diffs:#?}");
    assert_eq!(count(&s, "events_applied"), 5000, "each document applied once: {s}");
    assert_eq!(trained(&s), 5000, "each labelled document trained once: {s}");
    assert_eq!(count(&s, "snapshot_controls"), 6, "a start and an end per collection: {s}");
    // After each kill the snapshot went on from its last checkpoint: what came twice is a
    // confirm window or two, far from the 2,000 rows of `alpha` read before the first kill.
    let repeated = count(&s, "duplicates_skipped") + count(&s, "unchanged_skipped");
    assert!(repeated < 600, "{repeated} rows came twice: the snapshot started over? {s}");
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert!(bridge.terminate(LIMIT).await.success(), "{}", bridge.output());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn writes_during_the_snapshot_keep_per_key_order_and_the_sink_ends_equal() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("snapw");
    let queue = unique("q_snapw");
    let mut rng = Rng::new(21);
    insert_all(&client, &db, "orders", (0..3000i64).map(|i| labelled(i, &mut rng)).collect()).await;

    let benv = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_SNAPSHOT_CHUNK", "20");
    let stop = Arc::new(AtomicU64::new(0));
    let mut bridge = start_bridge(&client, &benv).await;
    let writer = churn(client.clone(), db.clone(), "orders", 3000, 20_000, stop.clone());
    wait_snapshot_done(&client, &benv, &mut bridge).await;
    stop.store(1, Ordering::Relaxed);
    let written = writer.await.unwrap();
    // Written last, after the snapshot: once it is on the queue, everything is.
    client.database(&db).collection::<Document>("orders").insert_one(doc! {"_id": "zz_marker"}).await.unwrap();
    let received =
        consume_until("/", &queue, LIMIT, |m| m.last().is_some_and(|m| m.json()["key"] == "zz_marker")).await;
    let got: Vec<Value> = received.iter().map(Received::json).collect();

    // The writes ran while the snapshot did: changes sit between its start and its end.
    let end = got.iter().position(|m| m["snapshot"]["phase"] == "end").expect("the snapshot's end");
    let streamed_inside = got[..end].iter().filter(|m| m["source"]["snapshot"] == "false").count();
    assert!(streamed_inside > 20, "only {streamed_inside} changes interleaved with the snapshot ({written} written)");
    if let Some(broken) = per_key_order_broken(&got) {
        panic!("a key went back in cluster time on the queue: {broken}");
    }
    let rows = got.iter().filter(|m| m["op"] == "r").count();
    assert!(rows > 1000 && rows < 3000, "{rows} rows: some keys came through their changes instead");

    // A consumer that applies the queue in order ends equal to MongoDB: our sink, fed the same
    // messages in the same order.
    let replay = unique("q_snapw_replay");
    let state = tempfile::tempdir().unwrap();
    let senv = sink_env(&replay, state.path(), "x", "label");
    let mut sink = start_sink(&senv).await;
    let bodies: Vec<Vec<u8>> = received.into_iter().map(|m| m.body).collect();
    publish_raw("/", &replay, &bodies).await;
    let n = bodies.len() as u64;
    wait_stats(&senv, "the replay applied", LIMIT, |s| {
        count(s, "events_applied") + count(s, "stale_skipped") + count(s, "snapshot_controls") >= n
    })
    .await;
    let diffs = sink_differs_from_mongo(&senv, &client, &db, &["orders"]).await;
    assert!(diffs.is_empty(), "the sink differs from MongoDB: {diffs:#?}");
    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
    delete_topology("/", &replay).await;
}

#[tokio::test]
async fn a_snapshot_longer_than_the_oplog_loses_nothing() {
    let mongo = Secantus::in_memory_with(&["--oplog-max-entries", "200"]).await;
    let client = mongo.client().await;
    let db = unique("snapo");
    let queue = unique("q_snapo");
    let state = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(31);
    insert_all(&client, &db, "orders", (0..4000i64).map(|i| labelled(i, &mut rng)).collect()).await;

    let benv = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_SNAPSHOT_CHUNK", "20");
    let senv = sink_env(&queue, state.path(), "x", "label");
    let mut sink = start_sink(&senv).await;
    let stop = Arc::new(AtomicU64::new(0));
    let mut bridge = start_bridge(&client, &benv).await;
    let writer = churn(client.clone(), db.clone(), "orders", 4000, 20_000, stop.clone());
    wait_snapshot_done(&client, &benv, &mut bridge).await;
    stop.store(1, Ordering::Relaxed);
    let written = writer.await.unwrap();
    assert!(written > 200, "only {written} changes were written while the snapshot ran; the oplog holds 200");

    client.database(&db).collection::<Document>("orders").insert_one(doc! {"_id": "zz_marker"}).await.unwrap();
    wait_for("the marker in the sink", LIMIT, || async {
        sink_get(&senv, "/records/orders/zz_marker").await.filter(|r| !r["doc"].is_null())
    })
    .await;
    let diffs = sink_differs_from_mongo(&senv, &client, &db, &["orders"]).await;
    assert!(diffs.is_empty(), "the sink differs from MongoDB after {written} writes: {diffs:#?}");
    bridge.assert_running();
    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn when_needed_snapshots_again_after_the_resume_point_is_lost_and_the_sink_reconciles() {
    let mongo = Secantus::in_memory_with(&["--oplog-max-entries", "50"]).await;
    let client = mongo.client().await;
    let db = unique("snapr");
    let queue = unique("q_snapr");
    let state = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(41);
    insert_all(&client, &db, "items", (0..500i64).map(|i| labelled(i, &mut rng)).collect()).await;

    let benv = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_SNAPSHOT_MODE", "when_needed");
    let senv = sink_env(&queue, state.path(), "x", "label");
    let mut sink = start_sink(&senv).await;
    let mut bridge = start_bridge(&client, &benv).await;
    wait_snapshot_done(&client, &benv, &mut bridge).await;
    wait_stats(&senv, "the first snapshot applied", LIMIT, |s| count(s, "records") == 500).await;
    assert!(bridge.terminate(LIMIT).await.success(), "{}", bridge.output());

    // While the bridge is down: more changes than the oplog keeps.
    let items = client.database(&db).collection::<Document>("items");
    for i in 0..100i64 {
        items.delete_one(doc! {"_id": i}).await.unwrap();
        items.update_one(doc! {"_id": 100 + i}, doc! {"$set": {"x": 5.0, "label": true}}).await.unwrap();
        items.insert_one(labelled(1000 + i, &mut rng)).await.unwrap();
    }
    client.database("admin").run_command(doc! {"secantusAdmin.pruneOplog": 1}).await.unwrap();

    let mut bridge = Proc::start(&["bridge"], &benv);
    wait_for("the re-snapshot to begin", LIMIT, || async {
        bridge.output().contains("snapshotting again").then_some(())
    })
    .await;
    wait_snapshot_done(&client, &benv, &mut bridge).await;
    let s = wait_stats(&senv, "the deletes reconciled", LIMIT, |s| count(s, "reconciled_deletes") >= 100).await;
    assert_eq!(count(&s, "reconciled_deletes"), 100, "exactly the documents deleted while the bridge was lost: {s}");
    let diffs = sink_differs_from_mongo(&senv, &client, &db, &["items"]).await;
    assert!(diffs.is_empty(), "the sink differs from MongoDB: {diffs:#?}");
    // Unchanged documents came again as rows and taught the model nothing new.
    assert!(count(&s, "unchanged_skipped") >= 300, "{s}");
    assert_eq!(trained(&s), 500 + 200, "the first snapshot, the 100 updated and the 100 new documents: {s}");
    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn no_data_starts_from_now_and_initial_only_snapshots_then_exits() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("snapm");
    let mut rng = Rng::new(51);
    insert_all(&client, &db, "a", (0..30i64).map(|i| labelled(i, &mut rng)).collect()).await;
    insert_all(&client, &db, "b", (0..20i64).map(|i| labelled(i, &mut rng)).collect()).await;

    // no_data: nothing of what exists, only what happens next.
    let queue = unique("q_snapm_nodata");
    let env = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_SNAPSHOT_MODE", "no_data");
    let mut bridge = start_bridge(&client, &env).await;
    client.database(&db).collection::<Document>("a").insert_one(doc! {"_id": 99, "x": 1.0}).await.unwrap();
    let got = consume_until("/", &queue, LIMIT, |m| !m.is_empty()).await;
    assert_eq!(got[0].json()["key"], "99");
    assert!(bridge.terminate(LIMIT).await.success());
    assert_eq!(queue_len("/", &queue).await, Some(0), "no rows from a no_data start");
    delete_topology("/", &queue).await;

    // initial_only: the rows and control messages, then exit 0 by itself.
    let queue = unique("q_snapm_only");
    let env = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_SNAPSHOT_MODE", "initial_only");
    let mut bridge = Proc::start(&["bridge"], &env);
    assert!(bridge.wait(LIMIT).await.success(), "initial_only exits 0:\n{}", bridge.output());
    let got = consume_until("/", &queue, LIMIT, |m| m.len() >= 55).await;
    let got: Vec<Value> = got.iter().map(Received::json).collect();
    let rows: Vec<&Value> = got.iter().filter(|m| m["op"] == "r").collect();
    assert_eq!(rows.len(), 51);
    assert!(rows.iter().all(|r| r["before"].is_null() && r["after"]["_id"] == r["after"]["_id"]));
    assert_eq!(rows.iter().filter(|r| r["source"]["snapshot"] == "last").count(), 1);
    assert_eq!(rows.last().unwrap()["source"]["snapshot"], "last", "the final row is marked");
    let phases: Vec<(String, String)> = got
        .iter()
        .filter(|m| m["op"] == "snapshot")
        .map(|m| (m["source"]["collection"].as_str().unwrap().into(), m["snapshot"]["phase"].as_str().unwrap().into()))
        .collect();
    let want = [("a", "start"), ("a", "end"), ("b", "start"), ("b", "end")];
    assert_eq!(phases, want.map(|(c, p)| (c.to_string(), p.to_string())));
    let cp = checkpoint(&client, &env).await.unwrap();
    assert!(!cp.contains_key("snapshot"), "the checkpoint streams after the snapshot: {cp}");
    // Started again, there is nothing left to do.
    let mut again = Proc::start(&["bridge"], &env);
    assert!(again.wait(LIMIT).await.success(), "{}", again.output());
    assert_eq!(queue_len("/", &queue).await, Some(0));
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn documents_that_existed_before_the_first_start_are_trained_exactly_once() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("snapt");
    let queue = unique("q_snapt");
    let state = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(61);
    insert_all(&client, &db, "points", (0..3000i64).map(|i| labelled(i, &mut rng)).collect()).await;

    let benv = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_SNAPSHOT_CHUNK", "20").set("CDC_CONFIRM_WINDOW", "100");
    let senv = sink_env(&queue, state.path(), "x", "label");
    let mut sink = start_sink(&senv).await;
    let mut bridge = start_bridge(&client, &benv).await;
    wait_snapshot_in(&client, &benv, "points", 1000).await;
    bridge.kill9();
    let mut bridge = Proc::start(&["bridge"], &benv);
    wait_snapshot_done(&client, &benv, &mut bridge).await;
    // Then the stream: new documents only.
    insert_all(&client, &db, "points", (3000..3010i64).map(|i| labelled(i, &mut rng)).collect()).await;
    let s = wait_stats(&senv, "the new documents", LIMIT, |s| count(s, "records") >= 3010).await;
    assert_eq!(trained(&s), 3010, "{s}");
    assert_eq!(count(&s, "events_applied"), 3010, "{s}");
    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}
