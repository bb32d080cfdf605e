//! Alerts on live records against real SecantusDB, bridge and RabbitMQ: anomaly models on the
//! orders stream with injected anomalies (`tests/data/orders_anomaly.csv`, River's and rrcf's
//! figures in `tests/data/anomaly_figures.json`, both from `scripts/anomaly_quality.py`),
//! declared rules on their edges, schema changes once per field and type, every alert id
//! still arriving after a kill -9, and a rule that does not parse.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use mongo_cdc::ml::{AnomalyDetector, AnomalyKind, Column, Feature, Schema, Threshold};
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

/// The orders: (price, quantity, is_anomaly).
fn orders() -> Vec<(f64, i64, bool)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/orders_anomaly.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2] == "1")
        })
        .collect()
}

fn figures() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/anomaly_figures.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// (precision, recall, F1) of the flagged rows against the truth.
fn prf(flagged: &BTreeSet<usize>, truth: &[bool]) -> (f64, f64, f64) {
    let tp = flagged.iter().filter(|&&i| truth[i]).count() as f64;
    let (fp, positives) = (flagged.len() as f64 - tp, truth.iter().filter(|&&t| t).count() as f64);
    let p = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let r = tp / positives;
    (p, r, if p + r > 0.0 { 2.0 * p * r / (p + r) } else { 0.0 })
}

/// The figure each kind must reach: River's median F1 for half-space trees, rrcf's for RCF.
fn goal(kind: AnomalyKind) -> f64 {
    let f = figures();
    match kind {
        AnomalyKind::HalfSpaceTrees => f["river_hst_warmup"]["f1"].as_f64().unwrap(),
        AnomalyKind::RandomCutForest => f["rrcf"]["f1"].as_f64().unwrap(),
    }
}

#[test]
fn in_process_both_kinds_reach_the_reference_f1() {
    let data = orders();
    let truth: Vec<bool> = data.iter().map(|r| r.2).collect();
    for kind in [AnomalyKind::HalfSpaceTrees, AnomalyKind::RandomCutForest] {
        let schema = Schema::new(vec![Column::numeric("price"), Column::numeric("quantity")]).unwrap();
        let mut m = AnomalyDetector::new(kind, schema, &Value::Null, Threshold::default(), None).unwrap();
        let flagged: BTreeSet<usize> = data
            .iter()
            .enumerate()
            .filter(|(_, (p, q, _))| m.score_then_learn(&[Feature::Num(*p), Feature::Num(*q as f64)]).unwrap().alert)
            .map(|(i, _)| i)
            .collect();
        let (p, r, f1) = prf(&flagged, &truth);
        println!("{}: precision {p:.4} recall {r:.4} F1 {f1:.4} (goal {:.4})", kind.name(), goal(kind));
        assert!(f1 >= goal(kind), "{}: F1 {f1:.4} below {:.4}", kind.name(), goal(kind));
    }
}

const MODELS: &str = r#"
[[model]]
name = "hst"
task = "anomaly"
features = ["price", "quantity"]

[[model]]
name = "rcf"
task = "anomaly"
kind = "random_cut_forest"
features = ["price", "quantity"]
"#;

