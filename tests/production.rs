//! The bridge in production, against real SecantusDB and RabbitMQ (and stunnel for TLS):
//! topic routing with an alternate exchange, filters and redaction, large events, metrics and
//! health, TLS to both servers, and secrets kept out of every log.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use mongodb::bson::{Document, doc};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Declare `queue` bound to `exchange` with `key`, as another consumer would.
async fn bind_queue(queue: &str, exchange: &str, key: &str) {
    let conn = Connection::connect(&amqp_uri("/"), ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    ch.queue_declare(queue.into(), durable, FieldTable::default()).await.unwrap();
    ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let _ = conn.close(200, "bound".into()).await;
}

async fn delete_exchange(exchange: &str, queues: &[&str]) {
    let Ok(conn) = Connection::connect(&amqp_uri("/"), ConnectionProperties::default()).await else { return };
    if let Ok(ch) = conn.create_channel().await {
        for q in queues {
            let _ = ch.queue_delete((*q).into(), QueueDeleteOptions::default()).await;
        }
        let _ = ch.exchange_delete(exchange.into(), Default::default()).await;
        let _ = ch.exchange_delete(format!("{exchange}.unrouted").as_str().into(), Default::default()).await;
        let _ = ch.queue_delete(format!("{exchange}.unrouted").as_str().into(), QueueDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn topic_routing_delivers_each_queue_its_keys_and_keeps_the_unrouted() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("route");
    let (queue, deletes, exchange) = (unique("q_route_orders"), unique("q_route_deletes"), unique("x_route"));
    let env = Env::bridge(&mongo.uri(), &db, &queue)
        .set("RABBITMQ_EXCHANGE", &exchange)
        .set("RABBITMQ_BINDING_KEYS", &format!("{db}.orders.*"));
    let mut bridge = start_bridge(&client, &env).await;
    // A second consumer, bound to every delete.
    bind_queue(&deletes, &exchange, "#.d").await;

    let orders = client.database(&db).collection::<Document>("orders");
    let users = client.database(&db).collection::<Document>("users");
    for i in 0..5 {
        orders.insert_one(doc! {"_id": i, "n": i}).await.unwrap();
        users.insert_one(doc! {"_id": i, "name": "u"}).await.unwrap();
    }
    orders.update_one(doc! {"_id": 1}, doc! {"$set": {"n": 10}}).await.unwrap();
    orders.delete_one(doc! {"_id": 2}).await.unwrap();
    users.delete_one(doc! {"_id": 3}).await.unwrap();

    let got = consume_until("/", &queue, LIMIT, |m| m.len() >= 7).await;
    let keys: Vec<String> = got.iter().map(|m| format!("{}:{}", m.json()["op"], m.json()["key"])).collect();
    assert!(got.iter().all(|m| m.json()["source"]["collection"] == "orders"), "{keys:?}");
    assert_eq!(got.len(), 7, "5 inserts, an update and a delete of orders: {keys:?}");
    let got = consume_until("/", &deletes, LIMIT, |m| m.len() >= 2).await;
    let colls: Vec<Value> = got.iter().map(|m| m.json()["source"]["collection"].clone()).collect();
    assert!(got.iter().all(|m| m.json()["op"] == "d"), "{colls:?}");
    assert_eq!(colls, ["orders", "users"]);
    // The users' inserts matched no binding: kept in `<exchange>.unrouted`, not lost, and
    // the bridge did not wedge on them.
    let unrouted = format!("{exchange}.unrouted");
    wait_for("5 messages in the unrouted queue", LIMIT, || async {
        queue_len("/", &unrouted).await.filter(|&n| n == 5)
    })
    .await;
    let metrics = wait_for("the unrouted count in /metrics", LIMIT, || async {
        let (_, m) = bridge_get(&env, "/metrics").await?;
        (sample(&m, "cdc_unrouted_messages ") == Some(5.0)).then_some(m)
    })
    .await;
    assert_eq!(sample(&metrics, "cdc_returns_total "), Some(0.0));
    bridge.assert_running();
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
    delete_exchange(&exchange, &[&deletes]).await;
}

#[tokio::test]
async fn excluded_fields_and_collections_never_reach_the_queue_or_the_log() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("redact");
    let queue = unique("q_redact");
    let users = client.database(&db).collection::<Document>("users");
    let payments = client.database(&db).collection::<Document>("payments");
    // Existing documents: the snapshot must redact them too.
    users
        .insert_one(
            doc! {"_id": 1, "name": "ann", "password": "SECRET-snap", "card": {"number": "CARDNUM-snap", "exp": "01/30"}},
        )
        .await
        .unwrap();
    client.database(&db).collection::<Document>("audit").insert_one(doc! {"_id": 1, "x": "AUDIT-snap"}).await.unwrap();
    let env = Env::bridge(&mongo.uri(), &db, &queue)
        .set("CDC_EXCLUDE_FIELDS", "users.password,*.card.number")
        .set("MONGO_EXCLUDE_COLLECTIONS", "audit");
    let mut bridge = start_bridge(&client, &env).await;
    // The snapshot first, so the existing user arrives as a row (a change to it during the
    // snapshot would carry it instead).
    wait_for("the snapshot to complete", LIMIT, || async {
        checkpoint(&client, &env).await.filter(|c| !c.contains_key("snapshot")).map(|_| ())
    })
    .await;

    users
        .insert_one(doc! {"_id": 2, "name": "bob", "password": "SECRET-insert", "card": {"number": "CARDNUM-insert"}})
        .await
        .unwrap();
    users
        .update_one(doc! {"_id": 2}, doc! {"$set": {"password": "SECRET-update", "card.number": "CARDNUM-update"}})
        .await
        .unwrap();
    users
        .update_one(doc! {"_id": 2}, doc! {"$set": {"card": {"number": "CARDNUM-nested", "exp": "02/31"}}})
        .await
        .unwrap();
    users.update_one(doc! {"_id": 2}, doc! {"$unset": {"password": ""}}).await.unwrap();
    users
        .replace_one(
            doc! {"_id": 1},
            doc! {"name": "ann", "password": "SECRET-replace", "card": {"number": "CARDNUM-replace"}},
        )
        .await
        .unwrap();
    payments
        .insert_one(doc! {"_id": 1, "card": {"number": "CARDNUM-payments", "brand": "visa"}, "password": "kept"})
        .await
        .unwrap();
    client
        .database(&db)
        .collection::<Document>("audit")
        .insert_one(doc! {"_id": 2, "x": "AUDIT-insert"})
        .await
        .unwrap();
    payments.insert_one(doc! {"_id": "last"}).await.unwrap();

    let got = consume_until("/", &queue, LIMIT, |m| m.last().is_some_and(|m| m.json()["key"] == "last")).await;
    let all: String = got.iter().map(|m| String::from_utf8_lossy(&m.body).into_owned()).collect::<Vec<_>>().join("\n");
    for secret in ["SECRET", "CARDNUM", "AUDIT"] {
        assert!(!all.contains(secret), "`{secret}` reached the queue:\n{all}");
    }
    let users_messages: String = got
        .iter()
        .filter(|m| m.json()["source"]["collection"] == "users")
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    assert!(!users_messages.contains("\"password\""), "the users' password field name appears:\n{users_messages}");
    // What is not excluded still arrives: the row, every change, the payments' own password.
    let ops: Vec<String> =
        got.iter().map(|m| format!("{}/{}", m.json()["source"]["collection"], m.json()["op"])).collect();
    for want in ["\"users\"/\"r\"", "\"users\"/\"c\"", "\"users\"/\"u\"", "\"payments\"/\"c\""] {
        assert!(ops.iter().any(|o| o == want), "{want} missing from {ops:?}");
    }
    let payment = got.iter().find(|m| m.json()["source"]["collection"] == "payments").unwrap().json();
    assert_eq!(payment["after"]["card"], serde_json::json!({"brand": "visa"}));
    assert_eq!(payment["after"]["password"], "kept");
    assert!(got.iter().all(|m| m.json()["source"]["collection"] != "audit"), "{ops:?}");
    assert!(bridge.terminate(LIMIT).await.success());
    let log = bridge.output();
    for secret in ["SECRET", "CARDNUM", "AUDIT"] {
        assert!(!log.contains(secret), "`{secret}` reached the log:\n{log}");
    }
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn large_events_arrive_whole_or_as_cdc_oversize_says() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let db = unique("large");
    let big = client.database(&db);
    big.run_command(doc! {"create": "big", "changeStreamPreAndPostImages": {"enabled": true}}).await.unwrap();
    let big = big.collection::<Document>("big");

    // Over 16 MB with its pre-image: the server splits it, the bridge puts it back together.
    let queue = unique("q_large");
    let env = Env::bridge(&mongo.uri(), &db, &queue);
    let mut bridge = start_bridge(&client, &env).await;
    let nine_mb = "a".repeat(9 << 20);
    big.insert_one(doc! {"_id": 1, "v": &nine_mb}).await.unwrap();
    big.replace_one(doc! {"_id": 1}, doc! {"v": format!("{nine_mb}b")}).await.unwrap();
    big.insert_one(doc! {"_id": 2, "v": "small"}).await.unwrap();
    let got =
        consume_until("/", &queue, LIMIT, |m| m.iter().filter(|m| m.json()["op"] != "snapshot").count() >= 3).await;
    let got: Vec<Received> = got.into_iter().filter(|m| m.json()["op"] != "snapshot").collect();
    let replace = got[1].json();
    assert_eq!(replace["op"], "u");
    assert_eq!(replace["before"]["v"].as_str().map(str::len), Some(9 << 20));
    assert_eq!(replace["after"]["v"].as_str().map(str::len), Some((9 << 20) + 1));
    assert!(got[1].body.len() > 16 << 20, "one message of {} bytes", got[1].body.len());
    assert_eq!(got[2].json()["key"], "2", "and the stream goes on");
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;

    // Larger than the broker takes (CDC_MAX_MESSAGE_BYTES): skip, truncate, or stop.
    let limit = "200000";
    let quarter_mb = "q".repeat(250_000);
    for mode in ["skip", "truncate", "fail"] {
        let queue = unique(&format!("q_large_{mode}"));
        let env = Env::bridge(&mongo.uri(), &db, &queue)
            .set("CDC_SNAPSHOT_MODE", "no_data")
            .set("CDC_MAX_MESSAGE_BYTES", limit)
            .set("CDC_OVERSIZE", mode);
        let mut bridge = start_bridge(&client, &env).await;
        let key = format!("{mode}-big");
        big.insert_one(doc! {"_id": &key, "v": &quarter_mb}).await.unwrap();
        big.insert_one(doc! {"_id": format!("{mode}-after"), "v": "small"}).await.unwrap();
        match mode {
            "skip" => {
                let got = consume_until("/", &queue, LIMIT, |m| !m.is_empty()).await;
                assert_eq!(got[0].json()["key"], format!("{mode}-after"), "the large one was skipped");
                let (_, m) = bridge_get(&env, "/metrics").await.unwrap();
                assert_eq!(sample(&m, "cdc_oversize_skipped_total "), Some(1.0), "{m}");
                assert!(bridge.output().contains("skipped an event too large"), "{}", bridge.output());
            }
            "truncate" => {
                let got = consume_until("/", &queue, LIMIT, |m| m.len() >= 2).await;
                let cut = got[0].json();
                assert_eq!(cut["key"], key);
                assert_eq!(cut["after"], Value::Null);
                assert_eq!(cut["truncated"], serde_json::json!(["after"]));
                assert!(got[1].json().get("truncated").is_none());
                let (_, m) = bridge_get(&env, "/metrics").await.unwrap();
                assert_eq!(sample(&m, "cdc_oversize_truncated_total "), Some(1.0), "{m}");
            }
            _ => {
                let status = bridge.wait(LIMIT).await;
                let out = bridge.output();
                assert!(!status.success(), "fail mode exits non-zero:\n{out}");
                let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
                assert_eq!(errors.len(), 1, "{out}");
                assert!(errors[0].contains("CDC_OVERSIZE") && errors[0].contains(&key), "{}", errors[0]);
                assert!(!out.contains("qqqqqqqq"), "the document reached the log");
                assert_eq!(queue_len("/", &queue).await, Some(0), "nothing published past it");
            }
        }
        let _ = bridge.terminate(LIMIT).await;
        delete_topology("/", &queue).await;
    }
}

#[tokio::test]
async fn health_and_metrics_follow_the_bridge() {
    let mut mongo = Secantus::on_disk().await;
    let client = mongo.client().await;
    let db = unique("health");
    let queue = unique("q_health");
    let env = Env::bridge(&mongo.uri(), &db, &queue);
    let mut bridge = start_bridge(&client, &env).await;
    let coll = client.database(&db).collection::<Document>("things");
    for i in 0..20 {
        coll.insert_one(doc! {"_id": i}).await.unwrap();
    }
    coll.update_one(doc! {"_id": 1}, doc! {"$set": {"x": 1}}).await.unwrap();
    let metrics = wait_for("the changes counted in /metrics", LIMIT, || async {
        let (_, m) = bridge_get(&env, "/metrics").await?;
        (sample(&m, "cdc_events_published_total{collection=\"things\",op=\"c\"}") == Some(20.0)
            && sample(&m, "cdc_events_published_total{collection=\"things\",op=\"u\"}") == Some(1.0)
            && sample(&m, "cdc_oplog_headroom_seconds ").is_some())
        .then_some(m)
    })
    .await;
    assert!(sample(&metrics, "cdc_confirm_latency_seconds_count ").unwrap() >= 21.0, "{metrics}");
    assert!(sample(&metrics, "cdc_checkpoint_writes_total ").unwrap() >= 1.0);
    assert!(sample(&metrics, "cdc_checkpoint_age_seconds ").unwrap() >= 0.0);
    assert!(sample(&metrics, "cdc_source_lag_seconds ").unwrap() >= 0.0);
    assert!(metrics.contains("# TYPE cdc_confirm_latency_seconds histogram"), "{metrics}");
    let (status, body) = bridge_get(&env, "/health").await.unwrap();
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["status"].clone()), (200, "ok".into()), "{body}");

    // MongoDB goes away: 503 with the reason; back: 200.
    mongo.stop();
    let body = wait_for("/health to say down", LIMIT, || async {
        let (status, body) = bridge_get(&env, "/health").await?;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("MongoDB"), "{body}");
    mongo.start_again().await;
    wait_for("/health to recover", LIMIT, || async {
        let (status, _) = bridge_get(&env, "/health").await?;
        (status == 200).then_some(())
    })
    .await;
    assert!(bridge.terminate(LIMIT).await.success());

    // A checkpoint closer to the oplog's end than CDC_OPLOG_HEADROOM_WARN: degraded.
    let warn = env.clone().set("CDC_OPLOG_HEADROOM_WARN", "100000h");
    let mut bridge = Proc::start(&["bridge"], &warn);
    let body = wait_for("/health to say degraded", LIMIT, || async {
        let (status, body) = bridge_get(&warn, "/health").await?;
        (status == 200 && body.contains("degraded")).then_some(body)
    })
    .await;
    assert!(body.contains("CDC_OPLOG_HEADROOM_WARN"), "{body}");
    assert!(bridge.terminate(LIMIT).await.success());
    delete_topology("/", &queue).await;
}

/// A certificate authority and a server certificate for `localhost`, made with `openssl`.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir.path()).output().expect("run openssl");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        for ca in ["ca", "other_ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=mongo-cdc test {ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "ext.cnf",
        ]);
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

