//! Bad configuration and lost history: one readable line naming what to fix, a non-zero
//! exit, and never a panic.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::{Document, doc};

const LIMIT: Duration = Duration::from_secs(30);

/// Run `mongo-cdc <args>` to completion; return its output after checking it failed with
/// exactly one `error:` line that mentions every one of `needles`.
async fn fails_with(args: &[&str], env: &Env, needles: &[&str]) -> String {
    let mut p = Proc::start(args, env);
    let status = p.wait(LIMIT).await;
    let out = p.output();
    assert!(!status.success(), "expected failure for {args:?}, got success:\n{out}");
    assert!(!out.contains("panicked"), "panicked:\n{out}");
    let errors: Vec<_> = out.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "want one error line:\n{out}");
    for n in needles {
        assert!(errors[0].contains(n), "error line lacks `{n}`: {}", errors[0]);
    }
    assert!(!errors[0].contains("secret"), "password leaked: {}", errors[0]);
    out
}

#[tokio::test]
async fn bad_configuration_is_one_readable_line() {
    let mongo = Secantus::in_memory().await;
    let ok = Env::bridge(&mongo.uri(), &unique("bad"), &unique("q_bad"));

    fails_with(&["bridge"], &ok.clone().set("MONGO_DATABASE_HOST", "not-a-uri"), &["MONGO_DATABASE_HOST"]).await;
    fails_with(
        &["bridge"],
        &ok.clone().set("MONGO_DATABASE_HOST", "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500"),
        &["cannot reach MongoDB", "MONGO_DATABASE_HOST"],
    )
    .await;
    fails_with(&["insert-test"], &ok.clone().set("MONGO_DATABASE_HOST", "http://x"), &["MONGO_DATABASE_HOST"]).await;
    fails_with(&["bridge"], &ok.clone().set("RABBITMQ_PORT", "abc"), &["RABBITMQ_PORT"]).await;
    fails_with(&["bridge"], &ok.clone().set("RABBITMQ_PORT", "1"), &["cannot reach RabbitMQ", "RABBITMQ_PORT"]).await;
    fails_with(
        &["bridge"],
        &ok.clone().set("RABBITMQ_DEFAULT_PASSWORD", "secret-wrong"),
        &["refused", "RABBITMQ_DEFAULT_PASSWORD"],
    )
    .await;
    fails_with(&["bridge"], &ok.clone().set("RABBITMQ_VHOST", &unique("novhost")), &["RABBITMQ_VHOST"]).await;
    let same = ok.get("MONGO_DATABASE_NAME").to_string();
    fails_with(&["bridge"], &ok.clone().set("CDC_STATE_DATABASE", &same), &["CDC_STATE_DATABASE"]).await;
    fails_with(&["bridge"], &ok.clone().set("RABBITMQ_QUEUE_NAME", ""), &["RABBITMQ_QUEUE_NAME"]).await;
    fails_with(&["bridge"], &ok.clone().set("CDC_FORMAT", "avro"), &["CDC_FORMAT", "native or debezium"]).await;
}