#[tokio::test]
async fn the_orders_stream_alerts_at_the_reference_f1_through_the_pipeline() {
    let data = orders();
    let truth: Vec<bool> = data.iter().map(|r| r.2).collect();
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("anom");
    let queue = unique("q_anom");
    let state = tempfile::tempdir().unwrap();
    let models = state.path().join("models.toml");
    std::fs::write(&models, MODELS).unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let mut senv = sink_env(&queue, &state.path().join("s"), "", "")
        .set("SINK_MODELS", &models.to_string_lossy())
        .set("SINK_SCHEMA_WARMUP", "100000");
    senv.vars.remove("SINK_FEATURES");
    senv.vars.remove("SINK_LABEL");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    // The truth column stays here: only price and quantity reach MongoDB.
    let coll = client.database(&db).collection::<Document>("orders");
    let docs: Vec<Document> =
        data.iter().enumerate().map(|(i, (p, q, _))| doc! {"_id": i as i64, "price": *p, "quantity": *q}).collect();
    for chunk in docs.chunks(500) {
        coll.insert_many(chunk.to_vec()).await.unwrap();
    }
    let n = data.len() as u64;
    let s = wait_stats(&senv, "every order scored", LIMIT, |s| s["models"]["rcf"]["trained"] == json!(n)).await;
    assert_eq!(s["models"]["hst"]["trained"], json!(n), "{s}");
    let expected = s["anomaly_alerts"].as_u64().unwrap() as usize;
    let got = consume_until("/", &format!("{queue}.alerts"), LIMIT, |got| got.len() >= expected).await;
    let mut flagged: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    for m in &got {
        let a = m.json();
        assert_eq!(a["kind"], "anomaly", "{a}");
        assert_eq!(a["collection"], "orders");
        let score = a["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{a}");
        let key: usize = a["key"].as_str().unwrap().parse().unwrap();
        flagged.entry(a["model"].as_str().unwrap().to_string()).or_default().insert(key);
    }
    for (model, kind) in [("hst", AnomalyKind::HalfSpaceTrees), ("rcf", AnomalyKind::RandomCutForest)] {
        let (p, r, f1) = prf(flagged.get(model).unwrap_or(&BTreeSet::new()), &truth);
        println!("pipeline {model}: precision {p:.4} recall {r:.4} F1 {f1:.4} (goal {:.4})", goal(kind));
        assert!(f1 >= goal(kind), "{model}: F1 {f1:.4} below {:.4}", goal(kind));
    }
    let schema = sink_get(&senv, "/schema").await.unwrap();
    let fields: Vec<&String> = schema["orders"]["fields"].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["_id", "price", "quantity"], "the truth column never reaches the sink: {schema}");
    let metrics =
        reqwest::get(format!("http://{}/metrics", senv.get("SINK_HTTP_ADDR"))).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("sink_alerts_total{{kind=\"anomaly\"}} {expected}")), "{metrics}");

    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert!(sink.output().contains("anomaly"), "one log line per alert");
    bridge.terminate(LIMIT).await;
    delete_topology("/", &queue).await;
}

/// A sink with one anomaly model (rules need a model to sit beside) and `rules`.
fn rules_env(queue: &str, state: &std::path::Path, rules: &str) -> Env {
    sink_env(queue, state, "amount", "")
        .set("SINK_TASK", "anomaly")
        .set("SINK_ALERT_RULES", rules)
        .set("SINK_SCHEMA_WARMUP", "5")
}

fn alerts_of(alerts: &Value, kind: &str) -> Vec<Value> {
    alerts.as_array().unwrap().iter().filter(|a| a["kind"] == kind).cloned().collect()
}

