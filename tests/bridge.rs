//! The bridge against real SecantusDB and RabbitMQ: the message contract, AMQP properties,
//! the BSON -> JSON table, and checkpoints on a quiet database.

mod common;

use std::time::Duration;

use common::*;
use lapin::types::AMQPValue;
use mongodb::bson::{Binary, Bson, DateTime, Document, Regex, doc, oid::ObjectId, spec::BinarySubtype};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn insert_update_replace_delete_follow_the_contract() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db_name = unique("crud");
    let queue = unique("q_crud");
    let env = Env::bridge(&mongo.uri(), &db_name, &queue);
    let db = client.database(&db_name);
    // One collection records pre-images, the other does not.
    db.run_command(doc! {"create": "with_pre", "changeStreamPreAndPostImages": {"enabled": true}}).await.unwrap();
    let mut bridge = start_bridge(&client, &env).await;

    let posts = db.collection::<Document>("posts");
    let oid = ObjectId::new();
    posts.insert_one(doc! {"_id": oid, "title": "a", "n": 1, "gone": true, "author": oid}).await.unwrap();
    posts.update_one(doc! {"_id": oid}, doc! {"$set": {"n": 2}, "$unset": {"gone": ""}}).await.unwrap();
    posts.replace_one(doc! {"_id": oid}, doc! {"title": "b"}).await.unwrap();
    posts.delete_one(doc! {"_id": oid}).await.unwrap();
    let pre = db.collection::<Document>("with_pre");
    pre.insert_one(doc! {"_id": "k1", "v": 1}).await.unwrap();
    pre.update_one(doc! {"_id": "k1"}, doc! {"$set": {"v": 2}}).await.unwrap();
    pre.delete_one(doc! {"_id": "k1"}).await.unwrap();

    let got = consume_until("/", &queue, LIMIT, |m| m.len() >= 9).await;
    bridge.assert_running();
    // The initial snapshot of the one (empty) collection that existed: its start and end,
    // interleaved with the stream wherever they fell.
    let (controls, got): (Vec<Received>, Vec<Received>) = got.into_iter().partition(|m| m.json()["op"] == "snapshot");
    assert_eq!(controls[0].props.kind().as_ref().map(|s| s.as_str()), Some("snapshot"));
    let controls: Vec<_> = controls.iter().map(Received::json).collect();
    assert_eq!(controls[0]["op"], "snapshot");
    assert_eq!(controls[0]["snapshot"]["phase"], "start");
    assert_eq!(controls[1]["snapshot"]["phase"], "end");
    assert_eq!(controls[1]["snapshot"]["rows"], 0);
    assert_eq!(controls[1]["source"]["collection"], "with_pre");
    assert_eq!(controls[0]["snapshot"]["id"], controls[1]["snapshot"]["id"]);
    let evs: Vec<_> = got.iter().map(Received::event).collect();
    let hex = oid.to_hex();

    // Insert.
    let e = &got[0].json();
    assert_eq!(e["op"], "c");
    assert_eq!(e["key"], hex.as_str());
    assert_eq!(e["after"], json!({"_id": hex, "title": "a", "n": 1, "gone": true, "author": hex}));
    assert_eq!(e["before"], json!(null));
    assert_eq!(e["updated_fields"], json!(null));
    assert_eq!(e["removed_fields"], json!(null));
    assert_eq!(e["source"]["db"], db_name.as_str());
    assert_eq!(e["source"]["collection"], "posts");
    assert_eq!(e["source"]["snapshot"], "false");
    assert!(e["source"]["cluster_time"]["t"].as_u64().unwrap() > 1_600_000_000);
    assert!(e["source"]["cluster_time"]["i"].is_u64());
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!((now_ms - e["ts_ms"].as_i64().unwrap()).abs() < 120_000, "ts_ms is wall time in ms");
    assert!(e["id"].as_str().unwrap().len() > 10);

    // Update: full document after (updateLookup), the delta, and no pre-image here.
    assert_eq!(evs[1].op.code(), "u");
    assert_eq!(json!(evs[1].updated_fields), json!({"n": 2}));
    assert_eq!(evs[1].removed_fields, Some(vec!["gone".to_string()]));
    // The lookup happens when the bridge reads the change, so a later replace/delete may
    // already be visible; the key and id are what must hold.
    assert_eq!(evs[1].key, hex);

    // Replace is an update without a delta.
    assert_eq!(evs[2].op.code(), "u");
    assert_eq!(evs[2].updated_fields, None);

    // Delete.
    assert_eq!(got[3].json()["op"], "d");
    assert_eq!(got[3].json()["after"], json!(null));
    assert_eq!(evs[3].key, hex);

    // Pre-images where the collection has them.
    assert_eq!(evs[4].key, "k1");
    assert_eq!(json!(evs[5].before), json!({"_id": "k1", "v": 1}));
    // `after` is looked up when the change is read: the document, or null if the delete
    // that follows already happened.
    assert!(evs[5].after.is_none() || json!(evs[5].after) == json!({"_id": "k1", "v": 2}), "{:?}", evs[5].after);
    assert_eq!(json!(evs[6].before), json!({"_id": "k1", "v": 2}));

    // Ids are unique; AMQP properties carry the contract.
    let ids: std::collections::HashSet<_> = evs.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 7);
    for (m, ev) in got.iter().zip(&evs) {
        let p = &m.props;
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some(ev.id.as_str()));
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some(ev.op.code()));
        assert_eq!(*p.timestamp(), Some((ev.ts_ms / 1000) as u64));
        let headers = p.headers().as_ref().expect("headers");
        let h = |k: &str| match headers.inner().get(k) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("header {k}: {other:?}"),
        };
        assert_eq!(h("db"), db_name);
        assert_eq!(h("collection"), ev.source.collection);
    }

    assert!(bridge.terminate(LIMIT).await.success(), "SIGTERM exits 0:\n{}", bridge.output());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn bson_types_have_exact_json_forms() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db_name = unique("types");
    let queue = unique("q_types");
    let env = Env::bridge(&mongo.uri(), &db_name, &queue);
    let mut bridge = start_bridge(&client, &env).await;

    let oid = ObjectId::parse_str("6b01dfc17594185f823048ac").unwrap();
    let inner = ObjectId::parse_str("0123456789abcdef01234567").unwrap();
    let d = doc! {
        "_id": oid,
        "oid": inner,
        "date": DateTime::from_millis(1_700_000_000_123),
        "dec": Bson::Decimal128("12345.678900".parse().unwrap()),
        "big": 9_007_199_254_740_993_i64,
        "small": 42_i32,
        "neg64": -5_i64,
        "pi": 3.25_f64,
        "bin": Binary { subtype: BinarySubtype::Generic, bytes: vec![1, 2, 3, 255] },
        "re": Regex { pattern: "^a.c$".into(), options: "i".into() },
        "nested": { "arr": [1, [2, [3, { "deep": inner }]], { "x": null }], "t": true },
        "unicode": "héllo wörld ✓ 日本 🚀",
        "a.b": "dotted",
        "$x": "dollar",
    };
    db_insert(&client, &db_name, d).await;

    let got = consume_until("/", &queue, LIMIT, |m| !m.is_empty()).await;
    bridge.assert_running();
    let after = got[0].json()["after"].clone();
    assert_eq!(
        after,
        json!({
            "_id": "6b01dfc17594185f823048ac",
            "oid": "0123456789abcdef01234567",
            "date": "2023-11-14T22:13:20.123Z",
            "dec": "12345.678900",
            "big": 9_007_199_254_740_993_i64,
            "small": 42,
            "neg64": -5,
            "pi": 3.25,
            "bin": {"$binary": {"base64": "AQID/w==", "subType": "00"}},
            "re": {"$regularExpression": {"pattern": "^a.c$", "options": "i"}},
            "nested": {"arr": [1, [2, [3, {"deep": "0123456789abcdef01234567"}]], {"x": null}], "t": true},
            "unicode": "héllo wörld ✓ 日本 🚀",
            "a.b": "dotted",
            "$x": "dollar",
        })
    );
    // int64 beyond 2^53 is exact in the text itself, not rounded through a float.
    assert!(String::from_utf8_lossy(&got[0].body).contains("\"big\":9007199254740993"));
    assert_eq!(got[0].json()["key"], "6b01dfc17594185f823048ac");

    bridge.terminate(LIMIT).await;
    delete_topology("/", &queue).await;
}

