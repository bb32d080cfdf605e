//! The sink's settings: `SINK_*` from the environment (envy) and the models file (TOML),
//! validated into [`SinkSettings`]; a wrong value is one line naming the variable.

use serde::Deserialize;

use crate::config::{RabbitSettings, SecretUrl, split_list};
use crate::error::ConfigError;

fn default_sink_task() -> String {
    "classification".into()
}
fn default_sink_state_dir() -> String {
    "./sink-state".into()
}
fn default_checkpoint_every() -> u64 {
    1000
}
fn default_http_addr() -> String {
    "127.0.0.1:8088".into()
}
fn default_stream_start() -> String {
    "first".into()
}

fn default_prefetch() -> u16 {
    512
}

/// The sink's own settings (the RabbitMQ ones are shared with the bridge).
#[derive(Clone, Debug, Deserialize)]
pub struct SinkEnv {
    /// `SINK_MODELS`: path of a TOML file listing the models; instead of the one-model
    /// shorthand below.
    #[serde(default)]
    pub sink_models: Option<String>,
    /// `SINK_TASK`: `classification` or `regression`.
    #[serde(default = "default_sink_task")]
    pub sink_task: String,
    /// `SINK_FEATURES`: comma-separated typed features (`age,plan:category,...`; dotted paths
    /// allowed).
    #[serde(default)]
    pub sink_features: Option<String>,
    /// `SINK_LABEL`: the label field (dotted path allowed).
    #[serde(default)]
    pub sink_label: Option<String>,
    /// `SINK_MODEL`: the shorthand model's kind: `linear` (default), `hoeffding_tree` or
    /// `adaptive_forest`.
    #[serde(default)]
    pub sink_model: Option<String>,
    /// `SINK_DRIFT_ACTION`: the shorthand model's drift action: `alert` (default) or `reset`.
    #[serde(default)]
    pub sink_drift_action: Option<String>,
    /// `SINK_HASH_BUCKETS`: buckets of the shorthand model's `hash` features.
    #[serde(default)]
    pub sink_hash_buckets: Option<u32>,
    /// `SINK_COLLECTIONS`: collections to learn from; empty means all.
    #[serde(default)]
    pub sink_collections: String,
    /// `SINK_STATE_DIR`: where checkpoints live.
    #[serde(default = "default_sink_state_dir")]
    pub sink_state_dir: String,
    /// `SINK_CHECKPOINT_EVERY`: applied events between checkpoints.
    #[serde(default = "default_checkpoint_every")]
    pub sink_checkpoint_every: u64,
    /// `SINK_HTTP_ADDR`: address of the HTTP API.
    #[serde(default = "default_http_addr")]
    pub sink_http_addr: String,
    /// `SINK_PREFETCH`: RabbitMQ prefetch (unacknowledged deliveries in flight).
    #[serde(default = "default_prefetch")]
    pub sink_prefetch: u16,
    /// `SINK_PARTITION`: with `RABBITMQ_PARTITIONS`, the partition this sink consumes.
    #[serde(default)]
    pub sink_partition: Option<u16>,
    /// `SINK_STREAM_START`: with `RABBITMQ_QUEUE_TYPE=stream`, where a sink without a
    /// checkpoint starts reading: `first` (the retained history), `last` or `next`.
    #[serde(default = "default_stream_start")]
    pub sink_stream_start: String,
    /// `SINK_LEARNING_RATE`: SGD step size of a linear shorthand model; unset uses the
    /// model's default.
    #[serde(default)]
    pub sink_learning_rate: Option<f64>,
    /// `SINK_L2`: L2 penalty; unset uses the model's default.
    #[serde(default)]
    pub sink_l2: Option<f64>,
    /// `SINK_AGGREGATES`: the streaming aggregates, `collection:window[:by=path][:measures]`
    /// separated by `;` (default `*:1m`).
    #[serde(default)]
    pub sink_aggregates: Option<String>,
    /// `SINK_AGGREGATE_LATENESS`: how late an event may arrive and still update its window.
    #[serde(default)]
    pub sink_aggregate_lateness: Option<String>,
    /// `SINK_BRIDGE_URL`: the bridge's HTTP address (its `CDC_HTTP_ADDR`), for the dashboard.
    #[serde(default)]
    pub sink_bridge_url: Option<String>,
    /// `SINK_INPUT`: `native` (default), `debezium` or `auto`.
    #[serde(default)]
    pub sink_input: String,
    /// `SINK_DEBEZIUM_KEYS`: key columns per table, `table:col[+col],...` (default `id`).
    #[serde(default)]
    pub sink_debezium_keys: String,
    /// `SINK_DEBEZIUM_KEY_FROM`: `value` (default) or `routing_key`.
    #[serde(default)]
    pub sink_debezium_key_from: String,
    /// `SINK_POSTGRES_URL`: materialise the records into this PostgreSQL database.
    #[serde(default)]
    pub sink_postgres_url: Option<String>,
    /// `SINK_POSTGRES_SCHEMA`: the schema of those tables (default `mongo_cdc`).
    #[serde(default)]
    pub sink_postgres_schema: Option<String>,
    /// `SINK_REDIS_URL`: mirror `/stats` and the alerts into this Redis.
    #[serde(default)]
    pub sink_redis_url: Option<String>,
    /// `SINK_ANOMALY_THRESHOLD`: with `SINK_TASK=anomaly`, `quantile:Q` (default quantile:0.99)
    /// or a fixed score in [0, 1].
    #[serde(default)]
    pub sink_anomaly_threshold: Option<String>,
    /// `SINK_ALERT_RULES`: `name[@collection]: expression` rules separated by `;`.
    #[serde(default)]
    pub sink_alert_rules: Option<String>,
    /// `SINK_SCHEMA_WARMUP`: events per collection before a new field or type alerts.
    #[serde(default = "default_schema_warmup")]
    pub sink_schema_warmup: u64,
    /// `MONGO_COLLECTIONS` (the bridge's): when set, the collections a rule may name.
    #[serde(default)]
    pub mongo_collections: Option<String>,
}

