//! `mongo-cdc demo`: the whole product in one command. On the local services it resets a demo
//! database and queue, seeds a synthetic churn dataset, runs the bridge and the sink in
//! process (the bridge's snapshot carries the seeded customers), updates and deletes some
//! customers while it runs, shows live progress and the sink's stats. The dashboard's URL
//! comes first; bridge and sink then stay up until Ctrl-C (or, with `--exit`, stop once the
//! dataset has streamed, for scripts).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mongodb::bson::{Document, doc};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::bridge::settings::{BridgeSettings, SnapshotMode};
use crate::config::{MongoSettings, RabbitSettings};
use crate::db::Mongo;
use crate::ml::{ModelKind, Task};
use crate::mq::Rabbit;
use crate::mq::topology::Topology;
use crate::sink::Sink;
use crate::sink::core::Stats;
use crate::sink::features::FeatureSpec;
use crate::sink::settings::SinkSettings;
use crate::sink::spec::ModelSpec;

/// The demo's own names, so it never touches the user's data.
const DB: &str = "mongo_cdc_demo";
const QUEUE: &str = "mongo_cdc_demo";
const CDC_NAME: &str = "demo";
const COLLECTION: &str = "customers";
/// The features and label of the demo dataset (also the `.env.example` defaults).
pub const FEATURES: &str = "tenure_months,monthly_spend,support_tickets,premium";
/// See [`FEATURES`].
pub const LABEL: &str = "churned";
/// The demo's aggregates: op counts per collection per minute, and the customers' spend and
/// support tickets by plan tier, per minute.
const AGGREGATES: &str = "*:1m; customers:1m:by=premium:mean(monthly_spend),sum(support_tickets)";

/// How much to write.
#[derive(Debug, Clone)]
pub struct DemoPlan {
    /// Customers inserted.
    pub count: u64,
    /// Customers updated afterwards (usage changes, and so may their churn).
    pub updates: u64,
    /// Customers deleted afterwards.
    pub deletes: u64,
    /// Where the sink's HTTP API (and dashboard) listens.
    pub http_addr: std::net::SocketAddr,
    /// Stop once the dataset has streamed, instead of waiting for Ctrl-C.
    pub exit: bool,
    /// Pause between two changes, so someone watching the dashboard sees the figures move.
    pub pace: Duration,
}

/// Run the demo against the services in the environment's settings.
pub async fn run(plan: &DemoPlan) -> anyhow::Result<Stats> {
    let mongo_env = MongoSettings::from_env()?;
    // The environment's servers and bridge settings, with the demo's own names.
    let mut bridge = BridgeSettings::from_env()?;
    bridge.mongo = MongoSettings {
        mongo_database_name: DB.into(),
        mongo_collections: String::new(),
        mongo_exclude_collections: String::new(),
        ..mongo_env.clone()
    };
    bridge.rabbit = RabbitSettings {
        rabbitmq_queue_name: QUEUE.into(),
        rabbitmq_exchange: String::new(),
        rabbitmq_partitions: 0,
        ..bridge.rabbit.clone()
    };
    bridge.cdc.cdc_name = CDC_NAME.into();
    bridge.cdc.cdc_snapshot_mode = SnapshotMode::Initial;
    bridge.exclude_fields = Default::default();
    let features: Vec<FeatureSpec> = crate::config::split_list(FEATURES)
        .iter()
        .map(|f| FeatureSpec::parse(f))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let linear = ModelSpec::single(Task::Classification, ModelKind::Linear, features, LABEL.into(), Vec::new());
    // A second model on the same stream, so the dashboard compares two.
    let tree = ModelSpec { name: "churn_tree".into(), kind: ModelKind::HoeffdingTree, ..linear.clone() };
    let sink = SinkSettings {
        rabbit: bridge.rabbit.clone(),
        models: vec![linear, tree],
        models_file: None,
        partition: None,
        stream_start: "first".into(),
        state_dir: ".local/demo-sink".into(),
        checkpoint_every: 1000,
        http_addr: plan.http_addr,
        prefetch: 512,
        analytics: crate::sink::analytics::AnalyticsSettings {
            aggregates: crate::sink::analytics::spec::parse_list(AGGREGATES)
                .map_err(|m| anyhow::anyhow!(m.join("; ")))?,
            ..Default::default()
        },
        bridge_url: bridge.http_addr.map(|a| format!("http://{a}")),
        decoder: Default::default(),
        mirrors: Default::default(),
        rules: Vec::new(),
        schema_warmup: crate::sink::schema::DEFAULT_SCHEMA_WARMUP,
    };

    drive(plan, &Mongo::shared(&mongo_env.mongo_database_host), bridge, sink).await
}