/// stunnel terminating TLS on a free port in front of `target`.
struct Stunnel {
    port: u16,
    child: Child,
    _conf: tempfile::TempDir,
}

impl Stunnel {
    async fn start(certs: &Certs, target: u16) -> Self {
        let port = free_port();
        let conf = tempfile::tempdir().unwrap();
        let file = conf.path().join("stunnel.conf");
        std::fs::write(
            &file,
            format!(
                "foreground = yes\npid =\n[service]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{target}\ncert = {}\nkey = {}\n",
                certs.path("server.pem"),
                certs.path("server.key")
            ),
        )
        .unwrap();
        let bin = if Path::new("/usr/bin/stunnel4").exists() { "stunnel4" } else { "stunnel" };
        let child = Command::new(bin)
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stunnel (make test installs it)");
        wait_for("stunnel to listen", LIMIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        Self { port, child, _conf: conf }
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tls_to_both_servers_with_a_private_ca_and_secrets_kept_out_of_logs() {
    let mongo = Secantus::in_memory().await;
    let client = mongo.client().await;
    let certs = Certs::new();
    let (mongo_tls, rabbit_tls) = (Stunnel::start(&certs, mongo.port).await, Stunnel::start(&certs, 5672).await);
    // A user of our own whose password must never be printed, read from a secret file.
    let (user, password) = (unique("tlsuser"), "pw-Do-Not-Print-7a1");
    rabbitmqctl(&["add_user", &user, password]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), format!("{password}\n")).unwrap();

    let db = unique("tls");
    let queue = unique("q_tls");
    let uri = format!(
        "mongodb://localhost:{}/?directConnection=true&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=5000",
        mongo_tls.port,
        certs.path("ca.pem")
    );
    let env = Env::bridge(&uri, &db, &queue)
        .set("RABBITMQ_HOST", "localhost")
        .set("RABBITMQ_PORT", &rabbit_tls.port.to_string())
        .set("RABBITMQ_TLS", "true")
        .set("RABBITMQ_TLS_CA_FILE", &certs.path("ca.pem"))
        .set("RABBITMQ_DEFAULT_USERNAME", &user)
        .set("RABBITMQ_DEFAULT_PASSWORD", "not-this-one")
        .set("RABBITMQ_DEFAULT_PASSWORD_FILE", &secret.path().to_string_lossy());
    let mut bridge = start_bridge(&client, &env).await;
    client.database(&db).collection::<Document>("x").insert_one(doc! {"_id": 1}).await.unwrap();
    let got = consume_until("/", &queue, LIMIT, |m| !m.is_empty()).await;
    assert_eq!(got[0].json()["key"], "1", "a change went MongoDB -> TLS -> bridge -> TLS -> RabbitMQ");
    assert!(bridge.terminate(LIMIT).await.success());
    let log = bridge.output();
    assert!(log.contains("amqps"), "the log says it used amqps:\n{log}");
    assert!(!log.contains(password) && !log.contains("not-this-one"), "a password reached the log:\n{log}");

    // A wrong CA, each side: one readable line, non-zero, no password.
    for (var, value, needle) in [
        ("RABBITMQ_TLS_CA_FILE", certs.path("other_ca.pem"), "RABBITMQ_TLS_CA_FILE"),
        ("MONGO_DATABASE_HOST", uri.replace(&certs.path("ca.pem"), &certs.path("other_ca.pem")), "MONGO_DATABASE_HOST"),
    ] {
        let mut p = Proc::start(&["bridge"], &env.clone().set(var, &value));
        let status = p.wait(LIMIT).await;
        let out = p.output();
        assert!(!status.success(), "a wrong CA ({var}) must fail:\n{out}");
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(errors[0].contains(needle), "{}", errors[0]);
        assert!(!out.contains("panicked") && !out.contains(password), "{out}");
    }
    // A wrong password: refused, and neither password printed.
    std::fs::write(secret.path(), "wrong-pw-Do-Not-Print").unwrap();
    let mut p = Proc::start(&["bridge"], &env);
    assert!(!p.wait(LIMIT).await.success());
    let out = p.output();
    assert!(out.contains("RABBITMQ_DEFAULT_PASSWORD"), "{out}");
    assert!(!out.contains("wrong-pw-Do-Not-Print") && !out.contains(password), "{out}");
    rabbitmqctl(&["delete_user", &user]);
    delete_topology("/", &queue).await;
}
