//! The sink's mirrors against the real services: records materialised into PostgreSQL
//! (127.0.0.1:5432, database `test`) equal MongoDB row for row through inserts, updates,
//! deletes, a `kill -9` of the sink and PostgreSQL going away; `/stats` and the alerts in
//! Redis (127.0.0.1:6379); a record PostgreSQL refuses is dead-lettered and the sink goes on.
//! Every test uses its own schema, queue and keys, and removes them.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(90);
const PG: &str = "postgresql://postgres@127.0.0.1:5432/test";
const REDIS: &str = "redis://127.0.0.1:6379/";

async fn pg() -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(PG, tokio_postgres::NoTls).await.expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

/// Drops the schema when the test ends, passed or failed.
struct Schema(String);

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let c = pg().await;
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).await;
            });
        })
        .join();
    }
}

/// The table's rows, key -> (doc, version); `None` while it does not exist.
async fn table(schema: &str, coll: &str) -> Option<BTreeMap<String, (Value, i64)>> {
    let c = pg().await;
    let rows = c.query(&format!("SELECT key, doc::text, version FROM \"{schema}\".\"{coll}\""), &[]).await.ok()?;
    Some(
        rows.iter()
            .map(|r| {
                let doc: String = r.get(1);
                (r.get::<_, String>(0), (serde_json::from_str(&doc).unwrap(), r.get::<_, i64>(2)))
            })
            .collect(),
    )
}

/// MongoDB's documents as the sink keys and shapes them.
async fn mongo_rows(client: &mongodb::Client, db: &str, coll: &str) -> BTreeMap<String, Value> {
    use futures::StreamExt;
    let mut out = BTreeMap::new();
    let mut docs = client.database(db).collection::<Document>(coll).find(doc! {}).await.unwrap();
    while let Some(d) = docs.next().await {
        let d = d.unwrap();
        let key = mongo_cdc::bson_json::key_string(d.get("_id").unwrap());
        out.insert(key, Value::Object(mongo_cdc::bson_json::doc_to_json(&d)));
    }
    out
}

/// What differs between the table and MongoDB (empty when equal).
async fn differences(schema: &str, client: &mongodb::Client, db: &str, coll: &str) -> Option<Vec<String>> {
    let got = table(schema, coll).await?;
    let want = mongo_rows(client, db, coll).await;
    let mut diffs = Vec::new();
    for (k, doc) in &want {
        match got.get(k) {
            Some((d, _)) if d == doc => {}
            Some((d, _)) => diffs.push(format!("{k}: table holds {d}, MongoDB {doc}")),
            None => diffs.push(format!("{k}: missing from the table")),
        }
    }
    diffs.extend(got.keys().filter(|k| !want.contains_key(*k)).map(|k| format!("{k}: in the table, not in MongoDB")));
    Some(diffs)
}