async fn drive(plan: &DemoPlan, mongo: &Mongo, bridge: BridgeSettings, sink: SinkSettings) -> anyhow::Result<Stats> {
    println!("Dashboard: http://{}/  (open it now: it fills in as the data streams)", plan.http_addr);
    println!("Resetting the demo database `{DB}` and queue `{QUEUE}`...");
    mongo.ping().await?;
    let client = mongo.client().await?.clone();
    client.database(DB).drop().await?;
    let checkpoints = client.database(&bridge.cdc.cdc_state_database).collection::<Document>("checkpoints");
    checkpoints.delete_one(doc! {"_id": CDC_NAME}).await?;
    let rabbit = Rabbit::shared(&bridge.rabbit);
    rabbit.check().await?;
    Topology::new(QUEUE).delete(&rabbit.channel().await?).await?;
    let _ = std::fs::remove_dir_all(&sink.state_dir);

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>9} [{bar:40}] {pos}/{len} {msg}")
        .expect("static template")
        .progress_chars("=> ");
    let updates = plan.updates.min(plan.count);
    let deletes = plan.deletes.min(plan.count);
    let total = plan.count + updates + deletes;

    // The customers exist before the bridge starts: its snapshot brings them to the sink.
    let coll = client.database(DB).collection::<Document>(COLLECTION);
    let seeded = bars.add(ProgressBar::new(plan.count).with_style(style.clone()).with_prefix("seeded"));
    let mut rng = SmallRng::seed_from_u64(42);
    let mut start = 0;
    while start < plan.count {
        let n = 1000.min(plan.count - start);
        let docs: Vec<Document> = (start..start + n).map(|i| customer(&mut rng, i)).collect();
        coll.insert_many(docs).await.context("inserting demo customers")?;
        seeded.inc(n);
        start += n;
    }
    seeded.finish();

    // Interactive: Ctrl-C drains and stops bridge and sink at any time. With --exit, Ctrl-C
    // ends the process at once, as it always did.
    let stop = if plan.exit { CancellationToken::new() } else { crate::shutdown::on_signals() };
    let bridge_task = tokio::spawn(crate::bridge::run(bridge, stop.clone()));
    let sink = Sink::open(sink)?;
    let core = sink.core();
    let sink_task = tokio::spawn(sink.serve(stop.clone()));
    bars.println(format!(
        "Bridge and sink started; the bridge snapshots the {} customers, the sink serves http://{}/ (dashboard) and /stats",
        plan.count, plan.http_addr
    ))?;

    // The bridge is watching once it has pinned its starting point.
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoints.find_one(doc! {"_id": CDC_NAME}).await?.is_none() {
        if bridge_task.is_finished() || Instant::now() > deadline {
            stop.cancel();
            let err =
                bridge_task.await?.err().map(|e| e.to_string()).unwrap_or_else(|| "it did not start in time".into());
            bail!("the bridge did not start: {err}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let written = bars.add(ProgressBar::new(updates + deletes).with_style(style.clone()).with_prefix("changed"));
    let learned = bars.add(ProgressBar::new(total).with_style(style).with_prefix("applied"));
    let watch = {
        let (core, learned, stop) = (core.clone(), learned.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let s = crate::sink::http::lock(&core).stats();
                learned.set_position(s.counters.events_applied);
                learned.set_message(quality(&s));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // While the snapshot runs: usage changes (and so may churn), and some customers leave.
    for i in 0..updates {
        let c = customer(&mut rng, i);
        coll.replace_one(doc! {"_id": i as i64}, c).await.context("updating a demo customer")?;
        written.inc(1);
        pause(plan.pace, &stop).await;
    }
    for i in (plan.count - deletes)..plan.count {
        coll.delete_one(doc! {"_id": i as i64}).await.context("deleting a demo customer")?;
        written.inc(1);
        pause(plan.pace, &stop).await;
    }
    written.finish();

    // Done when the snapshot's end and the last delete have both been applied.
    let last_deleted = (deletes > 0).then(|| (plan.count - 1).to_string());
    let deadline = Instant::now() + Duration::from_secs(180);
    let stats = loop {
        let (s, deleted) = {
            let core = crate::sink::http::lock(&core);
            let deleted =
                last_deleted.as_ref().is_none_or(|k| core.record(COLLECTION, k).is_some_and(|r| r.doc.is_none()));
            (core.stats(), deleted)
        };
        if s.counters.snapshot_controls >= 2 && deleted && s.records == plan.count - deletes {
            break s;
        }
        if stop.is_cancelled() {
            break s;
        }
        if sink_task.is_finished() || bridge_task.is_finished() || Instant::now() > deadline {
            stop.cancel();
            bail!("the stream stalled at {} changes applied ({} records)", s.counters.events_applied, s.records);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    learned.set_length(stats.counters.events_applied);
    learned.set_position(stats.counters.events_applied);
    learned.finish_with_message(quality(&stats));
    watch.abort();
    println!("\nThe sink's /stats once the dataset has streamed:\n{}", serde_json::to_string_pretty(&stats)?);
    if !plan.exit && !stop.is_cancelled() {
        println!(
            "\nThe dataset has streamed. The dashboard stays up at http://{}/ ; Ctrl-C stops the bridge and the sink.",
            plan.http_addr
        );
        stop.cancelled().await;
    }

    stop.cancel();
    bridge_task.await?.context("bridge")?;
    sink_task.await?.context("sink")?;
    Ok(stats)
}

/// Wait `pace` between two writes (returns at once when stopping).
async fn pause(pace: Duration, stop: &CancellationToken) {
    if !pace.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(pace) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// One customer. Churn follows a noisy logistic rule of the four features, so it is learnable
/// but not perfectly.
fn customer(rng: &mut SmallRng, id: u64) -> Document {
    let tenure: i32 = rng.random_range(0..72);
    let spend: f64 = (rng.random_range(20.0..120.0_f64) * 100.0).round() / 100.0;
    let tickets: i32 = rng.random_range(0..9);
    let premium = rng.random_bool(0.3);
    let noise: f64 = rng.random_range(-1.0..1.0);
    let score =
        -1.7 - 0.08 * f64::from(tenure) + 0.04 * spend + 0.6 * f64::from(tickets) - 1.2 * f64::from(u8::from(premium));
    doc! {
        "_id": id as i64,
        "tenure_months": tenure,
        "monthly_spend": spend,
        "support_tickets": tickets,
        "premium": premium,
        "churned": score + noise > 0.0,
    }
}

fn quality(s: &Stats) -> String {
    use crate::ml::MetricSummary;
    let Some(m) = s.model.stats.supervised() else { return String::new() };
    match (&m.progressive, &m.rolling_1000) {
        (
            MetricSummary::Classification { accuracy: Some(p), .. },
            MetricSummary::Classification { accuracy: Some(r), .. },
        ) => {
            format!("accuracy {p:.3} (last 1000: {r:.3})")
        }
        _ => String::new(),
    }
}
