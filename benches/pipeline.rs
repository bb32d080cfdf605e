//! The pipeline benchmark (`make bench`, or `cargo bench --bench pipeline`): the ceilings of
//! the broker and the database, the bridge draining a backlog, end-to-end latency under a
//! paced load, the sink's core in process and through RabbitMQ, and peak memory. Each figure
//! is measured `BENCH_RUNS` times (3) and the median reported, in `bench/RESULTS.md` and
//! `bench/results.json`.
//!
//! Under `cargo test` (no `--bench` argument) it only checks, in a second, that the
//! in-process sink path works. `BENCH_ONLY=sink_apply` measures only the in-process sink and
//! writes no results (for profiling). `BENCH_RUNS`, `BENCH_BACKLOG`, `BENCH_APPLY_EVENTS` and
//! `BENCH_E2E_SECS` shrink a run for development; the results then say they are not standard.

#![recursion_limit = "256"]

#[path = "pipeline/amqp.rs"]
mod amqp;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "pipeline/procs.rs"]
mod procs;
#[path = "pipeline/report.rs"]
mod report;
#[path = "pipeline/workload.rs"]
mod workload;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mongo_cdc::bridge::encode::{self, RowSource, token_cluster_time};
use mongo_cdc::event::{ChangeEvent, ClusterTime, Envelope, SnapshotMark};
use mongo_cdc::ml::{ModelKind, Task};
use mongo_cdc::mq::topology::Topology;
use mongo_cdc::sink::core::{Outcome, SinkCore};
use mongo_cdc::sink::features::FeatureSpec;
use mongo_cdc::sink::spec::ModelSpec;
use mongodb::Client;
use mongodb::bson::{Document, RawDocumentBuf, Timestamp, doc};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::options::{FullDocumentBeforeChangeType, FullDocumentType};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use self::amqp::{Confirms, QueueProbe};
use self::procs::{Meter, Usage, peak_rss_mb};
use self::workload::{COLLECTION, LABEL};

/// The longest any single step may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(180);

/// How often conditions are polled while a figure is timed.
const POLL: Duration = Duration::from_millis(20);

/// What to measure, and how much.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Repetitions of every figure (the median is reported).
    pub runs: usize,
    /// Changes in the backlog (raw read, bridge, sink through RabbitMQ) and messages per raw
    /// publish.
    pub backlog: u64,
    /// Events applied in process per run.
    pub apply_events: u64,
    /// Offered loads for the latency figure, inserts per second.
    pub rates: Vec<u32>,
    /// Seconds of paced inserts at each load.
    pub e2e_secs: u64,
}

impl Params {
    fn from_env() -> Self {
        let num = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        Self {
            runs: num("BENCH_RUNS", 3).max(1) as usize,
            backlog: num("BENCH_BACKLOG", 50_000),
            apply_events: num("BENCH_APPLY_EVENTS", 500_000),
            rates: vec![500, 2000],
            e2e_secs: num("BENCH_E2E_SECS", 10),
        }
    }

    /// The figures in `results.json` are only comparable at these settings.
    pub fn standard(&self) -> bool {
        self.runs == 3 && self.backlog == 50_000 && self.apply_events == 500_000 && self.e2e_secs == 10
    }
}