/// A TCP forwarder to PostgreSQL that can be cut (every connection dropped, new ones refused)
/// and restored: PostgreSQL going away, for this test's sink only.
struct Cable {
    port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Cable {
    async fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let born = gen2.load(Ordering::SeqCst);
                let gen3 = gen2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await else { return };
                    let cut = async {
                        while gen3.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Self { port, up, generation }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn count(s: &Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_default()
}

#[tokio::test]
async fn postgres_tables_equal_mongo_through_deletes_a_kill9_and_an_outage() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("pgm");
    let queue = unique("q_pgm");
    let schema = Schema(unique("pgm"));
    let state = tempfile::tempdir().unwrap();
    let cable = Cable::new().await;
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "x", "y")
        .set("SINK_POSTGRES_URL", &format!("postgresql://postgres:s3cret@127.0.0.1:{}/test", cable.port))
        .set("SINK_POSTGRES_SCHEMA", &schema.0)
        .set("SINK_CHECKPOINT_EVERY", "50");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;
    let coll = client.database(&db).collection::<Document>("points");
    let other = client.database(&db).collection::<Document>("other");

    let docs: Vec<Document> =
        (0..600i64).map(|i| doc! {"_id": i, "x": i % 17, "y": i % 3 == 0, "tag": format!("t{i}")}).collect();
    for chunk in docs.chunks(100) {
        coll.insert_many(chunk.to_vec()).await.unwrap();
    }
    other.insert_one(doc! {"_id": "a\"b", "x": 1, "y": true, "nested": {"k": [1, 2]}}).await.unwrap();
    // Killed mid-stream: the updates are still arriving.
    for i in 0..200i64 {
        coll.update_one(doc! {"_id": i}, doc! {"$set": {"x": i + 1000}}).await.unwrap();
        if i == 100 {
            wait_stats(&senv, "some updates applied", LIMIT, |s| count(s, "events_applied") > 650).await;
            sink.kill9();
        }
    }
    coll.delete_many(doc! {"_id": {"$gte": 500}}).await.unwrap();
    let mut sink = start_sink(&senv).await;
    let diffs = wait_for("the table to equal MongoDB after the kill", LIMIT, || async {
        differences(&schema.0, &client, &db, "points").await.filter(Vec::is_empty)
    })
    .await;
    assert!(diffs.is_empty());
    assert_eq!(differences(&schema.0, &client, &db, "other").await, Some(vec![]));

    // PostgreSQL goes away: the sink applies what it has, then waits at its next checkpoint,
    // acknowledging and writing nothing; it catches up when PostgreSQL is back.
    let before = count(&sink_get(&senv, "/stats").await.unwrap(), "events_applied");
    cable.cut();
    for i in 0..50i64 {
        coll.update_one(doc! {"_id": i}, doc! {"$set": {"x": -i}}).await.unwrap();
    }
    coll.delete_many(doc! {"_id": {"$gte": 450}}).await.unwrap();
    wait_stats(&senv, "some of the outage's changes applied", LIMIT, |s| count(s, "events_applied") > before).await;
    let stale = differences(&schema.0, &client, &db, "points").await.unwrap();
    assert!(!stale.is_empty(), "nothing is written while PostgreSQL is away");
    cable.restore();
    wait_for("the table to catch up after the outage", LIMIT, || async {
        differences(&schema.0, &client, &db, "points").await.filter(Vec::is_empty)
    })
    .await;

    // The versions are the sink's: never behind, nothing doubled (the key is the primary key).
    let rows = table(&schema.0, "points").await.unwrap();
    for key in ["0", "7", "120", "300"] {
        let rec = sink_get(&senv, &format!("/records/points/{key}")).await.unwrap();
        assert_eq!(rows[key].1, rec["version"].as_i64().unwrap(), "version of {key}: {rec}");
    }
    assert_eq!(rows["0"].1, 3, "insert, update, update");
    let tomb = pg()
        .await
        .query_one(&format!("SELECT count(*) FROM \"{}\"._tombstones WHERE tbl = 'points'", schema.0), &[])
        .await
        .unwrap();
    assert_eq!(tomb.get::<_, i64>(0), 150, "one tombstone per deleted key");
    let log = sink.output();
    assert!(!log.contains("s3cret"), "the PostgreSQL password is not logged");

    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn stats_and_alerts_are_mirrored_into_redis() {
    const N: u32 = 4000;
    let queue = unique("q_redis");
    let state = tempfile::tempdir().unwrap();
    let senv = sink_env(&queue, state.path(), "x", "y").set("SINK_REDIS_URL", REDIS);
    let mut sink = start_sink(&senv).await;
    let (stats_key, alerts_key) = (format!("cdc:stats:{queue}"), format!("cdc:alerts:{queue}"));
    let redis = redis::Client::open(REDIS).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.expect("Redis on 127.0.0.1:6379");

    // The label's rule flips half way: the model drifts.
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|n| {
            let x = f64::from((n * 7919) % 1000) / 1000.0;
            let y = if n < N / 2 { x > 0.5 } else { x <= 0.5 };
            json!({"id": format!("e{n}"), "op": "c", "key": format!("k{n}"), "after": {"x": x, "y": y},
                   "source": {"db": "d", "collection": "c", "cluster_time": {"t": n + 1, "i": 1}}, "ts_ms": 1_000 + n})
            .to_string()
            .into_bytes()
        })
        .collect();
    publish_raw("/", &queue, &bodies).await;
    let s = wait_stats(&senv, "every event applied", LIMIT, |s| count(s, "events_applied") == u64::from(N)).await;
    assert!(count(&s, "drift_alerts") >= 1, "{s}");

    let hash: BTreeMap<String, String> = wait_for("the stats hash to show every event", LIMIT, || {
        let mut conn = conn.clone();
        let key = stats_key.clone();
        async move {
            let h: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.ok()?;
            (h.get("events_applied").map(String::as_str) == Some(&N.to_string())).then_some(h)
        }
    })
    .await;
    assert_eq!(hash["records"], N.to_string());
    let model: Value = serde_json::from_str(&hash["model"]).unwrap();
    assert_eq!(model["trained"], json!(N), "objects are stored as JSON: {model}");

    let alerts = sink_get(&senv, "/alerts").await.unwrap();
    let want: Vec<&str> = alerts.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    let got: Vec<String> = redis::cmd("LRANGE").arg(&alerts_key).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
    let got_ids: Vec<String> =
        got.iter().map(|a| serde_json::from_str::<Value>(a).unwrap()["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(got_ids, want, "every alert, oldest first");
    assert_eq!(serde_json::from_str::<Value>(&got[0]).unwrap()["kind"], "drift");

    assert!(sink.terminate(LIMIT).await.success());
    let _: () = redis::cmd("DEL").arg(&stats_key).arg(&alerts_key).query_async(&mut conn).await.unwrap();
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn postgres_writes_never_go_backwards() {
    use mongo_cdc::config::SecretUrl;
    use mongo_cdc::sink::core::Row;
    use mongo_cdc::sink::pg_mirror::PgMirror;
    let schema = Schema(unique("pgv"));
    let mut m = PgMirror::new(&SecretUrl(PG.into()), &schema.0).unwrap();
    let row = |key: &str, doc: Option<&str>, version| Row {
        collection: "c".into(),
        key: key.into(),
        doc: doc.map(String::from),
        version,
    };
    let none = Vec::new();
    assert_eq!(m.write(&[row("a", Some(r#"{"n": 2}"#), 2), row("b", Some(r#"{"n": 1}"#), 1)]).await.unwrap(), none);
    // A redelivery of older versions changes nothing.
    assert_eq!(m.write(&[row("a", Some(r#"{"n": 1}"#), 1)]).await.unwrap(), none);
    assert_eq!(m.write(&[row("b", None, 3)]).await.unwrap(), none);
    assert_eq!(m.write(&[row("b", Some(r#"{"n": 2}"#), 2)]).await.unwrap(), none);
    let t = table(&schema.0, "c").await.unwrap();
    assert_eq!(t.len(), 1, "b stays deleted: {t:?}");
    assert_eq!(t["a"], (json!({"n": 2}), 2));
    // A newer version brings a deleted key back.
    assert_eq!(m.write(&[row("b", Some(r#"{"n": 4}"#), 4)]).await.unwrap(), none);
    assert_eq!(table(&schema.0, "c").await.unwrap()["b"], (json!({"n": 4}), 4));

    // PostgreSQL can store no NUL character, in `jsonb` or in `text`: those records are
    // refused, each with PostgreSQL's reason, and the others of the batch are written.
    let batch = [
        row("a", Some(r#"{"n": 5}"#), 5),
        row("nul-doc", Some(r#"{"s": "x\u0000y"}"#), 1),
        row("nul\0key", Some(r#"{"n": 1}"#), 1),
        row("b", None, 5),
        row("d", Some(r#"{"n": 1}"#), 1),
    ];
    let refused = m.write(&batch).await.unwrap();
    let keys: Vec<&str> = refused.iter().map(|r| r.row.key.as_str()).collect();
    assert_eq!(keys, ["nul-doc", "nul\0key"], "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|r| r.reason.starts_with("PostgreSQL refused the record: ") && r.reason.contains("SQLSTATE 22"))
    );
    assert!(refused[0].reason.contains("Unicode"), "{}", refused[0].reason);
    let body: Value = serde_json::from_slice(&refused[0].body()).unwrap();
    assert_eq!(body, json!({"collection": "c", "key": "nul-doc", "version": 1, "doc": {"s": "x\u{0}y"}}));
    let t = table(&schema.0, "c").await.unwrap();
    assert_eq!(t.keys().collect::<Vec<_>>(), ["a", "d"], "{t:?}");
    assert_eq!(t["a"], (json!({"n": 5}), 5));
}

#[tokio::test]
async fn a_record_postgres_refuses_is_dead_lettered_and_the_sink_goes_on() {
    use lapin::types::AMQPValue;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("pgr");
    let queue = unique("q_pgr");
    let schema = Schema(unique("pgr"));
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "x", "y")
        .set("SINK_POSTGRES_URL", PG)
        .set("SINK_POSTGRES_SCHEMA", &schema.0)
        .set("SINK_CHECKPOINT_EVERY", "1");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;
    let coll = client.database(&db).collection::<Document>("points");

    // MongoDB stores a NUL character in a string; PostgreSQL cannot, in `jsonb` or `text`.
    coll.insert_one(doc! {"_id": 1, "x": 1, "y": true}).await.unwrap();
    coll.insert_one(doc! {"_id": 2, "x": 2, "y": false, "s": "a\0b"}).await.unwrap();
    coll.insert_one(doc! {"_id": 3, "x": 3, "y": true}).await.unwrap();
    let dlq = consume_until("/", &format!("{queue}.dlq"), LIMIT, |got| !got.is_empty()).await;
    let reason = dlq[0].props.headers().as_ref().and_then(|h| h.inner().get("x-reason").cloned());
    let Some(AMQPValue::LongString(reason)) = reason else { panic!("no x-reason: {:?}", dlq[0].props) };
    let reason = String::from_utf8_lossy(reason.as_bytes()).into_owned();
    assert!(reason.starts_with("PostgreSQL refused the record: "), "{reason}");
    assert_eq!(
        dlq[0].json(),
        json!({"collection": "points", "key": "2", "version": 1, "doc": {"_id": 2, "x": 2, "y": false, "s": "a\u{0}b"}})
    );

    // The sink goes on: the other records, and the next ones, reach PostgreSQL.
    coll.insert_one(doc! {"_id": 4, "x": 4, "y": false}).await.unwrap();
    let rows = wait_for("records 1, 3 and 4 in PostgreSQL", LIMIT, || async {
        table(&schema.0, "points").await.filter(|t| t.len() == 3)
    })
    .await;
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["1", "3", "4"]);
    let stats = sink_get(&senv, "/stats").await.unwrap();
    assert_eq!(count(&stats, "events_applied"), 4, "the sink holds every record: {stats}");
    assert!(sink.output().contains("dead-lettering a record PostgreSQL refuses"));

    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}
