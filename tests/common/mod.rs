//! Test helpers: start SecantusDB on a free port, run the `mongo-cdc` binary, talk to the real
//! RabbitMQ, make unique names, and wait on conditions with deadlines.
#![allow(dead_code)]

pub mod browser;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use mongo_cdc::event::ChangeEvent;
use mongodb::Client;
use mongodb::bson::{Document, doc};

/// Names no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{}_{nanos:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Poll `cond` until it returns `Some`, or panic with `what` after `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port free to listen on, below Linux's ephemeral range (32768 and up): a port the kernel
/// handed out for `127.0.0.1:0` can be taken by an outgoing connection (to RabbitMQ, say)
/// before the process under test binds it. Each test process walks its own stretch of the range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919) % 12_000;
    loop {
        let port = 20_000 + (base + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

fn secantusd() -> PathBuf {
    std::env::var_os("SECANTUSD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/secantusd-py"))
}

/// A SecantusDB server of this test's own.
pub struct Secantus {
    pub port: u16,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    extra: Vec<String>,
}

impl Secantus {
    /// Throw-away storage.
    pub async fn in_memory() -> Self {
        Self::start(None).await
    }

    /// On-disk storage, so it can be restarted with its data.
    pub async fn on_disk() -> Self {
        Self::start(Some(tempfile::tempdir().unwrap())).await
    }

    /// Throw-away storage and extra server flags.
    pub async fn in_memory_with(extra: &[&str]) -> Self {
        let mut s =
            Self { port: free_port(), child: None, dir: None, extra: extra.iter().map(|a| a.to_string()).collect() };
        s.spawn().await;
        s
    }

    async fn start(dir: Option<tempfile::TempDir>) -> Self {
        let mut s = Self { port: free_port(), child: None, dir, extra: Vec::new() };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let storage = match &self.dir {
            Some(d) => d.path().join("data").to_string_lossy().into_owned(),
            None => ":memory:".into(),
        };
        let bin = secantusd();
        assert!(bin.exists(), "{} not found: run `make test` (it installs SecantusDB into .venv)", bin.display());
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string(), "--storage-path", &storage])
            .args(["--log-level", "WARNING"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start secantusd-py");
        self.child = Some(child);
        let uri = self.uri();
        wait_for("SecantusDB to answer", Duration::from_secs(30), || {
            let uri = uri.clone();
            async move {
                let c = Client::with_uri_str(&uri).await.ok()?;
                c.database("admin").run_command(doc! {"ping": 1}).await.ok().map(|_| ())
            }
        })
        .await;
    }

    /// The connection string.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?replicaSet=secantus&serverSelectionTimeoutMS=5000", self.port)
    }

    /// A fresh driver client.
    pub async fn client(&self) -> Client {
        Client::with_uri_str(self.uri()).await.unwrap()
    }

    /// Stop (SIGTERM, then SIGKILL) and start again on the same port and storage.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Start again after [`Secantus::stop`], on the same port and storage.
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    /// Stop (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Secantus {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The environment for one bridge (or sink) under test: every variable set explicitly so a
/// developer's `.env` cannot leak in.
#[derive(Clone)]
pub struct Env {
    pub vars: HashMap<String, String>,
}

impl Env {
    pub fn bridge(mongo_uri: &str, db: &str, queue: &str) -> Self {
        let mut vars = HashMap::new();
        for (k, v) in [
            ("MONGO_DATABASE_HOST", mongo_uri),
            ("MONGO_DATABASE_NAME", db),
            ("MONGO_COLLECTIONS", ""),
            ("RABBITMQ_HOST", "127.0.0.1"),
            ("RABBITMQ_PORT", "5672"),
            ("RABBITMQ_DEFAULT_USERNAME", "guest"),
            ("RABBITMQ_DEFAULT_PASSWORD", "guest"),
            ("RABBITMQ_VHOST", "/"),
            ("RABBITMQ_QUEUE_NAME", queue),
            ("CDC_NAME", queue),
            ("CDC_STATE_DATABASE", &format!("{db}_state")),
            ("CDC_HTTP_ADDR", &format!("127.0.0.1:{}", free_port())),
        ] {
            vars.insert(k.to_string(), v.to_string());
        }
        Self { vars }
    }

    pub fn set(mut self, k: &str, v: &str) -> Self {
        self.vars.insert(k.into(), v.into());
        self
    }

    pub fn get(&self, k: &str) -> &str {
        &self.vars[k]
    }
}

/// A running `mongo-cdc` process.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Start `mongo-cdc <args>` with `env` (and nothing from `.env`: it runs in a temp dir).
    pub fn start(args: &[&str], env: &Env) -> Self {
        Self::start_under(&[], args, env)
    }

    /// Start `mongo-cdc <args>` under a wrapper (`valgrind --tool=callgrind`, say):
    /// `wrapper[0] wrapper[1..] mongo-cdc args`.
    pub fn start_under(wrapper: &[&str], args: &[&str], env: &Env) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let file = std::fs::File::create(&log).unwrap();
        let bin = env!("CARGO_BIN_EXE_mongo-cdc");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env.vars)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start mongo-cdc");
        Self { child, log, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status.
    pub async fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        self.wait(limit).await
    }

    /// Wait for the process to exit.
    pub async fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let log = self.log.clone();
        let child = &mut self.child;
        wait_for(&format!("mongo-cdc to exit (log {})", log.display()), limit, || {
            let r = child.try_wait().unwrap();
            async move { r }
        })
        .await
    }

    /// Panic with the log if the process has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("mongo-cdc exited with {status}:\n{}", self.output());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The checkpoint document of a bridge, if written.
