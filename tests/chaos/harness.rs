//! The chaos harness: the result row, a retrying writer, queue draining and tallies, settling
//! with deadlines, RSS sampling, the RabbitMQ restart guard, and the report file.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use mongodb::Client;
use mongodb::bson::{Bson, Document, doc};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::common::{Env, Proc, Rng, amqp_uri, queue_len, sink_get, unique};

/// One line of the results table.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// What was done.
    pub scenario: String,
    /// Changes (or good messages) written.
    pub written: u64,
    /// Distinct keys that arrived (bridge rows) or events applied once (sink rows).
    pub delivered: u64,
    /// `written - delivered`.
    pub lost: u64,
    /// Messages beyond the first per event id (sink rows: redeliveries recognised and skipped).
    pub duplicated: u64,
    /// Model updates (sink rows).
    pub trained: Option<u64>,
    /// Distinct labelled events written (sink rows).
    pub distinct_labelled: Option<u64>,
    /// What happened, in order.
    pub notes: Vec<String>,
    /// Every target of the row was met.
    pub pass: bool,
    /// Wall time of the scenario.
    pub secs: f64,
}

impl Row {
    pub fn new(scenario: impl Into<String>) -> Self {
        Self { scenario: scenario.into(), ..Default::default() }
    }

    pub fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        println!("    {}: {n}", self.scenario);
        self.notes.push(n);
    }

    /// The one-line summary printed as a scenario finishes.
    pub fn summary(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "[{}] {}: written {}, delivered {}, lost {}, duplicated {}, trained {} / labelled {} ({:.1} s)",
            if self.pass { "PASS" } else { "FAIL" },
            self.scenario,
            self.written,
            self.delivered,
            self.lost,
            self.duplicated,
            opt(self.trained),
            opt(self.distinct_labelled),
            self.secs,
        )
    }

    /// The markdown table row.
    pub fn markdown(&self, n: usize) -> String {
        let opt = |v: Option<u64>| v.map_or("–".to_string(), |v| v.to_string());
        format!(
            "| {n} | {} | {} | {} | **{}** | {} | {} | {} | {:.0} s | {} |",
            self.scenario,
            self.written,
            self.delivered,
            self.lost,
            self.duplicated,
            opt(self.trained),
            opt(self.distinct_labelled),
            self.secs,
            if self.pass { "pass" } else { "**FAIL**" },
        )
    }
}

