//! The sink's state at scale (`make bench`, or `cargo bench --bench sink_state`): the queue is
//! filled with `BENCH_STATE_RECORDS` (1,000,000) insert events, each a new record of about
//! 1 KB, and one sink drains it into its state store; then its memory and the store's size are
//! read, and it is killed with `kill -9` and started again three times, each time timed from
//! spawn until it has applied a message published while it was down. Baselines measured in
//! the same run: the same sink on an empty store (its memory once it has applied one message,
//! and its start timed the same way), and the rate the queue was filled at. Writes
//! `bench/STATE.md` and `bench/state.json`. `BENCH_SINK_ENV=K=V,K=V` passes more settings to
//! the sink, to compare.
//!
//! Under `cargo test` (no `--bench` argument) it does nothing.

#[path = "pipeline/amqp.rs"]
#[allow(dead_code)]
mod amqp;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "pipeline/procs.rs"]
#[allow(dead_code)] // the CPU meter is the pipeline bench's
mod procs;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt as _;
use lapin::BasicProperties;
use mongo_cdc::mq::topology::Topology;
use serde_json::{Value, json};

use self::procs::{peak_rss_mb, rss_mb};

/// The longest any single step may take.
const LIMIT: Duration = Duration::from_secs(900);

/// Restarts after `kill -9` (the median is reported).
const RESTARTS: usize = 3;

/// Goals from the scale issue.
const RSS_GOAL_MB: f64 = 150.0;
const RESTART_GOAL_S: f64 = 2.0;

const FEATURES: &str = "f0,f1,f2,f3,f4,f5,f6,f7,f8,f9";

/// Insert event `i`: a new key, ten features, a label and a note that brings the document to
/// about 1 KB.
fn body(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut unit = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    };
    let f: Vec<f64> = (0..10).map(|_| unit()).collect();
    let key = format!("{:024x}", 0x6900_0000_0000_0000_0000_0000u128 + u128::from(i));
    let mut after = json!({"_id": key, "name": format!("user {i}"), "label": f[0] + 0.5 * f[1] - f[2] > 0.0,
                           "note": "n".repeat(760)});
    for (k, v) in f.iter().enumerate() {
        after[format!("f{k}")] = json!(v);
    }
    let t = 1_790_000_000 + i / 1000;
    json!({"id": format!("e{i:012}"), "op": "c", "key": key, "before": null, "after": after,
           "source": {"db": "bench", "collection": "docs", "cluster_time": {"t": t, "i": i % 1000 + 1}},
           "ts_ms": t * 1000})
    .to_string()
    .into_bytes()
}

async fn applied(env: &Env) -> u64 {
    sink_get(env, "/stats").await.and_then(|s| s["events_applied"].as_u64()).unwrap_or(0)
}

/// Publish events `from..to` to `queue`, pipelined with confirms.
async fn publish(queue: &str, from: u64, to: u64) {
    let (conn, ch) = amqp::confirm_channel("/").await;
    let props = BasicProperties::default().with_delivery_mode(2);
    let messages = futures::stream::iter(from..to).map(move |i| (body(i), props.clone()));
    let sent = amqp::publish_stream(&ch, queue, messages, 64, 4096).await;
    assert_eq!(sent, to - from);
    let _ = conn.close(200, "done".into()).await;
}