/// Where the sink mirrors what it holds: PostgreSQL tables, a Redis hash and list.
#[derive(Clone, Debug, Default)]
pub struct MirrorSettings {
    /// `SINK_POSTGRES_URL`.
    pub postgres_url: Option<SecretUrl>,
    /// `SINK_POSTGRES_SCHEMA`.
    pub postgres_schema: String,
    /// `SINK_REDIS_URL`.
    pub redis_url: Option<SecretUrl>,
}

fn default_schema_warmup() -> u64 {
    crate::sink::schema::DEFAULT_SCHEMA_WARMUP
}

/// Everything `mongo-cdc sink` needs, validated.
#[derive(Clone, Debug)]
pub struct SinkSettings {
    /// RabbitMQ side (shared variables with the bridge).
    pub rabbit: RabbitSettings,
    /// The models to train (at least one), from `SINK_MODELS` or the shorthand.
    pub models: Vec<crate::sink::spec::ModelSpec>,
    /// The `SINK_MODELS` file they come from; `None` for the shorthand.
    pub models_file: Option<std::path::PathBuf>,
    /// Checkpoint directory.
    pub state_dir: std::path::PathBuf,
    /// Applied events between checkpoints (at least 1).
    pub checkpoint_every: u64,
    /// HTTP listen address.
    pub http_addr: std::net::SocketAddr,
    /// RabbitMQ prefetch (at least 1).
    pub prefetch: u16,
    /// The partition consumed (`SINK_PARTITION`), when the queues are partitioned.
    pub partition: Option<u16>,
    /// `SINK_STREAM_START`: `first`, `last` or `next`.
    pub stream_start: String,
    /// The streaming aggregates and their lateness.
    pub analytics: crate::sink::analytics::AnalyticsSettings,
    /// The bridge's base URL (`http://host:port`) whose snapshot progress the dashboard shows.
    pub bridge_url: Option<String>,
    /// How message bodies are read: `SINK_INPUT`, `SINK_DEBEZIUM_KEYS`, `SINK_DEBEZIUM_KEY_FROM`.
    pub decoder: crate::sink::decode::Decoder,
    /// The PostgreSQL and Redis mirrors.
    pub mirrors: MirrorSettings,
    /// The declared alert rules (`SINK_ALERT_RULES` or the models file's `[[rule]]` tables).
    pub rules: Vec<crate::sink::rules::Rule>,
    /// `SINK_SCHEMA_WARMUP`.
    pub schema_warmup: u64,
}