/// A reproducible seed: `CHAOS_SEED` when set, else the clock (printed in the report).
pub fn seed() -> u64 {
    std::env::var("CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

/// Spread a seed over all bits (splitmix64), so neighbouring seeds draw unrelated moments.
pub fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `k` sorted random points in `[lo, hi)` of `total`.
pub fn random_points(rng: &mut Rng, k: usize, total: u64, lo: f64, hi: f64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..k).map(|_| ((lo + (rng.unit() + 1.0) / 2.0 * (hi - lo)) * total as f64) as u64).collect();
    v.sort_unstable();
    v
}

/// One random point in each of `k` equal stretches of `total` (in its 15–60 % part), so
/// faults are spread over the stream and the last one still lands inside it.
pub fn spread_points(rng: &mut Rng, k: usize, total: u64) -> Vec<u64> {
    (0..k)
        .map(|j| {
            let at = (j as f64 + 0.15 + (rng.unit() + 1.0) / 2.0 * 0.45) / k as f64;
            (at * total as f64) as u64
        })
        .collect()
}

/// The documents the writers insert: `_id` = i, two features and, except every tenth, a label.
pub fn labelled_doc(i: i64) -> Document {
    let mut rng = Rng::new(i as u64 * 2_654_435_761 + 1);
    let (a, b) = (rng.unit(), rng.unit());
    let mut d = doc! {"_id": i, "v": i * 2, "a": a, "b": b};
    if is_labelled(i) {
        d.insert("label", a > b);
    }
    d
}

/// Whether [`labelled_doc`] carries a label.
pub fn is_labelled(i: i64) -> bool {
    i % 10 != 9
}

/// Labelled documents among `_id` 0..n.
pub fn labelled_count(n: u64) -> u64 {
    (0..n as i64).filter(|&i| is_labelled(i)).count() as u64
}

/// A writer inserting `_id` 0..n in batches, pausing between them, and retrying through
/// outages (after an error it re-reads which `_id`s landed and inserts only the rest).
pub struct Writer {
    pub progress: Arc<AtomicU64>,
    pub retries: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

impl Writer {
    pub fn spawn(
        client: Client,
        db: &str,
        coll: &str,
        range: std::ops::Range<u64>,
        batch: u64,
        pause: Duration,
    ) -> Self {
        let progress = Arc::new(AtomicU64::new(0));
        let retries = Arc::new(AtomicU64::new(0));
        let coll = client.database(db).collection::<Document>(coll);
        let (p, r) = (progress.clone(), retries.clone());
        let handle = tokio::spawn(async move {
            let end = range.end;
            for start in range.step_by(batch as usize) {
                let ids: Vec<i64> = (start..(start + batch).min(end)).map(|i| i as i64).collect();
                let mut todo = ids.clone();
                loop {
                    if !todo.is_empty() {
                        let docs: Vec<Document> = todo.iter().map(|&i| labelled_doc(i)).collect();
                        if coll.insert_many(docs).ordered(false).await.is_ok() {
                            break;
                        }
                    } else {
                        break;
                    }
                    r.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let Ok(mut cur) = coll.find(doc! {"_id": {"$in": &ids}}).projection(doc! {"_id": 1}).await else {
                        continue;
                    };
                    let mut landed = HashSet::new();
                    while let Some(Ok(d)) = cur.next().await {
                        if let Some(Bson::Int64(i)) = d.get("_id") {
                            landed.insert(*i);
                        }
                    }
                    todo = ids.iter().copied().filter(|i| !landed.contains(i)).collect();
                }
                p.fetch_add(ids.len() as u64, Ordering::Relaxed);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        });
        Self { progress, retries, handle }
    }

    /// Batches that failed and were retried.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Documents written so far.
    pub fn written(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Wait until at least `at` documents are written (or the writer ends, or `limit`).
    pub async fn reach(&self, at: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.written() < at {
            if self.is_finished() || Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Wait for the end (bounded); false if it did not finish in time.
    pub async fn finish(self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.handle).await {
            Ok(r) => r.is_ok(),
            Err(_) => false,
        }
    }
}

/// Wait until `count()` is at least `target` and has not changed for `quiet`, or has not
/// changed for `stall` (stuck below target), or `limit` passes. Returns the last count.
pub async fn settle<F, Fut>(target: u64, quiet: Duration, stall: Duration, limit: Duration, mut count: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    let deadline = Instant::now() + limit;
    let mut last = 0;
    let mut since = Instant::now();
    loop {
        if let Some(c) = count().await.filter(|&c| c != last) {
            last = c;
            since = Instant::now();
        }
        let still = since.elapsed();
        if (last >= target && still >= quiet) || still >= stall || Instant::now() > deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Messages in `queue` settled: at least `target` and quiet for 3 s, or stuck for `stall`.
pub async fn settle_queue(vhost: &str, queue: &str, target: u64, stall: Duration, limit: Duration) -> u64 {
    settle(target, Duration::from_secs(3), stall, limit, || async move { queue_len(vhost, queue).await.map(u64::from) })
        .await
}

/// Poll the sink's `/stats` until `done(stats)` and quiet for 2 s, or nothing moves for
/// `stall`, or `limit`. Returns the last stats seen.
pub async fn settle_stats(env: &Env, stall: Duration, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    let mut last = Value::Null;
    let mut since = Instant::now();
    loop {
        if let Some(s) = sink_get(env, "/stats").await {
            if progress_of(&s) != progress_of(&last) {
                since = Instant::now();
            }
            last = s;
        }
        let still = since.elapsed();
        if (done(&last) && still >= Duration::from_secs(2)) || still >= stall || Instant::now() > deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn progress_of(s: &Value) -> (u64, u64, u64, u64) {
    (count(s, "events_applied"), count(s, "duplicates_skipped"), count(s, "dead_lettered"), count(s, "stale_skipped"))
}

/// A counter from `/stats`.
pub fn count(s: &Value, k: &str) -> u64 {
    s[k].as_u64().unwrap_or_default()
}

/// `model.trained` from `/stats`.
pub fn trained(s: &Value) -> u64 {
    s["model"]["trained"].as_u64().unwrap_or_default()
}

/// What arrived in a queue, reduced to event ids and keys.
#[derive(Debug, Default)]
pub struct Tally {
    pub messages: u64,
    pub ids: HashSet<String>,
    pub keys: HashSet<String>,
    pub unparsable: u64,
}

impl Tally {
    fn add(&mut self, body: &[u8]) {
        self.messages += 1;
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                self.ids.insert(v["id"].as_str().unwrap_or_default().to_string());
                self.keys.insert(v["key"].as_str().unwrap_or_default().to_string());
            }
            Err(_) => self.unparsable += 1,
        }
    }

    /// Keys `0..n` that arrived.
    pub fn delivered(&self, n: u64) -> u64 {
        (0..n).filter(|i| self.keys.contains(&i.to_string())).count() as u64
    }

    /// Keys that are not one of `0..n`.
    pub fn strangers(&self, n: u64) -> u64 {
        self.keys.iter().filter(|k| !k.parse::<u64>().is_ok_and(|i| i < n)).count() as u64
    }

    /// The smallest missing keys, for the notes.
    pub fn missing(&self, n: u64, show: usize) -> Vec<u64> {
        (0..n).filter(|i| !self.keys.contains(&i.to_string())).take(show).collect()
    }
}

/// Consume everything in `queue` (auto-ack) until it has been empty and quiet for 2 s, or
/// `limit`. Returns the tally, or the raw bodies when `keep` is set.
pub async fn drain(vhost: &str, queue: &str, limit: Duration, keep: bool) -> (Tally, Vec<Vec<u8>>) {
    let mut tally = Tally::default();
    let mut bodies = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    let Ok(conn) = Connection::connect(&amqp_uri(vhost), ConnectionProperties::default()).await else {
        return (tally, bodies);
    };
    let Ok(ch) = conn.create_channel().await else { return (tally, bodies) };
    let _ = ch.basic_qos(2000, BasicQosOptions::default()).await;
    let opts = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let Ok(mut consumer) =
        ch.basic_consume(queue.into(), unique("drain").as_str().into(), opts, FieldTable::default()).await
    else {
        return (tally, bodies);
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(2), consumer.next()).await {
            Ok(Some(Ok(d))) => {
                tally.add(&d.data);
                if keep {
                    bodies.push(d.data);
                }
            }
            Ok(_) => break,
            Err(_idle) => {
                if queue_len(vhost, queue).await == Some(0) {
                    break;
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
    }
    let _ = conn.close(200, "drained".into()).await;
    (tally, bodies)
}

/// Start a sink and wait (bounded) until its API answers; the log if it exits or never answers.
pub async fn try_start_sink(env: &Env) -> Result<Proc, String> {
    let p = Proc::start(&["sink"], env);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink_get(env, "/health").await.is_none() {
        if !alive(p.pid()) || Instant::now() > deadline {
            return Err(strip_ansi(&p.output()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(p)
}

/// `VmRSS` and `VmHWM` of `pid`, in kB.
pub fn rss_kb(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines().find(|l| l.starts_with(name))?.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Whether `pid` is alive (a child that exited and was not reaped is a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// `rabbitmqctl stop_app` (blocking).
pub fn stop_app() -> Result<(), String> {
    ctl(&["stop_app"])
}

/// `rabbitmqctl start_app`, then wait until it is up (blocking).
pub fn start_app() -> Result<(), String> {
    ctl(&["start_app"])?;
    ctl(&["await_startup"])
}

/// Held while a scenario restarts RabbitMQ: on drop (a failing scenario included) the app is
/// started again and awaited, so the broker is never left down.
pub struct RabbitRestart;

impl Drop for RabbitRestart {
    fn drop(&mut self) {
        let _ = ctl(&["start_app"]);
        let _ = ctl(&["await_startup"]);
    }
}

fn ctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl").args(args).output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The output of a command, trimmed, or `?`.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// Remove ANSI colour codes from a log.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The report: environment, table and notes.
pub fn report(rows: &[Row], seed: u64, total_secs: f64) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or("?".to_string(), |kb| format!("{:.0}", kb / 1024.0 / 1024.0));
    let rabbit = sh("rabbitmqctl", &["version"]);
    let secantus = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/lib"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|py| std::fs::read_dir(py.ok()?.path().join("site-packages")).ok())
        .and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.to_lowercase().starts_with("secantus") && n.ends_with(".dist-info"))
        })
        .map_or("?".to_string(), |n| n.trim_end_matches(".dist-info").replace(['_', '-'], " "));
    let mut commit = sh("git", &["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"]);
    let dirty = sh(
        "git",
        &["-C", env!("CARGO_MANIFEST_DIR"), "diff", "--name-only", "HEAD", "--", "src", "Cargo.toml", "Cargo.lock"],
    );
    if dirty != "?" {
        commit = format!("{commit} plus uncommitted changes to {}", dirty.lines().collect::<Vec<_>>().join(", "));
    }
    let all = rows.iter().all(|r| r.pass);

    let mut md = String::new();
    md.push_str("# Reliability: `make chaos`\n\n");
    md.push_str(
        "Fault injection against real services: the release build of `mongo-cdc`, SecantusDB (on disk where it\n",
    );
    md.push_str(
        "restarts) and the machine's RabbitMQ. Written by `make chaos` (`tests/chaos.rs`, `full_chaos_suite`);\n",
    );
    md.push_str("every figure below is measured, none is set by hand. The target of every row is **0 lost**, and\n");
    md.push_str("for the sink rows `trained` equal to the distinct labelled events (training exactly once).\n");
    md.push_str(
        "A fast subset (scenarios 1, 4 and 6 at a small scale) runs in `make test`. `CHAOS_SEED=<n> make chaos`\n",
    );
    md.push_str("repeats the kill moments of a run; `CHAOS_ONLY=2,5 make chaos` runs some scenarios (and writes no report).\n\n");
    md.push_str(&format!(
        "- date: {}\n- machine: {} cores ({cpu}), {mem_gib} GiB, {}\n- versions: mongo-cdc {} (commit {commit}), {}, RabbitMQ {rabbit}, {secantus}\n- seed: `CHAOS_SEED={seed}` (kill moments are drawn from it)\n- total time: {:.0} s\n- result: **{}**\n\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sh("uname", &["-sr"]),
        env!("CARGO_PKG_VERSION"),
        sh("rustc", &["--version"]),
        total_secs,
        if all { "every row meets its target" } else { "some rows fall short (see FAIL below)" },
    ));
    md.push_str(
        "| # | scenario | written | delivered | lost | duplicated | trained | distinct labelled | time | result |\n",
    );
    md.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for (i, r) in rows.iter().enumerate() {
        md.push_str(&r.markdown(i + 1));
        md.push('\n');
    }
    md.push_str("\n**Columns.** Bridge rows (1–3, 7) consume the queue: *delivered* is the number of distinct keys\n");
    md.push_str(
        "`0..written` that arrived, *lost* = written − delivered, *duplicated* = messages − distinct event ids\n",
    );
    md.push_str(
        "(at-least-once: the bridge republishes at most one confirm window after a crash). Sink rows (4–6) let the\n",
    );
    md.push_str(
        "sink consume: *delivered* is `events_applied` in its checkpointed `/stats` (read after a clean stop with\n",
    );
    md.push_str(
        "the queue empty, then a restart), *duplicated* is `duplicates_skipped` (redeliveries recognised and not\n",
    );
    md.push_str("applied again), and *trained* is `model.trained`. Every tenth document written has no label, so\n");
    md.push_str("*distinct labelled* is below *written*.\n\n## Notes per row\n");
    for (i, r) in rows.iter().enumerate() {
        md.push_str(&format!("\n### {}. {}\n\n", i + 1, r.scenario));
        for n in &r.notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    md
}
