//! The sink's models against real SecantusDB, bridge and RabbitMQ: typed features from real
//! documents, two models on one stream from a models file, and a drift alert on
//! `<queue>.alerts`.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::{DateTime, Document, doc};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(120);

fn count(s: &Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_default()
}

const PLANS: [&str; 3] = ["basic", "pro", "team"];

/// A customer with every kind of field: a number, strings, a bool, a date (sometimes null or
/// missing), an array, and a note no model reads. Churn follows the plan and the tags.
fn customer(rng: &mut Rng, i: i64) -> Document {
    let pick = |r: f64, n: usize| (((r + 1.0) / 2.0) * n as f64) as usize % n;
    let plan = PLANS[pick(rng.unit(), 3)];
    let n_tags = pick(rng.unit(), 4);
    let age = 18 + pick(rng.unit(), 60) as i32;
    let vip = rng.unit() > 0.5;
    let mut d = doc! {
        "_id": i,
        "age": age,
        "plan": plan,
        "city": format!("city-{}", pick(rng.unit(), 40)),
        "tags": (0..n_tags).map(|t| format!("t{t}")).collect::<Vec<_>>(),
        "vip": vip,
        "note": "new",
        "churned": plan == "basic" || n_tags == 0,
        "spend": 20.0 + 15.0 * PLANS.iter().position(|p| *p == plan).unwrap() as f64 + 0.5 * f64::from(age),
    };
    match i % 10 {
        0 => {}
        1 => {
            d.insert("signup", mongodb::bson::Bson::Null);
        }
        _ => {
            d.insert("signup", DateTime::from_millis(1_600_000_000_000 + i * 3_600_000));
        }
    }
    d
}

async fn insert_customers(client: &mongodb::Client, db: &str, n: i64) {
    let coll = client.database(db).collection::<Document>("customers");
    let mut rng = Rng::new(11);
    let docs: Vec<Document> = (0..n).map(|i| customer(&mut rng, i)).collect();
    for chunk in docs.chunks(500) {
        coll.insert_many(chunk.to_vec()).await.unwrap();
    }
}