/// Commit-to-applied latency at one offered load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    /// Events the sink's percentiles cover (its window is the last 10,000).
    pub window: u64,
    /// Inserts per second actually issued (below the offered load if the database lagged).
    pub achieved_per_s: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    /// Messages per second for each confirm strategy.
    pub raw_publish_per_s: BTreeMap<String, f64>,
    /// A plain change stream (default options).
    pub raw_read_per_s: f64,
    /// The stream the bridge opens (`updateLookup`, `whenAvailable`, batches of 1000).
    pub raw_read_bridge_stream_per_s: f64,
    /// The bench's own minimal bridge: the bridge's stream, each change encoded as the bridge
    /// does, published pipelined with confirms; no checkpoints.
    pub raw_pipe_per_s: f64,
    pub bridge_per_s: f64,
    /// The bench's minimal snapshot: one `find` over the backlog's 50,000 documents in `_id`
    /// order (the order a resumable snapshot reads in), each encoded as a snapshot row and
    /// published pipelined with confirms.
    pub raw_find_pipe_per_s: f64,
    /// The same without the sort (natural order), for comparison.
    pub raw_find_unsorted_pipe_per_s: f64,
    /// The bridge snapshots the same documents (rows published and confirmed, per second).
    pub snapshot_per_s: f64,
    /// CPU microseconds the bridge spent per change while it drained the backlog.
    pub bridge_cpu_us_per_event: f64,
    /// Instructions the bridge executes per change (callgrind; measured in the first run
    /// only, since it does not vary).
    pub bridge_instructions_per_event: Option<f64>,
    /// Partitioned sinks draining 50,000 messages together, by number of sinks.
    pub partitioned_sinks_per_s: BTreeMap<u16, f64>,
    /// Offered load -> latency.
    pub e2e_latency_ms: BTreeMap<u32, Latency>,
    pub sink_apply_per_s: f64,
    /// The same events through a Hoeffding tree (`SINK_MODEL=hoeffding_tree`).
    pub sink_apply_tree_per_s: f64,
    /// The first [`FOREST_EVENTS`] of them through an adaptive random forest of 10 trees.
    pub sink_apply_forest_per_s: f64,
    pub sink_e2e_per_s: f64,
    /// Peak RSS of each bridge process: "backlog", "e2e-500", "e2e-2000".
    pub bridge_rss_mb: BTreeMap<String, f64>,
    /// Peak RSS of each sink process: "backlog", "e2e-500", "e2e-2000".
    pub sink_rss_mb: BTreeMap<String, f64>,
    /// Size of the checkpoint (records, model, recent ids) of the sink that drained the backlog.
    pub sink_checkpoint_mb: f64,
    /// Bytes of the `after` documents that sink holds, as JSON.
    pub sink_after_mb: f64,
    /// Size of one bridge message body.
    pub message_bytes: usize,
    /// Checkpoint writes the bridge made while draining the backlog.
    pub bridge_checkpoint_writes: u64,
    /// Wall time and CPU by process for the steps: "raw_read", "raw_read_bridge_stream",
    /// "raw_pipe", "bridge", "sink", "raw_publish/<strategy>".
    pub usage: BTreeMap<String, Usage>,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    if !bench {
        let bodies = workload::insert_bodies(1, 2_000);
        let rate = sink_apply(&bodies, ModelKind::Linear);
        let tree = sink_apply(&bodies, ModelKind::HoeffdingTree);
        let forest = sink_apply(&bodies, ModelKind::AdaptiveForest);
        println!(
            "pipeline bench: smoke check only (sink core applied {} events, {rate:.0}/s; tree {tree:.0}/s, forest \
             {forest:.0}/s); run `make bench` for figures",
            bodies.len()
        );
        // `sink_apply` asserts every event was applied and trained; a closing line CI can read.
        println!("smoke: 1 passed, 0 failed");
        return;
    }
    let params = Params::from_env();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only == "sink_apply" || only == "sink_apply_linear" {
        // For profiling the sink's core: no services, no result files (`sink_apply_linear`: the
        // linear model alone, so a profile shows nothing else).
        let bodies = workload::insert_bodies(42, params.apply_events);
        for _ in 0..params.runs {
            println!("sink_apply_per_s {:.0}", sink_apply(&bodies, ModelKind::Linear));
            if only == "sink_apply_linear" {
                continue;
            }
            println!("sink_apply_tree_per_s {:.0}", sink_apply(&bodies, ModelKind::HoeffdingTree));
            println!("sink_apply_forest_per_s {:.0}", sink_apply(forest_bodies(&bodies), ModelKind::AdaptiveForest));
        }
        return;
    }
    let load_start = report::loadavg();
    let outcome = rt.block_on(async {
        let p = params.clone();
        let result = tokio::spawn(async move { bench_all(&p).await }).await;
        if result.is_err() {
            cleanup().await;
        }
        result
    });
    match outcome {
        Ok(runs) => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
            let (json, md) = report::write(&dir, &params, &runs, &load_start).expect("write bench results");
            println!("\n{}", std::fs::read_to_string(&md).unwrap_or_default());
            println!("results: {} and {}", md.display(), json.display());
        }
        Err(e) => {
            eprintln!("pipeline bench failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Queues created so far, deleted again if the bench fails half-way.
static QUEUES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn queue_name(prefix: &str) -> String {
    let q = unique(prefix);
    QUEUES.lock().unwrap().push(q.clone());
    q
}

async fn cleanup() {
    let queues = std::mem::take(&mut *QUEUES.lock().unwrap());
    for q in queues {
        delete_topology("/", &q).await;
    }
}

async fn bench_all(params: &Params) -> Vec<Run> {
    eprintln!("pipeline bench: {params:?}");
    let bodies = Arc::new(workload::insert_bodies(42, params.apply_events));
    let mut runs = Vec::new();
    for i in 0..params.runs {
        eprintln!("-- run {}/{} (load average {})", i + 1, params.runs, report::loadavg());
        let start = Instant::now();
        let run = one_run(params, i, bodies.clone()).await;
        eprintln!("   took {:.0} s: {}", start.elapsed().as_secs_f64(), serde_json::to_string(&run).unwrap());
        runs.push(run);
    }
    runs
}

async fn one_run(params: &Params, index: usize, bodies: Arc<Vec<Vec<u8>>>) -> Run {
    let mut run = Run::default();
    let n = params.backlog;

    // The backlog: pin a bridge's starting point, stop it, then insert behind its back.
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("bench");
    let queue = queue_name("q_bench");
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let mut pin = start_bridge(&client, &benv).await;
    assert!(pin.terminate(LIMIT).await.success(), "bridge did not stop:\n{}", pin.output());
    let start_at = operation_time(&client).await;
    let coll = client.database(&db).collection::<Document>(COLLECTION);
    for first in (0..n).step_by(1000) {
        coll.insert_many(workload::documents(index as u64 + 1, first, 1000.min(n - first)))
            .await
            .expect("insert the backlog");
    }
    let last = last_write(&client, &db).await;
    eprintln!("   backlog of {n} inserted (last write at {last:?})");

    // Four readers of the same backlog; the order rotates, so a warm cache favours none.
    let servers = [("secantusdb", procs::secantus_pid(mongo.port)), ("rabbitmq", procs::rabbitmq_pid())];
    let mut order = [Reader::Plain, Reader::BridgeStream, Reader::Pipe, Reader::Bridge];
    let first = index % order.len();
    order.rotate_left(first);
    let mut template = Vec::new();
    for reader in order {
        match reader {
            Reader::Plain => {
                let meter = Meter::start(&servers);
                run.raw_read_per_s = raw_read(&client, &db, start_at, n, false).await.0;
                run.usage.insert("raw_read".into(), meter.stop(&[]));
            }
            Reader::BridgeStream => {
                let meter = Meter::start(&servers);
                (run.raw_read_bridge_stream_per_s, template) = raw_read(&client, &db, start_at, n, true).await;
                run.usage.insert("raw_read_bridge_stream".into(), meter.stop(&[]));
            }
            Reader::Pipe => {
                let meter = Meter::start(&servers);
                run.raw_pipe_per_s = raw_pipe(&client, &db, start_at, n).await;
                run.usage.insert("raw_pipe".into(), meter.stop(&[]));
            }
            Reader::Bridge => {
                let (rate, rss, usage) = bridge_drain(&client, &benv, n, last, &servers).await;
                run.bridge_per_s = rate;
                run.bridge_rss_mb.insert("backlog".into(), rss);
                run.usage.insert("bridge".into(), usage);
                run.bridge_checkpoint_writes = checkpoint_writes(&client, &benv).await;
            }
        }
    }
    eprintln!(
        "   raw read {:.0}/s (with the bridge's stream options {:.0}/s), minimal pipe {:.0}/s, bridge {:.0}/s",
        run.raw_read_per_s, run.raw_read_bridge_stream_per_s, run.raw_pipe_per_s, run.bridge_per_s
    );
    run.bridge_cpu_us_per_event =
        run.usage.get("bridge").and_then(|u| u.cpu_s.get("bridge").copied()).map_or(f64::NAN, |s| s / n as f64 * 1e6);
    run.message_bytes = template.len();

    // The backlog's documents, snapshotted: the bench's minimal find -> publish pipe, and the
    // bridge's snapshot, taking turns at going first.
    for step in if index.is_multiple_of(2) { ["find", "snapshot"] } else { ["snapshot", "find"] } {
        if step == "find" {
            let meter = Meter::start(&servers);
            run.raw_find_pipe_per_s = raw_find_pipe(&client, &db, n, true).await;
            run.usage.insert("raw_find_pipe".into(), meter.stop(&[]));
            run.raw_find_unsorted_pipe_per_s = raw_find_pipe(&client, &db, n, false).await;
        } else {
            let (rate, rss, usage) = snapshot_drain(&client, &mongo.uri(), &db, n, &servers).await;
            run.snapshot_per_s = rate;
            run.bridge_rss_mb.insert("snapshot".into(), rss);
            run.usage.insert("snapshot".into(), usage);
        }
    }
    eprintln!("   minimal find pipe {:.0}/s, snapshot {:.0}/s", run.raw_find_pipe_per_s, run.snapshot_per_s);

    // The bridge's 50,000 messages are the sink's backlog.
    let drained = sink_drain(&queue, n, &servers).await;
    run.sink_e2e_per_s = drained.per_s;
    run.usage.insert("sink".into(), drained.usage);
    run.sink_rss_mb.insert("backlog".into(), drained.rss_mb);
    run.sink_checkpoint_mb = drained.checkpoint_mb;
    run.sink_after_mb = after_bytes(&template) as f64 * n as f64 / MIB;
    delete_topology("/", &queue).await;
    drop(client);
    drop(mongo);
    eprintln!("   sink through RabbitMQ {:.0}/s", run.sink_e2e_per_s);

    // The broker's ceiling, with a message exactly like the bridge's.
    let ev: ChangeEvent = serde_json::from_slice(&template).expect("the template is a ChangeEvent");
    let props = Envelope::of(&ev).properties();
    for how in Confirms::ALL {
        let meter = Meter::start(&servers[1..]);
        let rate = raw_publish(&template, &props, n, how).await;
        run.usage.insert(format!("raw_publish/{}", how.name()), meter.stop(&[]));
        eprintln!("   raw publish {}: {rate:.0}/s", how.name());
        run.raw_publish_per_s.insert(how.name(), rate);
    }

    for sinks in 1..=3u16 {
        let rate = partitioned_sinks(&bodies[..bodies.len().min(n as usize)], sinks).await;
        eprintln!("   {sinks} partitioned sink(s): {rate:.0}/s");
        run.partitioned_sinks_per_s.insert(sinks, rate);
    }
    if index == 0 {
        run.bridge_instructions_per_event = bridge_instructions((2_000, 8_000)).await;
        eprintln!("   bridge instructions per change (callgrind): {:?}", run.bridge_instructions_per_event);
    }

    let b = bodies.clone();
    let (lin, tree, forest) = tokio::task::spawn_blocking(move || {
        (
            sink_apply(&b, ModelKind::Linear),
            sink_apply(&b, ModelKind::HoeffdingTree),
            sink_apply(forest_bodies(&b), ModelKind::AdaptiveForest),
        )
    })
    .await
    .expect("sink apply");
    (run.sink_apply_per_s, run.sink_apply_tree_per_s, run.sink_apply_forest_per_s) = (lin, tree, forest);
    eprintln!("   sink apply in process {lin:.0}/s (tree {tree:.0}/s, forest {forest:.0}/s)");

    let mongo = Secantus::in_memory().await;
    for &rate in &params.rates {
        let (lat, bridge_rss, sink_rss) = e2e_latency(&mongo, index as u64, rate, params.e2e_secs).await;
        eprintln!("   e2e at {rate}/s: {lat:?}");
        run.e2e_latency_ms.insert(rate, lat);
        run.bridge_rss_mb.insert(format!("e2e-{rate}"), bridge_rss);
        run.sink_rss_mb.insert(format!("e2e-{rate}"), sink_rss);
    }
    run
}

const MIB: f64 = 1024.0 * 1024.0;

/// The server's operation time now (before the backlog's inserts).
async fn operation_time(client: &Client) -> Timestamp {
    let mut session = client.start_session().await.expect("session");
    client.database("admin").run_command(doc! {"ping": 1}).session(&mut session).await.expect("ping");
    session.operation_time().expect("the server reports operationTime")
}

/// The cluster time of the newest write to the bench collection of `db`.
async fn last_write(client: &Client, db: &str) -> ClusterTime {
    let entry = client
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {"ns": format!("{db}.{COLLECTION}")})
        .sort(doc! {"$natural": -1})
        .await
        .expect("read the oplog")
        .expect("the backlog is in the oplog");
    let ts = entry.get_timestamp("ts").expect("oplog entries have ts");
    ClusterTime { t: ts.time, i: ts.increment }
}

/// Writes to the bridge's checkpoint document so far (each is an oplog entry).
async fn checkpoint_writes(client: &Client, env: &Env) -> u64 {
    let ns = format!("{}.checkpoints", env.get("CDC_STATE_DATABASE"));
    client.database("local").collection::<Document>("oplog.rs").count_documents(doc! {"ns": ns}).await.unwrap_or(0)
}

/// Bytes of the `after` document of a message body, as JSON.
fn after_bytes(body: &[u8]) -> usize {
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
    v["after"].to_string().len()
}

/// Who reads the backlog.
#[derive(Debug, Clone, Copy)]
enum Reader {
    /// The driver, a change stream with default options.
    Plain,
    /// The driver, the change stream the bridge opens.
    BridgeStream,
    /// The bench's minimal bridge (read, encode, publish; no checkpoints).
    Pipe,
    /// The bridge binary.
    Bridge,
}

/// The driver reads the `n` changes after `start_at` from a change stream on `db` (with
/// default options, or opened as the bridge opens its own) and publishes nothing. Returns
/// changes per second and the first change as the bridge would publish it.
async fn raw_read(client: &Client, db: &str, start_at: Timestamp, n: u64, bridge_stream: bool) -> (f64, Vec<u8>) {
    let start = Instant::now();
    let mut stream = open_stream(client, db, start_at, bridge_stream).await;
    let mut first = None;
    let mut seen = 0;
    while seen < n {
        match stream.next_if_any().await.expect("read the change stream") {
            Some(change) => {
                seen += 1;
                first.get_or_insert(change);
            }
            None => assert!(start.elapsed() < LIMIT, "raw read saw {seen} of {n} changes in {LIMIT:?}"),
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let ev =
        encode::change(&first.expect("a change"), &Default::default()).expect("a contract change").expect("an insert");
    (rate, ev.to_json())
}

async fn open_stream(
    client: &Client,
    db: &str,
    start_at: Timestamp,
    bridge_stream: bool,
) -> ChangeStream<ChangeStreamEvent<Document>> {
    let database = client.database(db);
    let watch = database.watch().start_at_operation_time(start_at);
    // As `src/bridge/mod.rs` opens it with `MONGO_COLLECTIONS` empty.
    let watch = if bridge_stream {
        watch
            .full_document(FullDocumentType::UpdateLookup)
            .full_document_before_change(FullDocumentBeforeChangeType::WhenAvailable)
            .batch_size(1000)
    } else {
        watch
    };
    watch.await.expect("open a change stream")
}

/// The bench's minimal bridge: a reader task turns the bridge's stream into messages exactly
/// as the bridge does; they are published pipelined (64 publishes in flight, 512 unconfirmed)
/// to a fresh queue. No checkpoints. Changes per second, from opening the stream to the last
/// confirm.
async fn raw_pipe(client: &Client, db: &str, start_at: Timestamp, n: u64) -> f64 {
    let queue = queue_name("q_bench_pipe");
    let (conn, ch) = amqp::confirm_channel("/").await;
    Topology::new(&queue).declare(&ch).await.expect("declare the queue");
    let start = Instant::now();
    let mut stream = open_stream(client, db, start_at, true).await.with_type::<RawDocumentBuf>();
    let (tx, rx) = tokio::sync::mpsc::channel::<(Vec<u8>, lapin::BasicProperties)>(512);
    let reader = tokio::spawn(async move {
        let mut seen = 0;
        while seen < n {
            if let Some(change) = stream.next_if_any().await.expect("read the change stream") {
                seen += 1;
                // Encoded as the bridge encodes it: straight from raw BSON.
                let msg = encode::raw_change(&change).expect("a contract change").expect("an insert");
                let body = msg.body(&Default::default(), Default::default()).expect("a body");
                if tx.send((body, msg.envelope().properties())).await.is_err() {
                    return;
                }
            }
        }
    });
    let messages = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let published = tokio::time::timeout(LIMIT, amqp::publish_stream(&ch, &queue, messages, 64, 512))
        .await
        .expect("the minimal pipe finished in time");
    let secs = start.elapsed().as_secs_f64();
    reader.await.expect("reader");
    assert_eq!(published, n);
    let mut probe = QueueProbe::connect("/").await;
    assert_eq!(probe.len(&queue).await, Some(n as u32), "every confirmed message is in the queue");
    probe.close().await;
    let _ = conn.close(200, "done".into()).await;
    delete_topology("/", &queue).await;
    n as f64 / secs
}

/// Start the bridge on its pinned checkpoint and time it from spawn until the queue holds
/// all `n` messages and the checkpoint covers the last change. Returns changes/s, peak MiB and
/// the CPU of the bridge and of the `servers`.
async fn bridge_drain(
    client: &Client,
    env: &Env,
    n: u64,
    last: ClusterTime,
    servers: &[(&'static str, Option<u32>)],
) -> (f64, f64, Usage) {
    let queue = env.get("RABBITMQ_QUEUE_NAME").to_string();
    let mut probe = QueueProbe::connect("/").await;
    let (mut published, mut checkpointed) = (false, false);
    let meter = Meter::start(servers);
    let start = Instant::now();
    let mut bridge = Proc::start(&["bridge"], env);
    while !(published && checkpointed) {
        bridge.assert_running();
        assert!(start.elapsed() < LIMIT, "bridge did not drain {n} changes in {LIMIT:?}:\n{}", bridge.output());
        tokio::time::sleep(POLL).await;
        if !published {
            published = probe.len(&queue).await.is_some_and(|c| u64::from(c) >= n);
        }
        if !checkpointed {
            checkpointed = checkpoint_time(client, env).await.is_some_and(|t| t >= last);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_mb(bridge.pid());
    let usage = meter.stop(&[("bridge", bridge.pid())]);
    assert!(bridge.terminate(LIMIT).await.success(), "bridge did not stop:\n{}", bridge.output());
    assert_eq!(probe.len(&queue).await, Some(n as u32), "exactly one message per change");
    probe.close().await;
    (n as f64 / secs, rss, usage)
}

/// The bench's minimal snapshot: one `find` over the `n` documents of the backlog's
/// collection (in `_id` order if `sorted`), each encoded as a snapshot row in a reader task and
/// published with the bridge's properties, 64 publishes in flight and at most 512
/// unconfirmed, to a fresh queue. Rows per second, from the `find` to the last confirm.
async fn raw_find_pipe(client: &Client, db: &str, n: u64, sorted: bool) -> f64 {
    let queue = queue_name("q_bench_find");
    let (conn, ch) = amqp::confirm_channel("/").await;
    Topology::new(&queue).declare(&ch).await.expect("declare the queue");
    let start = Instant::now();
    let order = if sorted {
        doc! {"_id": 1}
    } else {
        doc! {}
    };
    let mut cursor = client
        .database(db)
        .collection::<RawDocumentBuf>(COLLECTION)
        .find(doc! {})
        .sort(order)
        .batch_size(1000)
        .await
        .expect("find");
    let (tx, rx) = tokio::sync::mpsc::channel::<(Vec<u8>, lapin::BasicProperties)>(512);
    let db_name = db.to_string();
    let reader = tokio::spawn(async move {
        use futures::TryStreamExt;
        let at = RowSource {
            snapshot_id: "bench",
            db: &db_name,
            collection: COLLECTION,
            read_at: ClusterTime::default(),
            ts_ms: 0,
        };
        while let Some(d) = cursor.try_next().await.expect("read the collection") {
            let msg = encode::raw_row(&d, &at, SnapshotMark::True).expect("a row");
            let body = msg.body(&Default::default(), Default::default()).expect("a body");
            if tx.send((body, msg.envelope().properties())).await.is_err() {
                return;
            }
        }
    });
    let messages = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let published = tokio::time::timeout(LIMIT, amqp::publish_stream(&ch, &queue, messages, 64, 512))
        .await
        .expect("the minimal find pipe finished in time");
    let secs = start.elapsed().as_secs_f64();
    reader.await.expect("reader");
    assert_eq!(published, n);
    let _ = conn.close(200, "done".into()).await;
    delete_topology("/", &queue).await;
    n as f64 / secs
}

/// Start a bridge with no checkpoint on `db` (its `n` documents) and time it from spawn until
/// the queue holds every row (and the collection's two control messages) and the checkpoint
/// says the snapshot is complete. Returns rows/s, peak MiB and the CPU of the bridge and of
/// the `servers`.
async fn snapshot_drain(
    client: &Client,
    uri: &str,
    db: &str,
    n: u64,
    servers: &[(&'static str, Option<u32>)],
) -> (f64, f64, Usage) {
    let queue = queue_name("q_bench_snap");
    let env = Env::bridge(uri, db, &queue);
    let mut probe = QueueProbe::connect("/").await;
    let meter = Meter::start(servers);
    let start = Instant::now();
    let mut bridge = Proc::start(&["bridge"], &env);
    let (mut published, mut complete) = (false, false);
    while !(published && complete) {
        bridge.assert_running();
        assert!(start.elapsed() < LIMIT, "the snapshot of {n} documents took over {LIMIT:?}:\n{}", bridge.output());
        tokio::time::sleep(POLL).await;
        if !published {
            published = probe.len(&queue).await.is_some_and(|c| u64::from(c) >= n + 2);
        }
        if published && !complete {
            complete = checkpoint(client, &env).await.is_some_and(|c| !c.contains_key("snapshot"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_mb(bridge.pid());
    let usage = meter.stop(&[("bridge", bridge.pid())]);
    assert!(bridge.terminate(LIMIT).await.success(), "bridge did not stop:\n{}", bridge.output());
    assert_eq!(probe.len(&queue).await, Some(n as u32 + 2), "one row per document, and a start and an end");
    probe.close().await;
    delete_topology("/", &queue).await;
    (n as f64 / secs, rss, usage)
}

/// Instructions the bridge executes per change: it drains backlogs of two sizes under
/// `valgrind --tool=callgrind`, and the difference of the totals over the difference of the
/// sizes is the cost of one change (start-up and idle cost cancel out). Instruction counts do
/// not move with the machine's load, unlike CPU time. `None` without valgrind.
async fn bridge_instructions(sizes: (u64, u64)) -> Option<f64> {
    let valgrind = std::process::Command::new("valgrind").arg("--version").output().ok()?;
    if !valgrind.status.success() {
        return None;
    }
    let mut totals = Vec::new();
    for n in [sizes.0, sizes.1] {
        let mongo = Secantus::in_memory().await;
        let client = mongo.client().await;
        let db = unique("bench_cg");
        let queue = queue_name("q_bench_cg");
        let env = Env::bridge(&mongo.uri(), &db, &queue);
        let mut pin = start_bridge(&client, &env).await;
        assert!(pin.terminate(LIMIT).await.success(), "bridge did not stop:\n{}", pin.output());
        let coll = client.database(&db).collection::<Document>(COLLECTION);
        for first in (0..n).step_by(1000) {
            coll.insert_many(workload::documents(7, first, 1000.min(n - first))).await.expect("insert the backlog");
        }
        let last = last_write(&client, &db).await;
        let out = tempfile::tempdir().unwrap();
        let file = out.path().join("callgrind.out");
        let flag = format!("--callgrind-out-file={}", file.display());
        let mut bridge = Proc::start_under(&["valgrind", "--tool=callgrind", &flag], &["bridge"], &env);
        let mut probe = QueueProbe::connect("/").await;
        let start = Instant::now();
        loop {
            bridge.assert_running();
            assert!(
                start.elapsed() < LIMIT * 2,
                "the bridge under callgrind did not drain {n} changes:\n{}",
                bridge.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            let published = probe.len(&queue).await.is_some_and(|c| u64::from(c) >= n);
            if published && checkpoint_time(&client, &env).await.is_some_and(|t| t >= last) {
                break;
            }
        }
        probe.close().await;
        assert!(bridge.terminate(LIMIT * 2).await.success(), "bridge did not stop:\n{}", bridge.output());
        let text = std::fs::read_to_string(&file).ok()?;
        let total: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))?
            .trim()
            .parse()
            .ok()?;
        totals.push(total);
        delete_topology("/", &queue).await;
    }
    Some((totals[1] - totals[0]) / (sizes.1 - sizes.0) as f64)
}

/// `sinks` partitioned sinks drain `bodies` together: the messages go through a
/// consistent-hash exchange (each with its key header, as the bridge sends them) into
/// `sinks` partition queues, then the sinks start and are timed until they have applied
/// them all. Messages per second, all sinks together.
async fn partitioned_sinks(bodies: &[Vec<u8>], sinks: u16) -> f64 {
    let (queue, exchange) = (queue_name("q_bench_parts"), unique("x_bench_parts"));
    let mut rabbit = rabbit_settings(&queue);
    rabbit.rabbitmq_exchange = exchange.clone();
    rabbit.rabbitmq_partitions = sinks;
    let topology = Topology::from_settings(&rabbit, None);
    let (conn, ch) = amqp::confirm_channel("/").await;
    topology.declare(&ch).await.expect("declare the partitions");
    let messages: Vec<(Vec<u8>, lapin::BasicProperties)> = bodies
        .iter()
        .map(|b| {
            let ev: ChangeEvent = serde_json::from_slice(b).expect("a ChangeEvent");
            (b.clone(), Envelope::of(&ev).properties())
        })
        .collect();
    let n = messages.len() as u64;
    let published = amqp::publish_to(&ch, &exchange, "", futures::stream::iter(messages), 64, 4096).await;
    assert_eq!(published, n);

    let states: Vec<_> = (0..sinks).map(|_| tempfile::tempdir().unwrap()).collect();
    let envs: Vec<Env> = (0..sinks)
        .map(|k| {
            sink_env(&queue, states[usize::from(k)].path(), &workload::features_env(), LABEL)
                .set("RABBITMQ_EXCHANGE", &exchange)
                .set("RABBITMQ_PARTITIONS", &sinks.to_string())
                .set("SINK_PARTITION", &k.to_string())
        })
        .collect();
    let start = Instant::now();
    let mut procs: Vec<Proc> = envs.iter().map(|e| Proc::start(&["sink"], e)).collect();
    loop {
        procs.iter_mut().for_each(Proc::assert_running);
        assert!(start.elapsed() < LIMIT, "{sinks} sinks did not apply {n} events in {LIMIT:?}");
        tokio::time::sleep(POLL).await;
        let mut applied = 0;
        for e in &envs {
            applied += sink_get(e, "/stats").await.and_then(|s| s["events_applied"].as_u64()).unwrap_or(0);
        }
        if applied >= n {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    for p in &mut procs {
        assert!(p.terminate(LIMIT).await.success(), "sink did not stop:\n{}", p.output());
    }
    let _ = topology.delete(&ch).await;
    for q in mongo_cdc::mq::topology::partition_queues(&queue, sinks) {
        delete_topology("/", &format!("{q}.alerts")).await;
    }
    let _ = conn.close(200, "done".into()).await;
    n as f64 / secs
}

/// Settings for the local broker, with the defaults the tests use, feeding `queue`.
fn rabbit_settings(queue: &str) -> mongo_cdc::config::RabbitSettings {
    envy::from_iter([("RABBITMQ_QUEUE_NAME".to_string(), queue.to_string())]).expect("the default settings parse")
}

/// The cluster time of the bridge's checkpoint.
async fn checkpoint_time(client: &Client, env: &Env) -> Option<ClusterTime> {
    let doc = checkpoint(client, env).await?;
    let token: ResumeToken = mongodb::bson::from_bson(doc.get("resume_token")?.clone()).ok()?;
    token_cluster_time(&token)
}

/// What the sink that drained a queue measured.
struct Drained {
    per_s: f64,
    rss_mb: f64,
    checkpoint_mb: f64,
    usage: Usage,
}

/// Start a sink on `queue` (holding `n` messages) and time it from spawn until it has
/// applied all of them.
async fn sink_drain(queue: &str, n: u64, servers: &[(&'static str, Option<u32>)]) -> Drained {
    let state = tempfile::tempdir().unwrap();
    let env = sink_env(queue, state.path(), &workload::features_env(), LABEL);
    let meter = Meter::start(servers);
    let start = Instant::now();
    let mut sink = Proc::start(&["sink"], &env);
    let stats = loop {
        sink.assert_running();
        assert!(start.elapsed() < LIMIT, "sink did not apply {n} events in {LIMIT:?}:\n{}", sink.output());
        tokio::time::sleep(POLL).await;
        if let Some(s) = sink_get(&env, "/stats").await.filter(|s| s["events_applied"].as_u64().unwrap_or(0) >= n) {
            break s;
        }
    };
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_mb(sink.pid());
    let usage = meter.stop(&[("sink", sink.pid())]);
    assert_eq!(stats["events_applied"].as_u64(), Some(n), "{stats}");
    assert_eq!(stats["model"]["trained"].as_u64(), Some(n), "{stats}");
    assert_eq!(stats["dead_lettered"].as_u64(), Some(0), "{stats}");
    assert!(sink.terminate(LIMIT).await.success(), "sink did not stop:\n{}", sink.output());
    assert_eq!(queue_len("/", queue).await, Some(0), "the sink acknowledged everything");
    let file = state.path().join(format!("{queue}.redb"));
    let checkpoint_mb = std::fs::metadata(&file).map_or(f64::NAN, |m| m.len() as f64 / MIB);
    Drained { per_s: n as f64 / secs, rss_mb: rss, checkpoint_mb, usage }
}

/// Publish `n` copies of `body` to a fresh queue (declared like the bridge's) with confirm
/// strategy `how`; messages per second.
async fn raw_publish(body: &[u8], props: &lapin::BasicProperties, n: u64, how: Confirms) -> f64 {
    let queue = queue_name("q_bench_pub");
    let (conn, ch) = amqp::confirm_channel("/").await;
    Topology::new(&queue).declare(&ch).await.expect("declare the queue");
    let took = amqp::publish_n(&ch, &queue, body, props, n as usize, how).await;
    let mut probe = QueueProbe::connect("/").await;
    assert_eq!(probe.len(&queue).await, Some(n as u32), "every confirmed message is in the queue");
    probe.close().await;
    let _ = conn.close(200, "done".into()).await;
    delete_topology("/", &queue).await;
    n as f64 / took.as_secs_f64()
}

/// Events the forest figure applies: a forest learns ten trees per event, so the full set
/// would take minutes per run.
pub const FOREST_EVENTS: usize = 100_000;

fn forest_bodies(bodies: &[Vec<u8>]) -> &[Vec<u8>] {
    &bodies[..bodies.len().min(FOREST_EVENTS)]
}

/// Apply pre-serialised insert events to a fresh sink core training one model of `kind`
/// (defaults); events per second.
fn sink_apply(bodies: &[Vec<u8>], kind: ModelKind) -> f64 {
    let features = workload::FEATURES.iter().map(|f| FeatureSpec::parse(f).expect("a feature")).collect();
    let spec = ModelSpec::single(Task::Classification, kind, features, LABEL.into(), Vec::new());
    let mut core = SinkCore::new(vec![spec], 10_000).expect("model");
    let start = Instant::now();
    for body in bodies {
        let outcome = core.apply_bytes(body);
        assert!(matches!(outcome, Outcome::Applied { trained: true, .. }), "{outcome:?}");
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = core.stats();
    assert_eq!(stats.counters.events_applied, bodies.len() as u64);
    assert_eq!(stats.model.stats.trained(), bodies.len() as u64);
    bodies.len() as f64 / secs
}

/// Bridge and sink running; inserts paced at `rate` per second for `secs`; then the sink's
/// commit-to-applied percentiles. Returns (latency, bridge peak MiB, sink peak MiB).
async fn e2e_latency(mongo: &Secantus, seed: u64, rate: u32, secs: u64) -> (Latency, f64, f64) {
    let client = Client::with_uri_str(format!("{}&maxPoolSize=64", mongo.uri())).await.expect("client");
    let db = unique("bench_e2e");
    let queue = queue_name("q_bench_e2e");
    let state = tempfile::tempdir().unwrap();
    let benv = Env::bridge(&mongo.uri(), &db, &queue);
    let senv = sink_env(&queue, state.path(), &workload::features_env(), LABEL);
    let mut bridge = start_bridge(&client, &benv).await;
    let mut sink = start_sink(&senv).await;

    let n = u64::from(rate) * secs;
    let mut docs = workload::documents(seed + 100, 0, n).into_iter();
    let coll = client.database(&db).collection::<Document>(COLLECTION);
    // Open loop: every millisecond, insert what is due; a slow database shows as a lower
    // achieved rate (and, with 32 inserts outstanding, as back-pressure).
    let outstanding = Arc::new(Semaphore::new(32));
    let mut inserts = JoinSet::new();
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let due = ((start.elapsed().as_secs_f64() * f64::from(rate)) as u64 + 1).min(n);
        if due > sent {
            let batch: Vec<Document> = docs.by_ref().take((due - sent) as usize).collect();
            let permit = outstanding.clone().acquire_owned().await.expect("semaphore");
            let coll = coll.clone();
            inserts.spawn(async move {
                coll.insert_many(batch).await.expect("paced insert");
                drop(permit);
            });
            sent = due;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while let Some(done) = inserts.join_next().await {
        done.expect("insert task");
    }
    let achieved_per_s = n as f64 / start.elapsed().as_secs_f64();

    let s = wait_stats(&senv, "every paced insert applied", LIMIT, |s| s["events_applied"].as_u64().unwrap_or(0) >= n)
        .await;
    let lag = &s["lag_ms"];
    let ms = |k: &str| lag[k].as_f64().unwrap_or(f64::NAN);
    let latency = Latency {
        p50: ms("p50"),
        p95: ms("p95"),
        p99: ms("p99"),
        window: lag["count"].as_u64().unwrap_or(0),
        achieved_per_s,
    };
    let (bridge_rss, sink_rss) = (peak_rss_mb(bridge.pid()), peak_rss_mb(sink.pid()));
    assert!(sink.terminate(LIMIT).await.success(), "sink did not stop:\n{}", sink.output());
    assert!(bridge.terminate(LIMIT).await.success(), "bridge did not stop:\n{}", bridge.output());
    delete_topology("/", &queue).await;
    (latency, bridge_rss, sink_rss)
}