#[tokio::test]
async fn rules_fire_on_their_edge_and_a_type_change_alerts_once() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("rules");
    let queue = unique("q_rules");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = rules_env(
        &queue,
        state.path(),
        r#"big_order@orders: amount > 10000; bulk: quantity >= 50 and status == "new""#,
    );
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;
    let coll = client.database(&db).collection::<Document>("orders");
    let amounts = [5, 500, 15_000, 70, 20_000, 9, 10_000, 40, 11, 12];
    let docs: Vec<Document> = amounts
        .iter()
        .enumerate()
        .map(|(i, a)| doc! {"_id": i as i64, "amount": *a, "quantity": if i == 1 { 60 } else { 2 }, "status": "new"})
        .collect();
    coll.insert_many(docs).await.unwrap();
    wait_stats(&senv, "the inserts applied", LIMIT, |s| s["events_applied"] == json!(10)).await;
    // 0 becomes big; 2 stays big; 3 changes an unrelated field; 1 stops being bulk, then
    // is bulk again; then one field changes type on one document, and the same change on
    // another. Each update is applied before the next: an update event carries the document
    // as looked up when read, so back-to-back updates of one key could both carry the last.
    let updates = [
        (0, doc! {"amount": 20_000}),
        (2, doc! {"amount": 16_000}),
        (2, doc! {"amount": 17_000}),
        (3, doc! {"status": "paid"}),
        (1, doc! {"status": "paid"}),
        (1, doc! {"status": "new"}),
        (5, doc! {"quantity": "many"}),
        (6, doc! {"quantity": "lots"}),
    ];
    for (n, (id, set)) in updates.into_iter().enumerate() {
        coll.update_one(doc! {"_id": id}, doc! {"$set": set}).await.unwrap();
        let applied = json!(11 + n);
        wait_stats(&senv, "the update applied", LIMIT, |s| s["events_applied"] == applied).await;
    }

    let alerts = sink_get(&senv, "/alerts").await.unwrap();
    let mut fired: Vec<(String, String)> = alerts_of(&alerts, "rule")
        .iter()
        .map(|a| (a["rule"].as_str().unwrap().to_string(), a["key"].as_str().unwrap().to_string()))
        .collect();
    fired.sort();
    let want: Vec<(String, String)> =
        [("big_order", "0"), ("big_order", "2"), ("big_order", "4"), ("bulk", "1"), ("bulk", "1")]
            .iter()
            .map(|(r, k)| (r.to_string(), k.to_string()))
            .collect();
    assert_eq!(fired, want, "{alerts}");
    let schema_alerts = alerts_of(&alerts, "schema");
    assert_eq!(schema_alerts.len(), 1, "{alerts}");
    let a = &schema_alerts[0];
    assert_eq!(
        (&a["collection"], &a["key"], &a["field"], &a["was"], &a["now"]),
        (&json!("orders"), &json!("5"), &json!("quantity"), &json!(["number"]), &json!("string")),
        "{a}"
    );
    let schema = sink_get(&senv, "/schema").await.unwrap();
    // Counted per change seen: ten inserts and six updates with a number, two with a string.
    assert_eq!(schema["orders"]["fields"]["quantity"], json!({"number": 16, "string": 2}), "{schema}");

    // The same alerts on the queue, each with its id as message id.
    let n = alerts.as_array().unwrap().len();
    let got = consume_until("/", &format!("{queue}.alerts"), LIMIT, |got| got.len() >= n).await;
    let ids: BTreeSet<String> = got.iter().map(|m| m.props.message_id().as_ref().unwrap().to_string()).collect();
    let served: BTreeSet<String> =
        alerts.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().into()).collect();
    assert_eq!(ids, served);

    // The schema survives a restart: the change is not raised again.
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    let mut sink = start_sink(&senv).await;
    coll.update_one(doc! {"_id": 7}, doc! {"$set": {"quantity": "some"}}).await.unwrap();
    let s = wait_stats(&senv, "the last update applied", LIMIT, |s| s["events_applied"] == json!(19)).await;
    assert_eq!(s["schema_alerts"], json!(1), "{s}");
    assert_eq!(sink_get(&senv, "/schema").await.unwrap()["orders"]["fields"]["quantity"]["string"], json!(3));

    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    bridge.terminate(LIMIT).await;
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn after_a_kill_9_every_alert_id_still_arrives() {
    const N: i64 = 3000;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("alertkill");
    let queue = unique("q_alertkill");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = rules_env(&queue, state.path(), "big: amount > 900").set("SINK_CHECKPOINT_EVERY", "200");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;
    let coll = client.database(&db).collection::<Document>("orders");
    // Every tenth order is big: N / 10 rule alerts, one per key.
    let docs: Vec<Document> =
        (0..N).map(|i| doc! {"_id": i, "amount": if i % 10 == 0 { 1000 } else { i % 900 }}).collect();
    let inserter = {
        let coll = coll.clone();
        tokio::spawn(async move {
            for chunk in docs.chunks(100) {
                coll.insert_many(chunk.to_vec()).await.unwrap();
            }
        })
    };
    wait_stats(&senv, "some alerts raised", LIMIT, |s| s["rule_alerts"].as_u64().unwrap_or(0) >= 20).await;
    sink.kill9();
    inserter.await.unwrap();
    let mut sink = start_sink(&senv).await;
    wait_stats(&senv, "every insert applied", LIMIT, |s| s["records"] == json!(N)).await;

    let want: BTreeSet<String> = (0..N).filter(|i| i % 10 == 0).map(|i| i.to_string()).collect();
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    consume_until("/", &format!("{queue}.alerts"), LIMIT, |got| {
        ids.clear();
        for m in got {
            let a = m.json();
            if a["kind"] != "rule" {
                continue; // the anomaly model beside the rule alerts too
            }
            ids.entry(a["key"].as_str().unwrap().to_string()).or_default().insert(a["id"].as_str().unwrap().into());
        }
        ids.len() >= want.len()
    })
    .await;
    let keys: BTreeSet<String> = ids.keys().cloned().collect();
    assert_eq!(keys, want, "every big order alerted");
    // Repeats after the crash carry the id of the first: dropping by id leaves one per key.
    assert!(ids.values().all(|s| s.len() == 1), "{ids:?}");

    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    bridge.terminate(LIMIT).await;
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn a_rule_that_does_not_parse_is_one_line_and_a_failed_start() {
    let state = tempfile::tempdir().unwrap();
    for (rules, needle) in [("big: amount >", "SINK_ALERT_RULES"), ("big@nowhere: amount > 1", "nowhere")] {
        let env = rules_env(&unique("q_badrule"), state.path(), rules).set("MONGO_COLLECTIONS", "orders");
        let mut p = Proc::start(&["sink"], &env);
        let status = p.wait(Duration::from_secs(30)).await;
        let out = p.output();
        assert!(!status.success(), "{out}");
        assert!(!out.contains("panicked"), "{out}");
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(errors[0].contains(needle) && errors[0].contains("big"), "{}", errors[0]);
    }
}
