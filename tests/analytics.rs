//! The sink's streaming analytics against real SecantusDB, bridge and RabbitMQ: orders are
//! inserted, updated and deleted (Spark's structured-streaming example: a running count and
//! sum of quantity per op), and `/analytics` must give the figures computed from the writes,
//! also across `kill -9` of the sink mid-stream.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use mongodb::bson::{Document, doc};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(90);

const STATUSES: [&str; 3] = ["new", "paid", "shipped"];

fn quantity(i: i64) -> i64 {
    (i * 7) % 11 + 1
}

fn order(i: i64) -> Document {
    doc! {"_id": i, "status": STATUSES[(i % 3) as usize], "quantity": quantity(i), "amount": i as f64 * 0.5}
}

/// Per op, the count and the sum of quantity over every window of the aggregate of
/// collection `orders` in `/analytics`; and its late events.
fn per_op(analytics: &Value) -> (BTreeMap<String, (u64, f64)>, u64) {
    let agg = analytics["aggregates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["collection"] == "orders")
        .unwrap_or_else(|| panic!("no orders aggregate in {analytics}"));
    let mut out: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for w in agg["windows"].as_array().unwrap() {
        for g in w["groups"].as_array().unwrap() {
            for (op, f) in g["ops"].as_object().unwrap() {
                let e = out.entry(op.clone()).or_default();
                e.0 += f["count"].as_u64().unwrap();
                e.1 += f["sum(quantity)"].as_f64().unwrap();
            }
        }
    }
    (out, agg["late"].as_u64().unwrap())
}

fn expected(figures: &[(&str, u64, i64)]) -> BTreeMap<String, (u64, f64)> {
    figures.iter().map(|(op, n, sum)| (op.to_string(), (*n, *sum as f64))).collect()
}

async fn wait_applied(senv: &Env, n: u64) {
    wait_stats(senv, &format!("{n} events applied"), LIMIT, |s| s["events_applied"] == n).await;
}

#[tokio::test]
async fn per_op_counts_and_sums_of_quantity_match_the_writes() {
    const N: i64 = 300;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("agg");
    let queue = unique("q_agg");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "quantity", "paid")
        .set("SINK_AGGREGATES", "orders:1h:by=status:sum(quantity),max(quantity); *:1m");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;
    let coll = client.database(&db).collection::<Document>("orders");

    // Each phase is applied before the next, so an update's looked-up document is the one it
    // wrote, and a delete finds the document the updates left.
    coll.insert_many((0..N).map(order)).await.unwrap();
    wait_applied(&senv, N as u64).await;
    for i in 0..100 {
        coll.update_one(doc! {"_id": i}, doc! {"$set": {"quantity": quantity(i) + 10, "status": "paid"}})
            .await
            .unwrap();
    }
    wait_applied(&senv, N as u64 + 100).await;
    for i in 50..150 {
        coll.delete_one(doc! {"_id": i}).await.unwrap();
    }
    wait_applied(&senv, N as u64 + 200).await;

    let inserted: i64 = (0..N).map(quantity).sum();
    let updated: i64 = (0..100).map(|i| quantity(i) + 10).sum();
    let deleted: i64 = (50..100).map(|i| quantity(i) + 10).sum::<i64>() + (100..150).map(quantity).sum::<i64>();
    let analytics = sink_get(&senv, "/analytics").await.unwrap();
    let (figures, late) = per_op(&analytics);
    assert_eq!(figures, expected(&[("c", 300, inserted), ("d", 100, deleted), ("u", 100, updated)]), "{analytics}");
    assert_eq!(late, 0);
    assert_eq!(analytics["totals"], serde_json::json!({"c": 300, "u": 100, "d": 100, "r": 0}));

    // Inserts by status, and the largest quantity per op.
    let agg = &analytics["aggregates"][0];
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_u = 0.0f64;
    for w in agg["windows"].as_array().unwrap() {
        for g in w["groups"].as_array().unwrap() {
            *by_status.entry(g["group"].as_str().unwrap().to_string()).or_default() +=
                g["ops"]["c"]["count"].as_u64().unwrap_or(0);
            max_u = max_u.max(g["ops"]["u"]["max(quantity)"].as_f64().unwrap_or(0.0));
        }
    }
    assert_eq!(by_status, STATUSES.iter().map(|s| (s.to_string(), 100)).collect());
    assert_eq!(max_u, (0..100).map(|i| quantity(i) + 10).max().unwrap() as f64);

    // The default-style `*:1m`: op counts per collection, every window together.
    let all = &analytics["aggregates"][1];
    assert_eq!(all["name"], "*:1m");
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    for w in all["windows"].as_array().unwrap() {
        assert_eq!(w["groups"][0]["collection"], "orders");
        for (op, f) in w["groups"][0]["ops"].as_object().unwrap() {
            *ops.entry(op.clone()).or_default() += f["count"].as_u64().unwrap();
        }
    }
    assert_eq!(ops, [("c".to_string(), 300), ("d".into(), 100), ("u".into(), 100)].into());

    let metrics =
        reqwest::get(format!("http://{}/metrics", senv.get("SINK_HTTP_ADDR"))).await.unwrap().text().await.unwrap();
    assert_eq!(sample(&metrics, "sink_analytics_events_total{op=\"d\"}"), Some(100.0), "{metrics}");
    assert!(metrics.contains("sink_analytics_window_events{aggregate=\"*:1m\",collection=\"orders\""), "{metrics}");

    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn kill_9_the_sink_mid_stream_keeps_the_aggregates_exact() {
    const BATCHES: i64 = 30;
    const BATCH: i64 = 40;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("aggkill");
    let queue = unique("q_aggkill");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "quantity", "paid")
        .set("SINK_CHECKPOINT_EVERY", "100")
        .set("SINK_AGGREGATES", "orders:1h:sum(quantity)");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    // Batch b inserts its orders, updates the odd ones of batch b-2 (each once, never deleted,
    // so its looked-up document is the one written) and deletes the even ones of batch b-4
    // (never updated). Returns what the figures must be.
    let writer = {
        let coll = client.database(&db).collection::<Document>("orders");
        tokio::spawn(async move {
            let (mut c, mut u, mut d) = ((0u64, 0i64), (0u64, 0i64), (0u64, 0i64));
            for b in 0..BATCHES {
                coll.insert_many((b * BATCH..(b + 1) * BATCH).map(order)).await.unwrap();
                c = (c.0 + BATCH as u64, c.1 + (b * BATCH..(b + 1) * BATCH).map(quantity).sum::<i64>());
                if b >= 2 {
                    for i in ((b - 2) * BATCH..(b - 1) * BATCH).filter(|i| i % 2 == 1) {
                        coll.update_one(doc! {"_id": i}, doc! {"$set": {"quantity": quantity(i) + 100}}).await.unwrap();
                        u = (u.0 + 1, u.1 + quantity(i) + 100);
                    }
                }
                if b >= 4 {
                    for i in ((b - 4) * BATCH..(b - 3) * BATCH).filter(|i| i % 2 == 0) {
                        coll.delete_one(doc! {"_id": i}).await.unwrap();
                        d = (d.0 + 1, d.1 + quantity(i));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            [("c", c.0, c.1), ("d", d.0, d.1), ("u", u.0, u.1)]
        })
    };

    for at in [300u64, 900] {
        wait_stats(&senv, "progress before a kill", LIMIT, |s| s["events_applied"].as_u64() >= Some(at)).await;
        assert!(!writer.is_finished(), "the kill lands during the stream");
        sink.kill9();
        sink = start_sink(&senv).await;
    }
    let figures = writer.await.unwrap();
    let total: u64 = figures.iter().map(|f| f.1).sum();
    wait_applied(&senv, total).await;
    // A clean stop, then a restart: the figures come from the checkpoint.
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert_eq!(queue_len("/", &queue).await, Some(0), "every delivery was settled");
    let mut sink = start_sink(&senv).await;
    let analytics = sink_get(&senv, "/analytics").await.unwrap();
    let (got, late) = per_op(&analytics);
    assert_eq!(got, expected(&figures), "neither lost nor counted twice: {analytics}");
    assert_eq!(late, 0);
    let s = sink_get(&senv, "/stats").await.unwrap();
    assert_eq!(s["events_applied"], total);

    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

/// Run the sink with `env` to completion: it must fail, with one `error:` line holding every
/// one of `needles`; its output.
async fn sink_fails_with(env: &Env, needles: &[&str]) -> String {
    let mut p = Proc::start(&["sink"], env);
    let status = p.wait(Duration::from_secs(30)).await;
    let out = p.output();
    assert!(!status.success() && !out.contains("panicked"), "{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line:\n{out}");
    for n in needles {
        assert!(errors[0].contains(n), "the error line lacks `{n}`:\n{out}");
    }
    out
}

#[tokio::test]
async fn aggregate_mistakes_are_one_readable_line_each() {
    let queue = unique("q_aggbad");
    let state = tempfile::tempdir().unwrap();
    let ok = sink_env(&queue, state.path(), "x", "y");
    let out = sink_fails_with(
        &ok.clone().set("SINK_AGGREGATES", "orders:1x:sum(q); users:1m:avg(age)"),
        &["SINK_AGGREGATES is invalid: 2 mistakes"],
    )
    .await;
    assert!(
        out.lines().any(|l| l.trim().starts_with("aggregate 1 (`orders:1x:sum(q)`): window `1x` is not a duration")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.trim().starts_with("aggregate 2 (`users:1m:avg(age)`): measure `avg(age)` is unknown")),
        "{out}"
    );
    sink_fails_with(&ok.clone().set("SINK_AGGREGATE_LATENESS", "soon"), &["SINK_AGGREGATE_LATENESS", "soon"]).await;
    sink_fails_with(
        &ok.clone().set("SINK_BRIDGE_URL", "https://bridge:8089"),
        &["SINK_BRIDGE_URL", "http://host:port"],
    )
    .await;

    // In the models file: its mistakes name the file and the aggregate; not both places.
    let models = state.path().join("models.toml");
    std::fs::write(
        &models,
        "[[model]]\nname = \"m\"\nfeatures = [\"x\"]\nlabel = \"y\"\n\n[[aggregate]]\nname = \"sales\"\ncollection = \"orders\"\nwindow = \"1m\"\nmeasures = [\"total(q)\"]\n",
    )
    .unwrap();
    let mut file_env = ok.clone().set("SINK_MODELS", &models.to_string_lossy());
    file_env.vars.remove("SINK_FEATURES");
    file_env.vars.remove("SINK_LABEL");
    let out = sink_fails_with(&file_env, &["SINK_MODELS is invalid: 1 mistake in `", "models.toml`:"]).await;
    assert!(out.lines().any(|l| l.contains("models.toml: aggregate `sales`: measure `total(q)` is unknown")), "{out}");
    let valid = std::fs::read_to_string(&models).unwrap().replace("total(q)", "sum(q)");
    std::fs::write(&models, valid).unwrap();
    sink_fails_with(&file_env.clone().set("SINK_AGGREGATES", "*:1h"), &["SINK_AGGREGATES", "in one place"]).await;
}