pub async fn checkpoint(client: &Client, env: &Env) -> Option<Document> {
    client
        .database(env.get("CDC_STATE_DATABASE"))
        .collection::<Document>("checkpoints")
        .find_one(doc! {"_id": env.get("CDC_NAME")})
        .await
        .ok()
        .flatten()
}

/// Start a bridge and wait until it has pinned its starting point (so writes after this
/// are seen).
pub async fn start_bridge(client: &Client, env: &Env) -> Proc {
    let mut p = Proc::start(&["bridge"], env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(client, env).await.is_none() {
        p.assert_running();
        assert!(Instant::now() < deadline, "bridge did not checkpoint in time:\n{}", p.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p
}

/// The AMQP URI of the local broker for `vhost`.
pub fn amqp_uri(vhost: &str) -> String {
    let v = if vhost == "/" { "%2f".to_string() } else { vhost.to_string() };
    format!("amqp://guest:guest@127.0.0.1:5672/{v}")
}

/// One received message.
#[derive(Debug)]
pub struct Received {
    pub props: BasicProperties,
    pub body: Vec<u8>,
}

impl Received {
    pub fn event(&self) -> ChangeEvent {
        serde_json::from_slice(&self.body).expect("message is a ChangeEvent")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("message is JSON")
    }
}

/// Consume from `queue` until `done(&received)` or the deadline (then panic).
pub async fn consume_until(
    vhost: &str,
    queue: &str,
    limit: Duration,
    done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    consume_with(vhost, queue, FieldTable::default(), limit, done).await
}

/// [`consume_until`] on a stream queue, from its first message.
#[allow(dead_code)] // not every test binary reads a stream
pub async fn consume_stream_until(
    vhost: &str,
    queue: &str,
    limit: Duration,
    done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), lapin::types::AMQPValue::LongString("first".into()));
    consume_with(vhost, queue, args, limit, done).await
}

async fn consume_with(
    vhost: &str,
    queue: &str,
    args: FieldTable,
    limit: Duration,
    mut done: impl FnMut(&[Received]) -> bool,
) -> Vec<Received> {
    let conn = Connection::connect(&amqp_uri(vhost), ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1000, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(queue.into(), unique("test").as_str().into(), BasicConsumeOptions::default(), args)
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&got) {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            panic!("timed out after {limit:?} consuming {queue}: got {} messages", got.len());
        };
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        got.push(Received { props: delivery.properties.clone(), body: delivery.data.clone() });
    }
    let _ = conn.close(200, "done".into()).await;
    got
}

/// Messages ready in `queue` (a short-lived connection; `None` if the broker is unreachable).
pub async fn queue_len(vhost: &str, queue: &str) -> Option<u32> {
    let conn = Connection::connect(&amqp_uri(vhost), ConnectionProperties::default()).await.ok()?;
    let ch = conn.create_channel().await.ok()?;
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .ok()?;
    let _ = conn.close(200, "done".into()).await;
    Some(q.message_count())
}