async fn db_insert(client: &mongodb::Client, db: &str, d: Document) {
    // `$`-prefixed and dotted keys need a raw insert command: the driver's insert_one refuses them.
    client.database(db).run_command(doc! {"insert": "types", "documents": [d]}).await.unwrap();
}

#[tokio::test]
async fn quiet_database_still_moves_its_checkpoint() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db_name = unique("quiet");
    let queue = unique("q_quiet");
    let env = Env::bridge(&mongo.uri(), &db_name, &queue);
    let mut bridge = start_bridge(&client, &env).await;
    let first = checkpoint(&client, &env).await.unwrap().get("resume_token").cloned().unwrap();

    // Only writes to another database.
    let other = client.database(&unique("elsewhere")).collection::<Document>("x");
    for i in 0..20 {
        other.insert_one(doc! {"i": i}).await.unwrap();
    }
    let moved = wait_for("the checkpoint to move", LIMIT, || {
        let (client, env, first) = (client.clone(), env.clone(), first.clone());
        async move {
            let now = checkpoint(&client, &env).await?.get("resume_token").cloned()?;
            (now != first).then_some(now)
        }
    })
    .await;
    assert_ne!(moved, first);
    bridge.assert_running();
    assert_eq!(queue_len("/", &queue).await, Some(0), "nothing was published");
    bridge.terminate(LIMIT).await;
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn insert_test_writes_every_kind_and_peek_leaves_them_queued() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db_name = unique("cli");
    let queue = unique("q_cli");
    let env = Env::bridge(&mongo.uri(), &db_name, &queue);
    let mut bridge = start_bridge(&client, &env).await;

    let mut writer = Proc::start(&["insert-test", "--count", "20", "--updates", "3", "--deletes", "2"], &env);
    assert!(writer.wait(LIMIT).await.success(), "{}", writer.output());
    assert!(writer.output().contains("inserted 20, updated 3, deleted 2"), "{}", writer.output());
    wait_for("25 messages", LIMIT, || {
        let queue = queue.clone();
        async move { queue_len("/", &queue).await.filter(|&n| n == 25) }
    })
    .await;

    let mut peek = Proc::start(&["peek", "--count", "5"], &env);
    assert!(peek.wait(LIMIT).await.success(), "{}", peek.output());
    let shown: Vec<mongo_cdc::event::ChangeEvent> = peek
        .output()
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a ChangeEvent per line"))
        .collect();
    assert_eq!(shown.len(), 5);
    wait_for("peeked messages back in the queue", LIMIT, || {
        let queue = queue.clone();
        async move { queue_len("/", &queue).await.filter(|&n| n == 25) }
    })
    .await;

    let got = consume_until("/", &queue, LIMIT, |m| m.len() >= 25).await;
    let ops: Vec<&str> = got.iter().map(|m| m.event().op.code()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "c").count(), 20);
    assert_eq!(ops.iter().filter(|o| **o == "u").count(), 3);
    assert_eq!(ops.iter().filter(|o| **o == "d").count(), 2);
    assert_eq!(got[0].event().source.collection, "posts");
    assert_eq!(shown[0], got[0].event(), "peek shows the head of the queue");
    bridge.terminate(LIMIT).await;
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn mongo_collections_keeps_only_the_listed_collections() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db_name = unique("filter");
    let queue = unique("q_filter");
    let env = Env::bridge(&mongo.uri(), &db_name, &queue).set("MONGO_COLLECTIONS", "keep, also");
    let mut bridge = start_bridge(&client, &env).await;
    let db = client.database(&db_name);
    for (coll, n) in [("keep", 3), ("skip", 5), ("also", 2), ("skip", 1)] {
        for i in 0..n {
            db.collection::<Document>(coll).insert_one(doc! {"i": i}).await.unwrap();
        }
    }
    // A marker written last: once it is in, everything before it has been read.
    db.collection::<Document>("keep").insert_one(doc! {"last": true}).await.unwrap();
    let got =
        consume_until("/", &queue, LIMIT, |m| m.last().is_some_and(|m| m.json()["after"]["last"] == json!(true))).await;
    let colls: Vec<String> = got.iter().map(|m| m.event().source.collection).collect();
    assert_eq!(colls.iter().filter(|c| *c == "keep").count(), 4);
    assert_eq!(colls.iter().filter(|c| *c == "also").count(), 2);
    assert_eq!(colls.len(), 6, "{colls:?}");
    bridge.terminate(LIMIT).await;
    delete_topology("/", &queue).await;
}