impl SinkSettings {
    /// Read and validate from the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let rabbit = RabbitSettings::from_env()?;
        let env: SinkEnv = envy::from_env().map_err(ConfigError::from_envy)?;
        let file = env.sink_models.as_deref().map(str::trim).filter(|p| !p.is_empty());
        let models = match file {
            Some(path) => models_file(path, &env)?,
            None => vec![shorthand_model(&env)?],
        };
        let http_addr = env.sink_http_addr.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "SINK_HTTP_ADDR",
                format!("`{}` is not host:port (e.g. 127.0.0.1:8088)", env.sink_http_addr),
            )
        })?;
        if env.sink_checkpoint_every == 0 {
            return Err(ConfigError::invalid("SINK_CHECKPOINT_EVERY", "must be at least 1"));
        }
        if env.sink_prefetch == 0 {
            return Err(ConfigError::invalid("SINK_PREFETCH", "must be at least 1"));
        }
        if env.sink_state_dir.trim().is_empty() {
            return Err(ConfigError::invalid("SINK_STATE_DIR", "must not be empty"));
        }
        let partitions = rabbit.rabbitmq_partitions;
        let partition = match env.sink_partition {
            Some(k) if partitions == 0 => {
                return Err(ConfigError::invalid("SINK_PARTITION", format!("is {k} but RABBITMQ_PARTITIONS is 0")));
            }
            Some(k) if k >= partitions => {
                return Err(ConfigError::invalid(
                    "SINK_PARTITION",
                    format!("is {k}; RABBITMQ_PARTITIONS is {partitions}, so it must be 0 to {}", partitions - 1),
                ));
            }
            None if partitions > 0 => {
                return Err(ConfigError::missing(
                    "SINK_PARTITION",
                    format!(
                        "RABBITMQ_PARTITIONS is {partitions}: name the partition this sink consumes (0 to {})",
                        partitions - 1
                    ),
                ));
            }
            k => k,
        };
        let stream_start = env.sink_stream_start.trim().to_lowercase();
        if !["first", "last", "next"].contains(&stream_start.as_str()) {
            return Err(ConfigError::invalid(
                "SINK_STREAM_START",
                format!("`{stream_start}`; use first, last or next"),
            ));
        }
        let analytics = analytics_settings(&env, file)?;
        let bridge_url = bridge_url(env.sink_bridge_url.as_deref())?;
        let decoder = decoder(&env)?;
        let mirrors = mirrors(&env)?;
        let rules = alert_rules(&env, file, &models)?;
        Ok(Self {
            rabbit,
            models,
            models_file: file.map(Into::into),
            state_dir: env.sink_state_dir.trim().into(),
            checkpoint_every: env.sink_checkpoint_every,
            http_addr,
            prefetch: env.sink_prefetch,
            partition,
            stream_start,
            analytics,
            bridge_url,
            decoder,
            mirrors,
            rules,
            schema_warmup: env.sink_schema_warmup,
        })
    }
}

/// `SINK_INPUT`, `SINK_DEBEZIUM_KEYS`, `SINK_DEBEZIUM_KEY_FROM`.
fn decoder(env: &SinkEnv) -> Result<crate::sink::decode::Decoder, ConfigError> {
    use crate::sink::decode::{Decoder, Input, KeyColumns, KeyFrom};
    Ok(Decoder {
        input: Input::parse(&env.sink_input.to_lowercase()).map_err(|e| ConfigError::invalid("SINK_INPUT", e))?,
        keys: KeyColumns::parse(&env.sink_debezium_keys).map_err(|e| ConfigError::invalid("SINK_DEBEZIUM_KEYS", e))?,
        key_from: KeyFrom::parse(&env.sink_debezium_key_from.to_lowercase())
            .map_err(|e| ConfigError::invalid("SINK_DEBEZIUM_KEY_FROM", e))?,
    })
}