/// Delete the queue, its dead-letter queue and exchange, and the sink's alerts queue.
pub async fn delete_topology(vhost: &str, queue: &str) {
    let Ok(conn) = Connection::connect(&amqp_uri(vhost), ConnectionProperties::default()).await else { return };
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
        let _ = ch.queue_delete(format!("{queue}.dlq").as_str().into(), QueueDeleteOptions::default()).await;
        let _ = ch.queue_delete(format!("{queue}.alerts").as_str().into(), QueueDeleteOptions::default()).await;
        let _ = ch.exchange_delete(format!("{queue}.dlx").as_str().into(), Default::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

/// Run `rabbitmqctl` with `args`, panicking on failure.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl").args(args).output().expect("run rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A vhost of this test's own (deleted on drop), so broker-wide actions stay contained.
pub struct Vhost(pub String);

impl Vhost {
    pub fn new() -> Self {
        let name = unique("vh");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self(name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.0]).output();
    }
}

/// The environment for a sink under test, on a free HTTP port and its own state dir.
pub fn sink_env(queue: &str, state_dir: &std::path::Path, features: &str, label: &str) -> Env {
    let port = free_port();
    Env::bridge("mongodb://unused", "unused", queue)
        .set("SINK_FEATURES", features)
        .set("SINK_LABEL", label)
        .set("SINK_STATE_DIR", &state_dir.to_string_lossy())
        .set("SINK_HTTP_ADDR", &format!("127.0.0.1:{port}"))
}

/// GET `path` from the sink of `env` as JSON (`None` while it is not answering).
pub async fn sink_get(env: &Env, path: &str) -> Option<serde_json::Value> {
    let url = format!("http://{}{path}", env.get("SINK_HTTP_ADDR"));
    let resp = reqwest::get(url).await.ok()?;
    resp.json().await.ok()
}

/// GET a record from the sink and return its `doc` as the JSON text served (`None` while the
/// sink does not answer or has no such record).
pub async fn sink_get_raw_doc(env: &Env, path: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Rec {
        doc: Box<serde_json::value::RawValue>,
    }
    let url = format!("http://{}{path}", env.get("SINK_HTTP_ADDR"));
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    serde_json::from_str::<Rec>(&text).ok().map(|r| r.doc.get().to_string())
}

/// POST JSON `body` (raw text) to the sink; returns the status and the JSON answer.
pub async fn sink_post(env: &Env, path: &str, body: &str) -> (u16, serde_json::Value) {
    let url = format!("http://{}{path}", env.get("SINK_HTTP_ADDR"));
    let resp = reqwest::Client::new().post(url).body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// Start a sink and wait until its HTTP API answers.
pub async fn start_sink(env: &Env) -> Proc {
    let mut p = Proc::start(&["sink"], env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink_get(env, "/health").await.is_none() {
        p.assert_running();
        assert!(Instant::now() < deadline, "sink did not answer in time:\n{}", p.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p
}

/// Wait until the sink's `/stats` satisfies `pred`; returns those stats.
pub async fn wait_stats(
    env: &Env,
    what: &str,
    limit: Duration,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut last = serde_json::Value::Null;
    loop {
        if let Some(s) = sink_get(env, "/stats").await {
            if pred(&s) {
                return s;
            }
            last = s;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}; last stats: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publish raw bodies to `queue` (default exchange, persistent, confirmed).
pub async fn publish_raw(vhost: &str, queue: &str, bodies: &[Vec<u8>]) {
    let messages: Vec<(&str, &[u8])> = bodies.iter().map(|b| (queue, b.as_slice())).collect();
    publish_routed(vhost, "", &messages).await;
}

/// Publish `(routing key, body)` pairs to `exchange` (persistent, confirmed, no other
/// property), in order.
pub async fn publish_routed(vhost: &str, exchange: &str, messages: &[(&str, &[u8])]) {
    let conn = Connection::connect(&amqp_uri(vhost), ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    for &(routing_key, body) in messages {
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            Default::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let _ = conn.close(200, "done".into()).await;
}

/// A small deterministic generator (xorshift), so test streams are the same every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// The snapshot part of a bridge's checkpoint (`None` once it streams, or before any).
pub async fn snapshot_progress(client: &Client, env: &Env) -> Option<Document> {
    checkpoint(client, env).await?.get_document("snapshot").ok().cloned()
}

/// Check that the sink of `senv` holds exactly the documents of `collections` in `db`: every
/// document as a live record equal to its JSON form, and no other live record. Returns what
/// differs (empty when equal).
pub async fn sink_differs_from_mongo(senv: &Env, client: &Client, db: &str, collections: &[&str]) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut total = 0u64;
    for coll in collections {
        let mut docs = client.database(db).collection::<Document>(coll).find(doc! {}).await.unwrap();
        while let Some(d) = docs.next().await {
            let d = d.unwrap();
            total += 1;
            let key = mongo_cdc::bridge::encode::key_string(d.get("_id").unwrap());
            // Compared as text: the sink keeps the bridge's JSON verbatim, and parsing it back
            // into floats could move them by an ulp.
            let want = serde_json::to_string(&mongo_cdc::bridge::encode::doc_to_json(&d)).unwrap();
            let path = format!("/records/{coll}/{}", percent_encode(&key));
            match sink_get_raw_doc(senv, &path).await {
                Some(doc) if doc == want => {}
                Some(doc) => diffs.push(format!("{coll}/{key}: sink holds {doc} instead of {want}")),
                None => diffs.push(format!("{coll}/{key}: missing from the sink")),
            }
            if diffs.len() > 20 {
                return diffs;
            }
        }
    }
    let live = sink_get(senv, "/stats").await.and_then(|s| s["records"].as_u64());
    if live != Some(total) {
        diffs.push(format!("the sink holds {live:?} live records, MongoDB {total} documents"));
    }
    diffs
}

/// Percent-encode a path segment.
pub fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Messages of one key in `got` go forward in `source.cluster_time` (control messages aside);
/// returns the first key that goes back, if any.
pub fn per_key_order_broken(got: &[serde_json::Value]) -> Option<String> {
    let mut last: HashMap<(String, String), (u64, u64)> = HashMap::new();
    for m in got.iter().filter(|m| m["op"] != "snapshot") {
        let key = (m["source"]["collection"].as_str().unwrap().to_string(), m["key"].as_str().unwrap().to_string());
        let ct = &m["source"]["cluster_time"];
        let at = (ct["t"].as_u64().unwrap(), ct["i"].as_u64().unwrap());
        if let Some(prev) = last.insert(key.clone(), at)
            && prev > at
        {
            return Some(format!("{key:?}: {prev:?} then {at:?}"));
        }
    }
    None
}

/// Random inserts, updates and deletes over keys `0..keys` (and new keys above), paced, until
/// `stop` says so or `max` writes; returns how many were made. Documents carry `x`, `qty` and
/// `label`.
pub fn churn(
    client: Client,
    db: String,
    coll: &str,
    keys: i64,
    max: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    let coll = coll.to_string();
    tokio::spawn(async move {
        let coll = client.database(&db).collection::<Document>(&coll);
        let mut rng = Rng::new(5);
        let mut n = 0;
        while n < max && stop.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            let key = ((rng.unit() + 1.0) / 2.0 * (keys as f64 * 1.2)) as i64;
            let pick = rng.unit();
            let result = if pick < -0.3 {
                coll.update_one(doc! {"_id": key}, doc! {"$inc": {"qty": 1}}).await.map(|_| ())
            } else if pick < 0.2 {
                coll.delete_one(doc! {"_id": key}).await.map(|_| ())
            } else {
                coll.replace_one(doc! {"_id": key}, doc! {"x": pick, "qty": n as i64, "label": pick > 0.6})
                    .upsert(true)
                    .await
                    .map(|_| ())
            };
            result.unwrap();
            n += 1;
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        n
    })
}

/// GET `path` from the bridge's HTTP server: (status, body).
pub async fn bridge_get(env: &Env, path: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://{}{path}", env.get("CDC_HTTP_ADDR"))).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// The value of one Prometheus sample line (`name{labels} value`), if present.
pub fn sample(metrics: &str, line_start: &str) -> Option<f64> {
    metrics.lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}