#[tokio::test]
async fn typed_features_train_without_poison_and_predict_from_a_raw_document() {
    const N: i64 = 1500;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("typed");
    let queue = unique("q_typed");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let features = "age,plan:category,city:hash,signup:date?,tags:count,vip";
    let senv = sink_env(&queue, state.path(), features, "churned").set("SINK_MODEL", "hoeffding_tree");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    insert_customers(&client, &db, N).await;
    // Ten updates of a field no model reads: applied to the record, learned once.
    let coll = client.database(&db).collection::<Document>("customers");
    for n in 0..10 {
        coll.update_one(doc! {"_id": 7}, doc! {"$set": {"note": format!("edit {n}")}}).await.unwrap();
    }
    let s = wait_stats(&senv, "every change applied", LIMIT, |s| count(s, "events_applied") >= N as u64 + 10).await;
    assert_eq!(count(&s, "dead_lettered"), 0, "strings, bools, dates, nulls and arrays are not poison: {s}");
    assert_eq!(s["model"]["trained"], json!(N), "{s}");
    assert_eq!(s["model"]["kind"], "hoeffding_tree");
    assert_eq!(s["model"]["unchanged_skipped"], json!(10), "{s}");
    assert_eq!(count(&s, "unchanged_skipped"), 10);
    assert!(s["model"]["rolling_1000"]["accuracy"].as_f64().unwrap() > 0.9, "{s}");
    let rec = sink_get(&senv, "/records/customers/7").await.unwrap();
    assert_eq!((rec["version"].as_u64(), rec["doc"]["note"].as_str()), (Some(11), Some("edit 9")));

    // A raw document, shaped as the bridge writes them.
    let ask = |plan: &str, tags: Value| {
        json!({"age": 40, "plan": plan, "city": "city-3", "signup": "2023-11-14T22:13:20.123Z", "tags": tags, "vip": true})
            .to_string()
    };
    let (status, p) = sink_post(&senv, "/predict", &ask("basic", json!(["t0", "t1"]))).await;
    assert_eq!((status, &p["prediction"]), (200, &json!(true)), "{p}");
    let (status, p) = sink_post(&senv, "/predict", &ask("pro", json!(["t0", "t1"]))).await;
    assert_eq!((status, &p["prediction"]), (200, &json!(false)), "{p}");
    // A category never seen, a missing date (it has an indicator) and a missing city are fine.
    let (status, p) = sink_post(&senv, "/predict", r#"{"age": 30, "plan": "gold", "tags": [], "vip": false}"#).await;
    assert_eq!(status, 200, "{p}");
    // A plain number missing is likely a client's mistake: it is named.
    let (status, p) = sink_post(&senv, "/predict", r#"{"plan": "pro", "tags": [], "vip": false}"#).await;
    assert_eq!((status, p["error"].as_str()), (400, Some("missing features: age")), "{p}");
    let (status, p) = sink_post(&senv, "/predict", r#"{"age": 30, "plan": "gold", "tags": [], "vip": null}"#).await;
    assert_eq!(status, 200, "{p}");
    let (status, p) = sink_post(&senv, "/predict", r#"{"age": 30, "plan": {"o": 1}, "tags": [], "vip": true}"#).await;
    assert_eq!(status, 400);
    assert!(p["error"].as_str().unwrap().contains("`plan` is not a category"), "{p}");
    let models = sink_get(&senv, "/models").await.unwrap();
    assert_eq!(models[0]["name"], "default");
    assert_eq!(models[0]["features"][3], "signup:date?");

    bridge.assert_running();
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn a_backlog_of_updates_looked_up_late_trains_once_per_distinct_sample() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("backlog");
    let queue = unique("q_backlog");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "x", "y");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;
    let coll = client.database(&db).collection::<Document>("k");
    coll.insert_one(doc! {"_id": 1, "x": 0, "y": true}).await.unwrap();
    wait_stats(&senv, "the insert", LIMIT, |s| count(s, "events_applied") == 1).await;

    // While the bridge is down, five updates; read afterwards, each update's `after` is the
    // document as it is then (x = 5): one new sample, four repeats.
    assert!(bridge.terminate(LIMIT).await.success());
    for x in 1..=5 {
        coll.update_one(doc! {"_id": 1}, doc! {"$set": {"x": x}}).await.unwrap();
    }
    let mut bridge = start_bridge(&client, &benv).await;
    let s = wait_stats(&senv, "the updates", LIMIT, |s| count(s, "events_applied") == 6).await;
    assert_eq!(s["model"]["trained"], json!(2), "{s}");
    assert_eq!((count(&s, "unchanged_skipped"), &s["model"]["unchanged_skipped"]), (4, &json!(4)), "{s}");
    let rec = sink_get(&senv, "/records/k/1").await.unwrap();
    assert_eq!((rec["version"].as_u64(), &rec["doc"]["x"]), (Some(6), &json!(5)));

    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

const MODELS: &str = r#"
[[model]]
name = "churn"
kind = "linear"
features = ["age", "plan:category", "tags:count", "vip"]
label = "churned"
collections = ["customers"]

[[model]]
name = "spend"
task = "regression"
kind = "adaptive_forest"
features = ["age", "plan:category"]
label = "spend"
collections = ["customers"]
[model.params]
n_models = 3
"#;

#[tokio::test]
async fn a_classifier_and_a_regressor_learn_from_one_stream() {
    const N: i64 = 1000;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("two");
    let queue = unique("q_two");
    let state = tempfile::tempdir().unwrap();
    let models = state.path().join("models.toml");
    std::fs::write(&models, MODELS).unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let mut senv = sink_env(&queue, state.path(), "", "").set("SINK_MODELS", &models.to_string_lossy());
    senv.vars.remove("SINK_FEATURES");
    senv.vars.remove("SINK_LABEL");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    insert_customers(&client, &db, N).await;
    // Another collection, with both labels: neither model reads it.
    let orders = client.database(&db).collection::<Document>("orders");
    orders.insert_many((0..50).map(|i| doc! {"_id": i, "age": 1, "churned": true, "spend": 1.0})).await.unwrap();

    let s = wait_stats(&senv, "every change applied", LIMIT, |s| count(s, "events_applied") >= N as u64 + 50).await;
    assert_eq!(count(&s, "dead_lettered"), 0, "{s}");
    assert_eq!(s["models"]["churn"]["trained"], json!(N), "{s}");
    assert_eq!(s["models"]["spend"]["trained"], json!(N), "{s}");
    assert_eq!(s["models"]["spend"]["kind"], "adaptive_forest");
    assert_eq!(s["model"]["name"], "churn", "no model is named default, so the first is /stats' model");
    assert!(s["models"]["churn"]["rolling_1000"]["accuracy"].as_f64().unwrap() > 0.85, "{s}");
    // Spend runs from 29 to 89; the forest's leaves start as River's do (an SGD model on the
    // raw features beside the mean), so a few early predictions are far off: MAE, not RMSE.
    assert!(s["models"]["spend"]["rolling_1000"]["mae"].as_f64().unwrap() < 15.0, "{s}");

    let listed = sink_get(&senv, "/models").await.unwrap();
    let names: Vec<&str> = listed.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["churn", "spend"]);
    let raw = r#"{"age": 50, "plan": "team", "tags": ["a"], "vip": false}"#;
    let (status, p) = sink_post(&senv, "/models/spend/predict", raw).await;
    let spend = p["prediction"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(status, 200, "{p}");
    assert!((spend - 75.0).abs() < 20.0, "spend for a team plan at 50: {spend}");
    let (status, p) = sink_post(&senv, "/models/churn/predict", raw).await;
    assert_eq!((status, &p["prediction"]), (200, &json!(false)), "{p}");
    let (_, default) = sink_post(&senv, "/predict", raw).await;
    assert_eq!(default, p, "/predict is the first model's");
    let (status, _) = sink_post(&senv, "/models/nope/predict", raw).await;
    assert_eq!(status, 404);

    // One checkpoint holds both models: a restart serves them as they were.
    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    let mut sink = start_sink(&senv).await;
    let back = sink_get(&senv, "/stats").await.unwrap();
    assert_eq!(back["models"], s["models"]);
    let (_, again) = sink_post(&senv, "/models/spend/predict", raw).await;
    assert_eq!(again["prediction"].as_f64(), Some(spend));

    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn a_drift_alert_reaches_the_alerts_queue_and_survives_a_restart() {
    const N: i64 = 4000;
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("drift");
    let queue = unique("q_drift");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), "x", "y");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    // The label's rule flips half way.
    let coll = client.database(&db).collection::<Document>("points");
    let mut rng = Rng::new(5);
    let docs: Vec<Document> = (0..N)
        .map(|i| {
            let x = rng.unit();
            doc! {"_id": i, "x": x, "y": if i < N / 2 { x > 0.0 } else { x <= 0.0 }}
        })
        .collect();
    for chunk in docs.chunks(500) {
        coll.insert_many(chunk.to_vec()).await.unwrap();
    }

    let s = wait_stats(&senv, "every insert trained", LIMIT, |s| s["model"]["trained"] == json!(N)).await;
    assert!(count(&s, "drift_alerts") >= 1, "{s}");
    let alerts = sink_get(&senv, "/alerts").await.unwrap();
    let first = alerts[0].clone();
    assert_eq!((&first["kind"], &first["model"]), (&json!("drift"), &json!("default")), "{alerts}");
    let trained = first["trained"].as_u64().unwrap();
    assert!(trained > N as u64 / 2 && trained < N as u64, "detected after the flip: {alerts}");
    assert_eq!(alerts.as_array().unwrap().len() as u64, count(&s, "drift_alerts"));

    // Published (confirmed) before the checkpoint that holds their events.
    let n = alerts.as_array().unwrap().len();
    let got = consume_until("/", &format!("{queue}.alerts"), LIMIT, |got| got.len() >= n).await;
    let message = got[0].json();
    assert_eq!(message, first);
    let id = got[0].props.message_id().as_ref().map(|m| m.to_string());
    assert_eq!(id.as_deref(), first["id"].as_str());
    let metrics =
        reqwest::get(format!("http://{}/metrics", senv.get("SINK_HTTP_ADDR"))).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!("sink_drift_alerts_total {n}")), "{metrics}");
    assert!(metrics.contains(&format!("sink_models_drift_alerts_total{{model=\"default\"}} {n}")), "{metrics}");
    assert!(sink.output().contains("drift detected"), "one log line per alert");

    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    let mut sink = start_sink(&senv).await;
    assert_eq!(sink_get(&senv, "/alerts").await.unwrap(), alerts, "alerts survive a restart");
    assert!(sink.terminate(LIMIT).await.success());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}