/// `SINK_POSTGRES_URL`, `SINK_POSTGRES_SCHEMA`, `SINK_REDIS_URL`.
fn mirrors(env: &SinkEnv) -> Result<MirrorSettings, ConfigError> {
    let set = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(|s| SecretUrl(s.into()));
    let postgres_url = set(&env.sink_postgres_url);
    if let Some(url) = &postgres_url
        && let Err(e) = url.expose().parse::<tokio_postgres::Config>()
    {
        return Err(ConfigError::invalid(
            "SINK_POSTGRES_URL",
            format!("`{url}` is not a PostgreSQL connection string: {e}"),
        ));
    }
    let schema = env.sink_postgres_schema.as_deref().map(str::trim).filter(|s| !s.is_empty()).unwrap_or("mongo_cdc");
    let redis_url = set(&env.sink_redis_url);
    if let Some(url) = &redis_url
        && let Err(e) = redis::Client::open(url.expose())
    {
        return Err(ConfigError::invalid("SINK_REDIS_URL", format!("`{url}` is not a Redis URL: {e}")));
    }
    Ok(MirrorSettings { postgres_url, postgres_schema: schema.to_string(), redis_url })
}

/// The rules from `SINK_ALERT_RULES` or the models file's `[[rule]]` tables (one place, not
/// both). A rule naming a collection must name one the bridge watches (`MONGO_COLLECTIONS`,
/// when set) and, when every model is limited to some collections and no list of the
/// bridge's is known, one of those.
fn alert_rules(
    env: &SinkEnv,
    models_file: Option<&str>,
    models: &[crate::sink::spec::ModelSpec],
) -> Result<Vec<crate::sink::rules::Rule>, ConfigError> {
    use crate::sink::{rules, spec};
    let from_env = env.sink_alert_rules.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let from_file = match models_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::invalid("SINK_MODELS", format!("cannot read `{path}`: {e}")))?;
            spec::rules_from_toml(&text)
                .map_err(|m| ConfigError::invalid("SINK_MODELS", format!("in `{path}`: {}", m.join("; "))))?
        }
        None => Vec::new(),
    };
    let (rules, var) = match (from_env, from_file.is_empty()) {
        (Some(_), false) => {
            return Err(ConfigError::invalid(
                "SINK_ALERT_RULES",
                "is set, and the SINK_MODELS file has [[rule]] tables: declare the rules in one place",
            ));
        }
        (Some(text), true) => {
            (rules::parse_rules(text).map_err(|e| ConfigError::invalid("SINK_ALERT_RULES", e))?, "SINK_ALERT_RULES")
        }
        (None, _) => (from_file, "SINK_MODELS"),
    };
    let known: Option<Vec<String>> = match env.mongo_collections.as_deref().map(split_list) {
        Some(list) if !list.is_empty() => Some(list),
        _ if !models.is_empty() && models.iter().all(|m| !m.collections.is_empty()) => {
            Some(models.iter().flat_map(|m| m.collections.iter().cloned()).collect())
        }
        _ => None,
    };
    if let Some(known) = known {
        for r in &rules {
            if let Some(c) = r.collection.as_deref().filter(|c| !known.iter().any(|k| k == c)) {
                return Err(ConfigError::invalid(
                    var,
                    format!(
                        "rule `{}` names collection `{c}`, which is not watched (known: {})",
                        r.name,
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(rules)
}

/// The aggregates from `SINK_AGGREGATES` or the models file's `[[aggregate]]` tables (one
/// place, not both), else the default; and `SINK_AGGREGATE_LATENESS`.
fn analytics_settings(
    env: &SinkEnv,
    models_file: Option<&str>,
) -> Result<crate::sink::analytics::AnalyticsSettings, ConfigError> {
    use crate::sink::analytics::{AnalyticsSettings, spec};
    let mut settings = AnalyticsSettings::default();
    let listed =
        |n: usize, place: String, lines: String| format!("{n} mistake{}{place}:{lines}", if n == 1 { "" } else { "s" });
    let from_env = env.sink_aggregates.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let from_file = match models_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::invalid("SINK_MODELS", format!("cannot read `{path}`: {e}")))?;
            crate::sink::spec::aggregates_from_toml(&text).map_err(|mistakes| {
                let lines: String = mistakes.iter().map(|m| format!("\n  {path}: {m}")).collect();
                ConfigError::invalid("SINK_MODELS", listed(mistakes.len(), format!(" in `{path}`"), lines))
            })?
        }
        None => None,
    };
    match (from_env, from_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "SINK_AGGREGATES",
                "is set, and the SINK_MODELS file has [[aggregate]] tables: declare the aggregates in one place",
            ));
        }
        (Some(text), None) => {
            settings.aggregates = spec::parse_list(text).map_err(|mistakes| {
                let lines: String = mistakes.iter().map(|m| format!("\n  {m}")).collect();
                ConfigError::invalid("SINK_AGGREGATES", listed(mistakes.len(), String::new(), lines))
            })?;
        }
        (None, Some(list)) => settings.aggregates = list,
        (None, None) => {}
    }
    if let Some(text) = env.sink_aggregate_lateness.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        settings.lateness = humantime::parse_duration(text).map_err(|e| {
            ConfigError::invalid("SINK_AGGREGATE_LATENESS", format!("`{text}`: {e} (e.g. 0s, 30s, 5m)"))
        })?;
    }
    Ok(settings)
}

