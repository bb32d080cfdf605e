//! Debezium both ways, against the real RabbitMQ and SecantusDB: the sink reads Debezium's
//! documented example events (PostgreSQL, MySQL, MongoDB; bare and schema-wrapped) as Debezium
//! Server's RabbitMQ sink publishes them, mixed with our own messages under `SINK_INPUT=auto`;
//! and the bridge's `CDC_FORMAT=debezium` output reads as a Debezium consumer reads it, and
//! by our sink.

mod common;

use std::time::Duration;

use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Connection, ConnectionProperties};
use mongo_cdc::sink::core::{Outcome, SinkCore};
use mongo_cdc::sink::decode::{Decoder, Delivery, Input, KeyColumns, KeyFrom};
use mongo_cdc::sink::spec::ModelSpec;
use mongodb::bson::{Document, doc, oid::ObjectId};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(90);

fn fixture(connector: &str) -> Value {
    let path = format!("{}/tests/data/debezium/{connector}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The value with the JSON converter's schemas on: `{"schema": .., "payload": ..}`.
fn wrapped(payload: &Value) -> Value {
    json!({"schema": {"type": "struct", "optional": false, "name": "server.inventory.customers.Envelope", "fields": []},
           "payload": payload})
}

fn core(input: Input) -> SinkCore {
    let features = vec![mongo_cdc::sink::features::FeatureSpec::parse("id").unwrap()];
    let spec = ModelSpec::single(
        mongo_cdc::ml::Task::Classification,
        mongo_cdc::ml::ModelKind::Linear,
        features,
        "label".into(),
        vec![],
    );
    let mut c = SinkCore::new(vec![spec], 1000).unwrap();
    c.set_decoder(Decoder { input, keys: KeyColumns::default(), key_from: KeyFrom::RoutingKey });
    c
}

fn apply(c: &mut SinkCore, v: &Value, routing_key: &str) -> Outcome {
    let body = v.to_string();
    c.apply_delivery(&Delivery { body: body.as_bytes(), routing_key, key_header: None })
}

fn doc_of(c: &SinkCore, table: &str, key: &str) -> Option<Value> {
    let r = c.record(table, key)?;
    r.doc.as_ref().map(|d| serde_json::from_str(d.get()).unwrap())
}

#[test]
fn the_documented_examples_apply_in_both_json_shapes() {
    for shape in ["bare", "wrapped"] {
        let shaped = |v: &Value| if shape == "bare" { v.clone() } else { wrapped(v) };
        let mut c = core(Input::Debezium);

        // PostgreSQL: create, update, a delete whose `before` holds only the key, truncate.
        let pg = fixture("postgresql");
        assert!(matches!(apply(&mut c, &shaped(&pg["create"]), ""), Outcome::Applied { .. }), "{shape}");
        assert_eq!(doc_of(&c, "customers", "1").unwrap()["first_name"], "Anne");
        assert!(matches!(apply(&mut c, &shaped(&pg["update"]), ""), Outcome::Applied { .. }));
        assert_eq!(doc_of(&c, "customers", "1").unwrap()["first_name"], "Anne Marie");
        assert_eq!(apply(&mut c, &shaped(&pg["update"]), ""), Outcome::Duplicate, "redelivery");
        assert!(matches!(apply(&mut c, &shaped(&pg["delete"]), ""), Outcome::Applied { .. }));
        assert_eq!(c.record("customers", "1").unwrap().version, 3);
        assert!(doc_of(&c, "customers", "1").is_none());
        // The create again: recognised.
        assert_eq!(apply(&mut c, &shaped(&pg["create"]), ""), Outcome::Duplicate);
        let mut again = pg["create"].clone();
        again["source"]["lsn"] = json!(50_000_000);
        again["after"]["id"] = json!(2);
        apply(&mut c, &shaped(&again), "");
        assert_eq!(c.live_records(Some("customers")).unwrap(), 1);
        let mut truncate = pg["truncate"].clone();
        truncate["source"]["lsn"] = json!(60_000_000);
        assert!(matches!(apply(&mut c, &shaped(&truncate), ""), Outcome::Applied { .. }));
        assert_eq!(c.live_records(Some("customers")).unwrap(), 0, "a truncate empties the table");

        // MySQL: create, update, delete.
        let my = fixture("mysql");
        let mut c = core(Input::Debezium);
        apply(&mut c, &shaped(&my["create"]), "");
        assert_eq!(doc_of(&c, "customers", "1004").unwrap()["email"], "annek@noanswer.org");
        apply(&mut c, &shaped(&my["update"]), "");
        assert_eq!(doc_of(&c, "customers", "1004").unwrap()["first_name"], "Anne Marie");
        let mut older = my["update"].clone();
        older["source"]["pos"] = json!(300);
        assert_eq!(apply(&mut c, &shaped(&older), ""), Outcome::Stale, "binlog position 300 < 484");
        apply(&mut c, &shaped(&my["delete"]), "");
        assert!(doc_of(&c, "customers", "1004").is_none());
        assert_eq!(c.record("customers", "1004").unwrap().version, 3);

        // MongoDB: Extended JSON strings; the delete's key comes from the routing key.
        let mg = fixture("mongodb");
        let mut c = core(Input::Debezium);
        apply(&mut c, &shaped(&mg["create"]), "");
        assert_eq!(
            doc_of(&c, "customers", "1004").unwrap(),
            json!({"_id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}),
            "the contract's JSON, as our bridge writes it"
        );
        let mut update = mg["update"].clone();
        update["source"]["ord"] = json!(32);
        apply(&mut c, &shaped(&update), "");
        assert_eq!(doc_of(&c, "customers", "1004").unwrap()["first_name"], "Anne Marie");
        let mut delete = mg["delete"].clone();
        delete["source"]["ord"] = json!(33);
        let key = mg["delete_key"].to_string();
        let no_key = apply(&mut c, &shaped(&delete), "");
        assert!(matches!(&no_key, Outcome::Poison(r) if r.contains("routingKey.source=key")), "{no_key:?}");
        assert!(matches!(apply(&mut c, &shaped(&delete), &key), Outcome::Applied { .. }));
        assert!(doc_of(&c, "customers", "1004").is_none());
        assert_eq!(c.record("customers", "1004").unwrap().version, 3);

        // Tombstones, heartbeats and schema changes are counted, never poison.
        assert_eq!(apply(&mut c, &json!(null), ""), Outcome::Ignored);
        assert_eq!(c.apply_bytes(b"default"), Outcome::Ignored);
        assert_eq!(apply(&mut c, &shaped(&json!({"ts_ms": 1_588_252_618_953u64})), ""), Outcome::Ignored);
        let ddl = json!({"source": {"connector": "mysql", "file": "mysql-bin.000003", "pos": 154},
                         "databaseName": "inventory", "ddl": "ALTER TABLE customers ADD COLUMN x INT", "tableChanges": []});
        assert_eq!(apply(&mut c, &shaped(&ddl), ""), Outcome::Ignored);
        let s = c.stats();
        assert_eq!(
            (s.counters.ignored.tombstones, s.counters.ignored.heartbeats, s.counters.ignored.schema_changes),
            (2, 1, 1)
        );
        assert_eq!(s.counters.dead_lettered, 1, "only the MongoDB delete without its key");
    }
}

#[tokio::test]
async fn a_stream_mixing_debezium_and_native_messages_is_read_under_auto() {
    let queue = unique("q_dbz");
    let exchange = unique("x_dbz");
    let state = tempfile::tempdir().unwrap();
    let senv = sink_env(&queue, state.path(), "id", "label")
        .set("SINK_INPUT", "auto")
        .set("SINK_DEBEZIUM_KEY_FROM", "routing_key")
        .set("RABBITMQ_EXCHANGE", &exchange)
        .set("RABBITMQ_BINDING_KEYS", "#");
    let mut sink = start_sink(&senv).await;
    let (pg, my, mg) = (fixture("postgresql"), fixture("mysql"), fixture("mongodb"));
    let native = |id: &str, key: &str, t: u32| {
        json!({"id": id, "op": "c", "key": key, "after": {"_id": key, "n": t},
               "source": {"db": "d", "collection": "native", "cluster_time": {"t": t, "i": 1}, "snapshot": "false"},
               "ts_ms": 1_000})
        .to_string()
        .into_bytes()
    };
    let mut mg_update = mg["update"].clone();
    mg_update["source"]["ord"] = json!(32);
    let mut mg_delete = mg["delete"].clone();
    mg_delete["source"]["ord"] = json!(33);
    let key = |k: Value| k.to_string();
    // One source per table: positions of different sources do not compare.
    let mut my = my;
    for e in ["create", "delete"] {
        my[e]["source"]["table"] = json!("mysql_customers");
    }
    let messages: Vec<(String, Vec<u8>)> = vec![
        ("x".into(), native("n1", "a", 1)),
        (key(json!({"id": 1})), wrapped(&pg["create"]).to_string().into_bytes()),
        (key(json!({"id": 1004})), my["create"].to_string().into_bytes()),
        (key(mg["delete_key"].clone()), wrapped(&mg["create"]).to_string().into_bytes()),
        ("x".into(), b"default".to_vec()),
        ("x".into(), native("n2", "b", 2)),
        (key(json!({"id": 1})), pg["update"].to_string().into_bytes()),
        (key(mg["delete_key"].clone()), mg_update.to_string().into_bytes()),
        ("x".into(), wrapped(&json!({"ts_ms": 1_588_252_618_953u64})).to_string().into_bytes()),
        (key(json!({"id": 1004})), wrapped(&my["delete"]).to_string().into_bytes()),
        (key(mg["delete_key"].clone()), mg_delete.to_string().into_bytes()),
        ("x".into(), b"{not json".to_vec()),
    ];
    // With their routing keys, as Debezium Server publishes.
    let routed: Vec<(&str, &[u8])> = messages.iter().map(|(rk, body)| (rk.as_str(), body.as_slice())).collect();
    publish_routed("/", &exchange, &routed).await;
    let s = wait_stats(&senv, "every message handled", LIMIT, |s| {
        s["events_applied"] == json!(9) && s["dead_lettered"] == json!(1)
    })
    .await;
    assert_eq!(s["ignored"], json!({"tombstones": 1, "heartbeats": 1, "schema_changes": 0, "other": 0}), "{s}");
    assert_eq!(s["records"], json!(3), "native a and b, PostgreSQL customer 1: {s}");
    let rec = sink_get(&senv, "/records/customers/1").await.unwrap();
    assert_eq!((rec["doc"]["first_name"].clone(), rec["version"].clone()), (json!("Anne Marie"), json!(2)), "{rec}");
    let gone = sink_get(&senv, "/records/customers/1004").await.unwrap();
    assert_eq!((gone["doc"].clone(), gone["version"].clone()), (Value::Null, json!(3)), "MongoDB 1004: {gone}");
    let gone = sink_get(&senv, "/records/mysql_customers/1004").await.unwrap();
    assert_eq!((gone["doc"].clone(), gone["version"].clone()), (Value::Null, json!(2)), "MySQL 1004: {gone}");
    assert_eq!(sink_get(&senv, "/records/native/b").await.unwrap()["doc"]["n"], json!(2));
    let dlq = consume_until("/", &format!("{queue}.dlq"), LIMIT, |got| !got.is_empty()).await;
    assert_eq!(dlq[0].body, b"{not json");

    assert!(sink.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn the_bridge_speaks_debezium_to_a_debezium_consumer_and_to_our_sink() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("dbzout");
    let queue = unique("q_dbzout");
    let benv = Env::bridge(&mongo.uri(), &db, &queue).set("CDC_FORMAT", "debezium").set("CDC_DEBEZIUM_SCHEMAS", "true");
    let mut bridge = start_bridge(&client, &benv).await;
    let coll = client.database(&db).collection::<Document>("customers");
    let oid = ObjectId::new();
    coll.insert_one(doc! {"_id": oid, "first_name": "Anne", "n": 1_i64, "label": true}).await.unwrap();
    coll.update_one(doc! {"_id": oid}, doc! {"$set": {"first_name": "Anne Marie"}}).await.unwrap();
    coll.insert_one(doc! {"_id": 7, "first_name": "Sally", "n": 2_i64, "label": false}).await.unwrap();
    coll.delete_one(doc! {"_id": 7}).await.unwrap();

    // A Debezium consumer: the value's payload, `after` decoded as Extended JSON.
    let got = consume_until("/", &queue, LIMIT, |got| got.len() >= 4).await;
    let values: Vec<Value> = got.iter().map(|m| m.json()).collect();
    for v in &values {
        assert_eq!(v["schema"]["type"], "struct", "{v}");
        assert!(v["schema"]["name"].as_str().unwrap().ends_with(".customers.Envelope"), "{v}");
    }
    let p: Vec<&Value> = values.iter().map(|v| &v["payload"]).collect();
    assert_eq!(p.iter().map(|p| p["op"].as_str().unwrap()).collect::<Vec<_>>(), ["c", "u", "c", "d"]);
    let after: Value = serde_json::from_str(p[0]["after"].as_str().unwrap()).unwrap();
    assert_eq!(after["_id"], json!({"$oid": oid.to_hex()}), "{after}");
    let as_bson = mongodb::bson::Bson::try_from(after).unwrap();
    assert_eq!(as_bson.as_document().unwrap().get_object_id("_id").unwrap(), oid);
    let src = &p[1]["source"];
    assert_eq!((&src["connector"], &src["name"], &src["db"]), (&json!("mongodb"), &json!(queue), &json!(db)), "{src}");
    assert_eq!(src["collection"], "customers");
    assert!(src["ts_ms"].as_i64().unwrap() > 0 && src["ord"].as_u64().is_some() && src["version"].is_string(), "{src}");
    assert_eq!(src["snapshot"], "false");
    let delta: Value = serde_json::from_str(p[1]["updateDescription"]["updatedFields"].as_str().unwrap()).unwrap();
    assert_eq!(delta, json!({"first_name": "Anne Marie"}));
    assert!(p[3]["after"].is_null() && p[3]["ts_ms"].as_i64().unwrap() > 0);
    let key = got[3].props.headers().as_ref().and_then(|h| match h.inner().get("key") {
        Some(lapin::types::AMQPValue::LongString(k)) => Some(k.to_string()),
        _ => None,
    });
    assert_eq!(key.as_deref(), Some("7"), "a delete's key travels in the `key` header");

    // Our sink reads the same format: published again, it holds what MongoDB holds.
    let state = tempfile::tempdir().unwrap();
    let senv = sink_env(&queue, state.path(), "n", "label").set("SINK_INPUT", "debezium");
    let mut sink = start_sink(&senv).await;
    let conn = Connection::connect(&amqp_uri("/"), ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for m in &got {
        let opts = BasicPublishOptions::default();
        ch.basic_publish("".into(), queue.as_str().into(), opts, &m.body, m.props.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
    wait_stats(&senv, "every change applied", LIMIT, |s| s["events_applied"] == json!(4)).await;
    let rec = sink_get(&senv, &format!("/records/customers/{}", oid.to_hex())).await.unwrap();
    assert_eq!(rec["doc"]["first_name"], "Anne Marie", "{rec}");
    assert_eq!(sink_differs_from_mongo(&senv, &client, &db, &["customers"]).await, Vec::<String>::new());

    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}