/// Start the sink and time it until it has applied `want` events; (seconds to its API
/// answering, seconds to `want`).
async fn start_timed(env: &Env, want: u64) -> (Proc, f64, f64) {
    let start = Instant::now();
    let mut sink = Proc::start(&["sink"], env);
    let mut http = None;
    loop {
        sink.assert_running();
        assert!(start.elapsed() < Duration::from_secs(60), "the sink did not start:\n{}", sink.output());
        if let Some(s) = sink_get(env, "/stats").await {
            http.get_or_insert(start.elapsed().as_secs_f64());
            if s["events_applied"].as_u64().unwrap_or(0) >= want {
                return (sink, http.unwrap_or(f64::NAN), start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("sink_state bench: run `make bench` (or `cargo bench --bench sink_state`) for figures");
        return;
    }
    let n: u64 = std::env::var("BENCH_STATE_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let results = rt.block_on(run(n));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    std::fs::write(dir.join("state.json"), serde_json::to_string_pretty(&results).unwrap() + "\n").unwrap();
    let md = report(&results);
    std::fs::write(dir.join("STATE.md"), &md).unwrap();
    println!("\n{md}");
}

async fn run(n: u64) -> Value {
    let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let queue = unique("q_bench_state");
    let state = tempfile::tempdir().unwrap();
    let mut env = sink_env(&queue, state.path(), FEATURES, "label");
    // `BENCH_SINK_ENV=K=V,K=V`: more sink settings, to compare (the results then say so).
    let extra = std::env::var("BENCH_SINK_ENV").unwrap_or_default();
    for kv in extra.split(',').filter(|kv| !kv.trim().is_empty()) {
        let (k, v) = kv.split_once('=').expect("BENCH_SINK_ENV is K=V,K=V");
        env = env.set(k.trim(), v.trim());
    }
    let (conn, ch) = amqp::confirm_channel("/").await;
    Topology::new(&queue).declare(&ch).await.expect("declare the queue");
    let _ = conn.close(200, "declared".into()).await;

    // Baseline: an empty store, one message.
    publish(&queue, 0, 1).await;
    let (mut sink, _, empty_start_s) = start_timed(&env, 1).await;
    let empty_rss = rss_mb(sink.pid());
    eprintln!("sink_state: empty store started in {empty_start_s:.2} s, {empty_rss:.1} MiB");

    // The queue filled with n events while no sink runs (the publish rate is the broker's
    // ceiling here), then drained by the sink: timed from its spawn.
    assert!(sink.terminate(Duration::from_secs(60)).await.success(), "the sink did not stop:\n{}", sink.output());
    let start = Instant::now();
    publish(&queue, 1, n + 1).await;
    let publish_per_s = n as f64 / start.elapsed().as_secs_f64();
    eprintln!("sink_state: {n} events published at {publish_per_s:.0}/s");
    let start = Instant::now();
    let mut sink = Proc::start(&["sink"], &env);
    let mut peak = 0.0f64;
    let mut last_log = Instant::now();
    loop {
        sink.assert_running();
        assert!(start.elapsed() < LIMIT, "the sink did not apply {n} events in {LIMIT:?}");
        let now = rss_mb(sink.pid());
        peak = peak.max(now);
        let done = applied(&env).await;
        if last_log.elapsed() > Duration::from_secs(15) {
            eprintln!("sink_state: {done} applied, {now:.1} MiB");
            last_log = Instant::now();
        }
        if done > n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_s = start.elapsed().as_secs_f64();
    let (rss_after, hwm) = (rss_mb(sink.pid()), peak_rss_mb(sink.pid()));
    let stats = sink_get(&env, "/stats").await.expect("stats");
    assert_eq!(stats["records"].as_u64(), Some(n + 1), "{stats}");
    assert_eq!(stats["dead_lettered"].as_u64(), Some(0), "{stats}");
    let store_mb =
        std::fs::metadata(state.path().join(format!("{queue}.redb"))).map_or(f64::NAN, |m| m.len() as f64 / 1048576.0);
    eprintln!(
        "sink_state: {n} records in {drain_s:.0} s; RSS {rss_after:.1} MiB (peak {hwm:.1}); store {store_mb:.0} MiB"
    );

    // Restarts after kill -9, each with one message waiting.
    let mut restarts = Vec::new();
    let mut total = n + 1;
    for r in 0..RESTARTS {
        // Let the last checkpoint land, so the time measured is the start, not a replay.
        wait_for("the queue to be drained", Duration::from_secs(30), || {
            let q = queue.clone();
            async move { (queue_len("/", &q).await == Some(0)).then_some(()) }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        sink.kill9();
        publish(&queue, total, total + 1).await;
        total += 1;
        let (s, http_s, ready_s) = start_timed(&env, total).await;
        sink = s;
        eprintln!("sink_state: restart {} after kill -9: API in {http_s:.2} s, applying in {ready_s:.2} s", r + 1);
        restarts.push(json!({"api_s": http_s, "ready_s": ready_s}));
    }
    // A record written early is read back from the store.
    let key = format!("{:024x}", 0x6900_0000_0000_0000_0000_0000u128 + 5);
    let rec = sink_get(&env, &format!("/records/docs/{key}")).await.expect("record 5");
    assert_eq!(rec["version"].as_u64(), Some(1), "{rec}");
    let rss_restarted = rss_mb(sink.pid());
    assert!(sink.terminate(Duration::from_secs(60)).await.success(), "the sink did not stop:\n{}", sink.output());
    delete_topology("/", &queue).await;

    let ready: Vec<f64> = restarts.iter().map(|r| r["ready_s"].as_f64().unwrap()).collect();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({
        "date": chrono_now(),
        "commit": commit,
        "records": n,
        "sink_env": extra,
        "doc_bytes": body(1).len(),
        "drain_per_s": n as f64 / drain_s,
        "publish_per_s": publish_per_s,
        "sink_rss_mb": rss_after,
        "sink_peak_rss_mb": hwm.max(peak),
        "sink_rss_empty_mb": empty_rss,
        "sink_rss_after_restart_mb": rss_restarted,
        "store_mb": store_mb,
        "start_empty_s": empty_start_s,
        "restarts": restarts,
        "restart_ready_s": median(&ready),
        "goals": {"sink_peak_rss_mb": RSS_GOAL_MB, "restart_ready_s": RESTART_GOAL_S},
        "loadavg_at_start": load_start.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "loadavg_at_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn chrono_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `1234567` as `1,234,567`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(r: &Value) -> String {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    let verdict = |ok: bool| if ok { "PASS" } else { "**MISS**" };
    let peak = f("sink_peak_rss_mb");
    let ready = f("restart_ready_s");
    let each = |k: &str| {
        let values = r["restarts"].as_array().into_iter().flatten();
        values.map(|x| format!("{:.2}", x[k].as_f64().unwrap_or(f64::NAN))).collect::<Vec<_>>().join(" · ")
    };
    format!(
        "# mongo-cdc sink state at scale\n\n\
         Written by `make bench` (`cargo bench --bench sink_state`) on {date} (commit {commit}), release build, \
         on the machine of `bench/RESULTS.md` (load average {l0} at the start, {l1} at the end).\n\n\
         One sink drains {n} insert events from RabbitMQ, each a new record whose document is about 1 KB \
         (the message is {bytes} bytes), published into its queue before it starts (the publish rate, with \
         confirms, is the broker's ceiling); its state lives in its redb store. \
         Then it is killed with `kill -9` and started again {restarts} times, each time with one message \
         waiting, timed from spawn until that message is applied. The baseline is the same sink on an empty \
         store, measured in the same run.\n\n\
         {settings}\
         | key | value | baseline (empty store) | ratio | goal | result |\n|---|---|---|---|---|---|\n\
         | `sink_peak_rss_mb` with {n} records | {peak:.1} MiB | {empty:.1} MiB | {rss_ratio:.2} | < {rss_goal} MiB | {rss_ok} |\n\
         | `sink_rss_mb` after draining | {now:.1} MiB | | | | |\n\
         | `sink_rss_mb` after the last restart | {restarted:.1} MiB | | | | |\n\
         | `restart_ready_s` after `kill -9` (median) | {ready:.2} s | {empty_s:.2} s | {ready_ratio:.2} | < {ready_goal} s | {ready_ok} |\n\
         | each restart: applying / API answering | {runs} s / {apis} s | | | | |\n\
         | `state_drain_per_s`: the sink drains the queue, a new record per event | {drain}/s | publish {publish}/s | {drain_ratio:.2} | | |\n\
         | store size | {store:.0} MiB | | | | |\n",
        date = r["date"].as_str().unwrap_or(""),
        commit = r["commit"].as_str().unwrap_or(""),
        l0 = r["loadavg_at_start"].as_str().unwrap_or(""),
        l1 = r["loadavg_at_end"].as_str().unwrap_or(""),
        n = thousands(f("records")),
        settings = match r["sink_env"].as_str().filter(|e| !e.is_empty()) {
            Some(e) => format!("Sink settings beyond the defaults: `{e}`.\n\n"),
            None => String::new(),
        },
        bytes = r["doc_bytes"],
        restarts = RESTARTS,
        empty = f("sink_rss_empty_mb"),
        rss_ratio = peak / f("sink_rss_empty_mb"),
        rss_goal = RSS_GOAL_MB,
        rss_ok = verdict(peak < RSS_GOAL_MB),
        now = f("sink_rss_mb"),
        restarted = f("sink_rss_after_restart_mb"),
        empty_s = f("start_empty_s"),
        ready_ratio = ready / f("start_empty_s"),
        ready_goal = RESTART_GOAL_S,
        ready_ok = verdict(ready < RESTART_GOAL_S),
        runs = each("ready_s"),
        apis = each("api_s"),
        drain = thousands(f("drain_per_s")),
        publish = thousands(f("publish_per_s")),
        drain_ratio = f("drain_per_s") / f("publish_per_s"),
        store = f("store_mb"),
    )
}