/// `SINK_BRIDGE_URL` as a base URL: `http://host:port`, or just `host:port` (as in
/// `CDC_HTTP_ADDR`); empty is none.
fn bridge_url(value: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let host_port = v.strip_prefix("http://").unwrap_or(v).trim_end_matches('/');
    let port_ok = host_port.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if v.starts_with("https://") || host_port.contains('/') || !port_ok {
        return Err(ConfigError::invalid(
            "SINK_BRIDGE_URL",
            format!("`{v}` is not http://host:port (the bridge's CDC_HTTP_ADDR, e.g. http://127.0.0.1:8089)"),
        ));
    }
    Ok(Some(format!("http://{host_port}")))
}

/// The models of the `SINK_MODELS` file at `path`; every mistake on a line of its own. The
/// shorthand's variables must then be unset, so no setting is silently ignored.
fn models_file(path: &str, env: &SinkEnv) -> Result<Vec<crate::sink::spec::ModelSpec>, ConfigError> {
    let shorthand = [
        ("SINK_FEATURES", env.sink_features.is_some()),
        ("SINK_LABEL", env.sink_label.is_some()),
        ("SINK_MODEL", env.sink_model.is_some()),
        ("SINK_DRIFT_ACTION", env.sink_drift_action.is_some()),
        ("SINK_HASH_BUCKETS", env.sink_hash_buckets.is_some()),
        ("SINK_LEARNING_RATE", env.sink_learning_rate.is_some()),
        ("SINK_L2", env.sink_l2.is_some()),
        ("SINK_COLLECTIONS", !env.sink_collections.trim().is_empty()),
    ];
    let set: Vec<&str> = shorthand.iter().filter(|(_, set)| *set).map(|(v, _)| *v).collect();
    if !set.is_empty() {
        return Err(ConfigError::invalid(
            "SINK_MODELS",
            format!(
                "is set, and so is {}: the models file replaces the one-model shorthand; unset them",
                set.join(", ")
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid("SINK_MODELS", format!("cannot read `{path}`: {e}")))?;
    crate::sink::spec::from_toml(&text).map_err(|mistakes| {
        let n = mistakes.len();
        let lines: String = mistakes.iter().map(|m| format!("\n  {path}: {m}")).collect();
        ConfigError::invalid("SINK_MODELS", format!("{n} mistake{} in `{path}`:{lines}", if n == 1 { "" } else { "s" }))
    })
}

/// The one model of the shorthand: `SINK_TASK`, `SINK_FEATURES`, `SINK_LABEL`,
/// `SINK_COLLECTIONS`, `SINK_MODEL`, `SINK_DRIFT_ACTION`, `SINK_HASH_BUCKETS`,
/// `SINK_LEARNING_RATE` and `SINK_L2`, named `default`.
fn shorthand_model(env: &SinkEnv) -> Result<crate::sink::spec::ModelSpec, ConfigError> {
    use crate::sink::features::FeatureSpec;
    use crate::sink::spec::{self, ModelSpec};
    let anomaly = env.sink_task.trim() == "anomaly";
    let task = if anomaly {
        crate::ml::Task::Classification
    } else {
        spec::parse_task(&env.sink_task).map_err(|e| ConfigError::invalid("SINK_TASK", e))?
    };
    let features = split_list(env.sink_features.as_deref().unwrap_or(""));
    if features.is_empty() {
        return Err(ConfigError::missing(
            "SINK_FEATURES",
            "list the feature fields, comma-separated (e.g. age,plan:category), or set SINK_MODELS",
        ));
    }
    let features = features
        .iter()
        .map(|f| FeatureSpec::parse(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::invalid("SINK_FEATURES", e))?;
    let label = env.sink_label.as_deref().unwrap_or("").trim().to_string();
    if anomaly {
        if !label.is_empty() {
            return Err(ConfigError::invalid(
                "SINK_LABEL",
                "is set, but an anomaly model (SINK_TASK=anomaly) has no label: unset it",
            ));
        }
        let kind = match env.sink_model.as_deref() {
            None => crate::ml::AnomalyKind::HalfSpaceTrees,
            Some(k) => crate::ml::AnomalyKind::parse(k).ok_or_else(|| {
                ConfigError::invalid(
                    "SINK_MODEL",
                    format!("`{}` is not an anomaly model (use half_space_trees or random_cut_forest)", k.trim()),
                )
            })?,
        };
        let threshold = match env.sink_anomaly_threshold.as_deref() {
            None => crate::ml::Threshold::default(),
            Some(t) => crate::ml::Threshold::parse(t).map_err(|e| ConfigError::invalid("SINK_ANOMALY_THRESHOLD", e))?,
        };
        let model = ModelSpec::anomaly(kind, features, split_list(&env.sink_collections), threshold);
        if let Some(m) = model.mistakes().into_iter().next() {
            return Err(ConfigError::invalid("SINK_FEATURES", m));
        }
        return Ok(model);
    }
    if label.is_empty() {
        return Err(ConfigError::missing("SINK_LABEL", "name the label field"));
    }
    if features.iter().any(|f| f.path == label) {
        return Err(ConfigError::invalid("SINK_FEATURES", format!("contains the label `{label}` (SINK_LABEL)")));
    }
    let kind = match env.sink_model.as_deref() {
        Some(k) => spec::parse_kind(k).map_err(|e| ConfigError::invalid("SINK_MODEL", e))?,
        None => crate::ml::ModelKind::Linear,
    };
    let mut model = ModelSpec::single(task, kind, features, label, split_list(&env.sink_collections));
    match env.sink_drift_action.as_deref().map(str::trim) {
        None | Some("alert") => {}
        Some("reset") => model.drift.action = crate::ml::DriftAction::Reset,
        Some(other) => {
            return Err(ConfigError::invalid("SINK_DRIFT_ACTION", format!("`{other}`; use `alert` or `reset`")));
        }
    }
    if let Some(n) = env.sink_hash_buckets {
        model.hash_buckets = n;
    }
    let mut params = serde_json::Map::new();
    for (var, name, value, ok) in [
        (
            "SINK_LEARNING_RATE",
            "learning_rate",
            env.sink_learning_rate,
            env.sink_learning_rate.is_none_or(|v| v.is_finite() && v > 0.0),
        ),
        ("SINK_L2", "l2", env.sink_l2, env.sink_l2.is_none_or(|v| v.is_finite() && v >= 0.0)),
    ] {
        let Some(v) = value else { continue };
        if !ok {
            let what = if name == "l2" { "must be a number, 0 or above" } else { "must be a number above 0" };
            return Err(ConfigError::invalid(var, what));
        }
        if kind != crate::ml::ModelKind::Linear {
            return Err(ConfigError::invalid(var, format!("applies to SINK_MODEL=linear only, not {}", kind.name())));
        }
        params.insert(name.into(), v.into());
    }
    if !params.is_empty() {
        model.params = serde_json::Value::Object(params);
    }
    if let Some(m) = model.mistakes().into_iter().next() {
        let var = if m.starts_with("hash_buckets") { "SINK_HASH_BUCKETS" } else { "SINK_FEATURES" };
        return Err(ConfigError::invalid(var, m));
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_urls() {
        assert_eq!(bridge_url(Some("127.0.0.1:8089")).unwrap().as_deref(), Some("http://127.0.0.1:8089"));
        assert_eq!(bridge_url(Some(" http://h:1/ ")).unwrap().as_deref(), Some("http://h:1"));
        assert_eq!(bridge_url(Some("")).unwrap(), None);
        for bad in ["https://h:1", "h", "http://h:1/metrics", "h:port"] {
            let e = bridge_url(Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with("SINK_BRIDGE_URL is invalid") && !e.contains('\n'), "{e}");
        }
    }
}
