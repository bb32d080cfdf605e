//! The sink's dashboard in a real browser (headless Chromium through ChromeDriver), against
//! real SecantusDB, bridge and RabbitMQ: it shows the figures `/stats` serves, they move while
//! events flow, every model's quality is drawn, and the page raises no error. The test saves
//! a screenshot as `target/dashboard-test.png`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::browser::Browser;
use common::*;
use mongodb::bson::{Document, doc};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

const MODELS: &str = r#"
[[model]]
name = "paid"
features = ["quantity", "amount"]
label = "paid"

[[model]]
name = "amount"
task = "regression"
kind = "hoeffding_tree"
features = ["quantity"]
label = "amount"
"#;

/// The events count the page shows (`None` before it has drawn one).
async fn page_events(browser: &Browser) -> Option<u64> {
    browser
        .eval("return document.getElementById('events-applied').dataset.value || null;")
        .await
        .as_str()
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn the_dashboard_shows_the_sinks_figures_live_in_a_real_browser() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("dash");
    let queue = unique("q_dash");
    let state = tempfile::tempdir().unwrap();
    let models = state.path().join("models.toml");
    std::fs::write(&models, MODELS).unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let mut senv = sink_env(&queue, state.path(), "", "")
        .set("SINK_MODELS", &models.to_string_lossy())
        .set("SINK_BRIDGE_URL", benv.get("CDC_HTTP_ADDR"));
    senv.vars.remove("SINK_FEATURES");
    senv.vars.remove("SINK_LABEL");
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{}/", senv.get("SINK_HTTP_ADDR"))).await;

    // Orders flow until the test has seen the page's count rise (at most 20 s of writes).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (coll, stop) = (client.database(&db).collection::<Document>("orders"), stop.clone());
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) && n < 4000 {
                let docs: Vec<Document> = (n..n + 20)
                    .map(|i| doc! {"_id": i, "quantity": i % 7 + 1, "amount": (i % 7) as f64 * 2.5, "paid": i % 3 == 0})
                    .collect();
                coll.insert_many(docs).await.unwrap();
                n += 20;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n as u64
        })
    };
    let first =
        wait_for("the page to show events", LIMIT, || async { page_events(&browser).await.filter(|&n| n > 0) }).await;
    wait_for("the page's count to rise while orders flow", LIMIT, || async {
        page_events(&browser).await.filter(|&n| n > first)
    })
    .await;
    assert!(!writer.is_finished(), "the count rose while the writes went on");
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.unwrap();

    // Once the stream is applied, the page shows what /stats says, within a few seconds.
    let stats = wait_stats(&senv, "every order applied", LIMIT, |s| s["events_applied"] == written).await;
    wait_for("the page to show /stats' count", Duration::from_secs(5), || async {
        page_events(&browser).await.filter(|&n| n == written)
    })
    .await;

    // Every model's quality line has points; the analytics and the bridge are shown.
    let names: Vec<String> = stats["models"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(names, ["amount", "paid"]);
    for name in &names {
        let script = format!(
            "const s = document.querySelector('svg[data-model=\"{name}\"]'); return s ? Number(s.dataset.points) : 0;"
        );
        wait_for(&format!("points on model {name}'s chart"), Duration::from_secs(10), || async {
            browser.eval(&script).await.as_u64().filter(|&n| n >= 1)
        })
        .await;
    }
    let rows = browser.eval("return document.querySelectorAll('[data-aggregate=\"*:1m\"] tbody tr').length;").await;
    assert!(rows.as_u64() >= Some(1), "the default aggregate's current window is a table: {rows}");
    let bars = browser.eval("return document.querySelectorAll('[data-aggregate=\"*:1m\"] svg rect').length;").await;
    assert!(bars.as_u64() >= Some(1), "and a bar chart: {bars}");
    let bridge_state = browser.eval("return document.getElementById('bridge').dataset.state;").await;
    assert!(bridge_state == "streaming" || bridge_state == "snapshot", "the bridge's panel: {bridge_state}");
    let ops = browser.eval("return document.querySelector('#ops [data-op=\"c\"]').dataset.value;").await;
    assert_eq!(ops.as_str().and_then(|v| v.parse().ok()), Some(written), "inserts by op");

    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-test.png");
    browser.screenshot(&shot).await;
    let errors = browser.eval("return document.getElementById('errors').textContent;").await;
    assert_eq!(errors, Value::String(String::new()), "errors the page caught");
    assert_eq!(browser.console_errors().await, Vec::<String>::new(), "the browser console's errors");
    browser.quit().await;

    assert!(sink.terminate(LIMIT).await.success(), "{}", sink.output());
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn the_bridge_panel_says_when_no_bridge_is_linked() {
    let queue = unique("q_dash_nolink");
    let state = tempfile::tempdir().unwrap();
    let senv = sink_env(&queue, state.path(), "x", "y");
    let mut sink = start_sink(&senv).await;
    assert_eq!(sink_get(&senv, "/bridge").await, Some(serde_json::json!({"linked": false})));
    let page = reqwest::get(format!("http://{}/", senv.get("SINK_HTTP_ADDR"))).await.unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.unwrap().contains("<script src=\"/dashboard.js\">"));
    let history = sink_get(&senv, "/history").await.unwrap();
    assert_eq!((history["interval_ms"].as_u64(), history["capacity"].as_u64()), (Some(1000), Some(600)));
    let samples = wait_for("two samples of the idle sink", Duration::from_secs(10), || async {
        let h = sink_get(&senv, "/history").await?;
        h["samples"].as_array().filter(|s| s.len() >= 2).cloned()
    })
    .await;
    assert_eq!(samples[1]["events_per_s"], serde_json::json!(0.0), "{samples:?}");
    assert!(sink.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}