#[tokio::test]
async fn bad_sink_configuration_is_one_readable_line() {
    let queue = unique("q_badsink");
    let state = tempfile::tempdir().unwrap();
    let ok = sink_env(&queue, state.path(), "a,b", "y");
    let mut missing = ok.clone();
    missing.vars.remove("SINK_FEATURES");
    fails_with(&["sink"], &missing, &["SINK_FEATURES"]).await;
    fails_with(&["sink"], &ok.clone().set("SINK_LABEL", " "), &["SINK_LABEL"]).await;
    fails_with(&["sink"], &ok.clone().set("SINK_TASK", "clustering"), &["SINK_TASK"]).await;
    fails_with(&["sink"], &ok.clone().set("SINK_HTTP_ADDR", "nowhere"), &["SINK_HTTP_ADDR"]).await;
    fails_with(&["sink"], &ok.clone().set("SINK_PREFETCH", "-1"), &["SINK_PREFETCH"]).await;
    fails_with(&["sink"], &ok.clone().set("SINK_LEARNING_RATE", "0"), &["SINK_LEARNING_RATE"]).await;
    fails_with(&["sink"], &ok.clone().set("RABBITMQ_DEFAULT_PASSWORD", "secret-wrong"), &["RABBITMQ_DEFAULT_PASSWORD"])
        .await;

    // Typed features, model kinds and the models file.
    fails_with(&["sink"], &ok.clone().set("SINK_FEATURES", "a,plan:categorical"), &["SINK_FEATURES", "categorical"])
        .await;
    fails_with(&["sink"], &ok.clone().set("SINK_MODEL", "forest"), &["SINK_MODEL", "adaptive_forest"]).await;
    fails_with(&["sink"], &ok.clone().set("SINK_DRIFT_ACTION", "retrain"), &["SINK_DRIFT_ACTION", "reset"]).await;
    fails_with(
        &["sink"],
        &ok.clone().set("SINK_MODEL", "hoeffding_tree").set("SINK_LEARNING_RATE", "0.1"),
        &["SINK_LEARNING_RATE", "linear only"],
    )
    .await;
    fails_with(&["sink"], &ok.clone().set("SINK_HASH_BUCKETS", "1"), &["SINK_HASH_BUCKETS"]).await;

    // Interoperability: input formats, Debezium keys, the mirrors (no password in the line).
    fails_with(&["sink"], &ok.clone().set("SINK_INPUT", "avro"), &["SINK_INPUT", "native, debezium or auto"]).await;
    fails_with(&["sink"], &ok.clone().set("SINK_DEBEZIUM_KEYS", "orders"), &["SINK_DEBEZIUM_KEYS", "table:column"])
        .await;
    fails_with(&["sink"], &ok.clone().set("SINK_DEBEZIUM_KEY_FROM", "header"), &["SINK_DEBEZIUM_KEY_FROM"]).await;
    let out = fails_with(
        &["sink"],
        &ok.clone().set("SINK_POSTGRES_URL", "postgresql://u:secret-pw@127.0.0.1:notaport/db"),
        &["SINK_POSTGRES_URL", "<redacted>"],
    )
    .await;
    assert!(!out.contains("secret-pw"), "{out}");
    fails_with(&["sink"], &ok.clone().set("SINK_REDIS_URL", "http://x"), &["SINK_REDIS_URL"]).await;
    let models = state.path().join("models.toml");
    std::fs::write(
        &models,
        "[[model]]\nname = \"a\"\nkind = \"forest\"\nfeatures = [\"x\"]\nlabel = \"y\"\n\n\
         [[model]]\nname = \"b\"\nfeatures = [\"x:date\"]\n",
    )
    .unwrap();
    let path = models.to_string_lossy().to_string();
    let mut file_env = ok.clone().set("SINK_MODELS", &path);
    file_env.vars.remove("SINK_FEATURES");
    file_env.vars.remove("SINK_LABEL");
    let out = fails_with(&["sink"], &file_env, &["SINK_MODELS", "2 mistakes"]).await;
    assert!(out.lines().any(|l| l.contains("model `a`: kind `forest` is unknown")), "{out}");
    assert!(out.lines().any(|l| l.contains("model `b`: `label` is required")), "{out}");
    fails_with(&["sink"], &ok.clone().set("SINK_MODELS", &path), &["SINK_MODELS", "SINK_FEATURES, SINK_LABEL"]).await;
    fails_with(
        &["sink"],
        &file_env.clone().set("SINK_MODELS", "/nonexistent/models.toml"),
        &["SINK_MODELS", "cannot read"],
    )
    .await;

    // A checkpoint made with other features is refused, not silently mixed.
    let mut sink = start_sink(&ok).await;
    assert!(sink.terminate(LIMIT).await.success());
    fails_with(&["sink"], &ok.clone().set("SINK_FEATURES", "a,c"), &["SINK_FEATURES", "move it away"]).await;
    delete_topology("/", &queue).await;
}

#[tokio::test]
async fn resume_point_off_the_oplog_exits_with_how_to_start_over() {
    let mongo = Secantus::in_memory_with(&["--oplog-max-entries", "50"]).await;
    let client = mongo.client().await;
    let db = unique("lost");
    let queue = unique("q_lost");
    let env = Env::bridge(&mongo.uri(), &db, &queue);
    let mut bridge = start_bridge(&client, &env).await;
    assert!(bridge.terminate(LIMIT).await.success());

    // While the bridge is down, enough writes happen that its place is pruned away.
    let coll = client.database(&db).collection::<Document>("x");
    for i in 0..200 {
        coll.insert_one(doc! {"i": i}).await.unwrap();
    }
    client.database("admin").run_command(doc! {"secantusAdmin.pruneOplog": 1}).await.unwrap();

    let out = fails_with(&["bridge"], &env, &["fallen off the oplog", "deleteOne"]).await;
    assert_eq!(queue_len("/", &queue).await, Some(0), "nothing published from a broken position:\n{out}");
    delete_topology("/", &queue).await;
}
