//! What the sink learns: one [`ModelSpec`] per model, read from the `SINK_MODELS` TOML file
//! ([`from_toml`]) or made from the one-model shorthand (`SINK_TASK`, `SINK_FEATURES`,
//! `SINK_LABEL`, ...), and checked with one readable line per mistake.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::analytics::{self, spec::AggregateSpec};
use super::features::FeatureSpec;
use crate::ml::{
    AnomalyDetector, AnomalyKind, DriftMonitor, MAX_CATEGORY_ID, MlError, ModelKind, MonitorConfig, Schema, Task,
    Threshold,
};

/// The name of the shorthand's model, and the one `/predict` serves when there is one.
pub const DEFAULT_MODEL: &str = "default";

/// Buckets of a `hash` feature unless set (`hash_buckets`, `SINK_HASH_BUCKETS`).
pub const DEFAULT_HASH_BUCKETS: u32 = 64;

/// One model: what it predicts, from which fields, of which records, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Unique; names the model in `/models`, `/stats` and alerts.
    pub name: String,
    /// Classification or regression.
    pub task: Task,
    /// Which family of model.
    pub kind: ModelKind,
    /// The typed features, in column order.
    pub features: Vec<FeatureSpec>,
    /// The label's field path.
    pub label: String,
    /// Collections to learn from; empty is all.
    pub collections: Vec<String>,
    /// Buckets of every `hash` feature.
    pub hash_buckets: u32,
    /// Hyper-parameters of the kind (a JSON object, or null for all defaults).
    pub params: Value,
    /// The drift detector and what a detection does.
    pub drift: MonitorConfig,
    /// Set for task `anomaly`: an unsupervised model (then `task`, `kind`, `label` and
    /// `drift` are unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<AnomalySpec>,
}

/// An anomaly model's kind, threshold and warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalySpec {
    /// `half_space_trees` (default) or `random_cut_forest`.
    pub kind: AnomalyKind,
    /// `quantile:Q` (default quantile:0.99) or a fixed score.
    pub threshold: Threshold,
    /// Samples learned before any alert; `None` is the model's window.
    pub warmup: Option<u64>,
}

impl ModelSpec {
    /// A model named [`DEFAULT_MODEL`] with default hash buckets, hyper-parameters and drift
    /// settings: the shorthand's.
    pub fn single(
        task: Task,
        kind: ModelKind,
        features: Vec<FeatureSpec>,
        label: String,
        collections: Vec<String>,
    ) -> Self {
        Self {
            name: DEFAULT_MODEL.into(),
            task,
            kind,
            features,
            label,
            collections,
            hash_buckets: DEFAULT_HASH_BUCKETS,
            params: Value::Null,
            drift: MonitorConfig::default(),
            anomaly: None,
        }
    }

    /// An anomaly model named [`DEFAULT_MODEL`]: the shorthand's with `SINK_TASK=anomaly`.
    pub fn anomaly(
        kind: AnomalyKind,
        features: Vec<FeatureSpec>,
        collections: Vec<String>,
        threshold: Threshold,
    ) -> Self {
        Self {
            anomaly: Some(AnomalySpec { kind, threshold, warmup: None }),
            ..Self::single(Task::Classification, ModelKind::Linear, features, String::new(), collections)
        }
    }

    /// A fresh anomaly model (for an anomaly spec).
    pub fn build_anomaly(&self) -> Result<Option<AnomalyDetector>, MlError> {
        let Some(a) = &self.anomaly else { return Ok(None) };
        AnomalyDetector::new(a.kind, self.schema()?, &self.params, a.threshold, a.warmup).map(Some)
    }

    /// `classification`, `regression` or `anomaly`.
    pub fn task_name(&self) -> &'static str {
        if self.anomaly.is_some() { "anomaly" } else { task_name(self.task) }
    }

    /// The kind's name.
    pub fn kind_name(&self) -> &'static str {
        match &self.anomaly {
            Some(a) => a.kind.name(),
            None => self.kind.name(),
        }
    }

    /// The model's columns: each feature's, in order.
    pub fn schema(&self) -> Result<Schema, MlError> {
        Schema::new(self.features.iter().flat_map(FeatureSpec::columns).collect())
    }

    /// A fresh model, under drift monitoring.
    pub fn build(&self) -> Result<DriftMonitor, MlError> {
        DriftMonitor::new(self.task, self.kind, self.schema()?, self.params.clone(), self.drift)
    }

    /// True if the model learns from changes of `collection`.
    pub fn learns_from(&self, collection: &str) -> bool {
        self.collections.is_empty() || self.collections.iter().any(|c| c == collection)
    }

    /// What is wrong with the spec, one line per mistake (empty when it is usable).
    pub fn mistakes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            out.push(format!("name `{}` must be letters, digits, `_`, `-` or `.` (it goes in URLs)", self.name));
        }
        if self.features.is_empty() {
            out.push("`features` is empty: list at least one feature".into());
        }
        for (i, f) in self.features.iter().enumerate() {
            if self.features[..i].contains(f) {
                out.push(format!("feature `{f}` is listed twice"));
            }
        }
        if self.anomaly.is_some() {
            if !self.label.is_empty() {
                out.push("an anomaly model has no `label`: remove it".into());
            }
        } else if self.label.trim().is_empty() {
            out.push("`label` is empty: name the label field".into());
        } else if let Some(f) = self.features.iter().find(|f| f.path == self.label) {
            out.push(format!("feature `{f}` is the label `{}`", self.label));
        }
        if !(2..=MAX_CATEGORY_ID).contains(&self.hash_buckets) {
            out.push(format!("hash_buckets {} must be between 2 and {MAX_CATEGORY_ID}", self.hash_buckets));
        }
        if self.collections.iter().any(|c| c.trim().is_empty()) {
            out.push("`collections` lists an empty name".into());
        }
        if !self.features.is_empty()
            && let Err(e) = self.build_anomaly().and_then(|a| match a {
                Some(_) => Ok(()),
                None => self.build().map(|_| ()),
            })
        {
            out.push(e.to_string());
        }
        out
    }

    /// How a saved model's spec differs from this one in a way its state cannot follow (all
    /// but the collections), if it does: the setting (as named in the models file) and what
    /// it was.
    pub fn differs_from(&self, saved: &ModelSpec) -> Option<(&'static str, String)> {
        let list = |f: &[FeatureSpec]| f.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        Some(if saved.task_name() != self.task_name() || saved.task != self.task {
            ("task", saved.task_name().to_string())
        } else if saved.kind_name() != self.kind_name() {
            ("kind", saved.kind_name().to_string())
        } else if saved.anomaly != self.anomaly {
            ("threshold", saved.anomaly.map(|a| a.threshold.to_string()).unwrap_or_default())
        } else if saved.features != self.features {
            ("features", list(&saved.features))
        } else if saved.label != self.label {
            ("label", saved.label.clone())
        } else if saved.hash_buckets != self.hash_buckets {
            ("hash_buckets", saved.hash_buckets.to_string())
        } else if saved.params != self.params {
            ("params", saved.params.to_string())
        } else if saved.drift != self.drift {
            ("drift", serde_json::to_string(&saved.drift).unwrap_or_default())
        } else {
            return None;
        })
    }
}

/// `classification` or `regression`.
pub fn task_name(task: Task) -> &'static str {
    match task {
        Task::Classification => "classification",
        Task::Regression => "regression",
    }
}

/// Parse a task name.
pub fn parse_task(s: &str) -> Result<Task, String> {
    match s.trim() {
        "classification" => Ok(Task::Classification),
        "regression" => Ok(Task::Regression),
        other => Err(format!("task `{other}` is unknown (use classification, regression or anomaly)")),
    }
}

/// Parse a model kind name.
pub fn parse_kind(s: &str) -> Result<ModelKind, String> {
    [ModelKind::Linear, ModelKind::HoeffdingTree, ModelKind::AdaptiveForest]
        .into_iter()
        .find(|k| k.name() == s.trim())
        .ok_or_else(|| format!("kind `{}` is unknown (use linear, hoeffding_tree or adaptive_forest)", s.trim()))
}

/// The keys of a `[[model]]` table.
const MODEL_KEYS: [&str; 11] = [
    "name",
    "task",
    "kind",
    "features",
    "label",
    "collections",
    "hash_buckets",
    "params",
    "drift",
    "threshold",
    "warmup",
];
/// The keys of its `drift` table.
const DRIFT_KEYS: [&str; 5] = ["detector", "delta", "threshold", "action", "warmup"];

/// The models of a `SINK_MODELS` file: `[[model]]` tables, in order. On failure, every mistake
/// found, one line each, naming the model.
pub fn from_toml(text: &str) -> Result<Vec<ModelSpec>, Vec<String>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        vec![format!(
            "not valid TOML{}: {}",
            line.map(|l| format!(" (line {l})")).unwrap_or_default(),
            e.message().trim()
        )]
    })?;
    let mut mistakes = Vec::new();
    for key in table.keys().filter(|k| !["model", "aggregate", "rule"].contains(&k.as_str())) {
        mistakes.push(format!(
            "unknown top-level key `{key}` (each model is a `[[model]]` table, each aggregate an `[[aggregate]]` table, each rule a `[[rule]]` table)"
        ));
    }
    let models = match table.get("model") {
        None => {
            mistakes.push("no `[[model]]` table: list at least one model".into());
            &[][..]
        }
        Some(toml::Value::Array(a)) => a.as_slice(),
        Some(_) => {
            mistakes.push("`model` must be an array of tables: write `[[model]]`".into());
            &[][..]
        }
    };
    let mut specs: Vec<ModelSpec> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let Some(t) = m.as_table() else {
            mistakes.push(format!("model {}: must be a table", i + 1));
            continue;
        };
        let name = t.get("name").and_then(toml::Value::as_str);
        let who = match name {
            Some(name) => format!("model `{name}`"),
            None => format!("model {}", i + 1),
        };
        match model_from_table(t) {
            Ok(spec) => {
                mistakes.extend(spec.mistakes().into_iter().map(|m| format!("{who}: {m}")));
                specs.push(spec);
            }
            Err(errs) => mistakes.extend(errs.into_iter().map(|m| format!("{who}: {m}"))),
        }
        if let Some(name) = name {
            if names.contains(&name) {
                mistakes.push(format!("{who}: the name is used by an earlier model"));
            }
            names.push(name);
        }
    }
    if mistakes.is_empty() { Ok(specs) } else { Err(mistakes) }
}

/// The `[[aggregate]]` tables of a `SINK_MODELS` file, in order (`None` when it has none; see
/// `sink::analytics::spec::from_table`). On failure, every mistake found, one line each, naming
/// the aggregate. (The TOML itself was checked by [`from_toml`].)
pub fn aggregates_from_toml(text: &str) -> Result<Option<Vec<AggregateSpec>>, Vec<String>> {
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| vec![format!("not valid TOML: {}", e.message().trim())])?;
    let tables = match table.get("aggregate") {
        None => return Ok(None),
        Some(toml::Value::Array(a)) => a,
        Some(_) => return Err(vec!["`aggregate` must be an array of tables: write `[[aggregate]]`".into()]),
    };
    let (mut specs, mut mistakes): (Vec<AggregateSpec>, Vec<String>) = (Vec::new(), Vec::new());
    for (i, t) in tables.iter().enumerate() {
        let who = match t.get("name").and_then(toml::Value::as_str) {
            Some(name) => format!("aggregate `{name}`"),
            None => format!("aggregate {}", i + 1),
        };
        match t.as_table().ok_or_else(|| vec!["must be a table".to_string()]).and_then(analytics::spec::from_table) {
            Ok(s) if specs.iter().any(|o| o.name == s.name) => {
                mistakes.push(format!("{who}: the name `{}` is used by an earlier aggregate", s.name))
            }
            Ok(s) => specs.push(s),
            Err(errs) => mistakes.extend(errs.into_iter().map(|m| format!("{who}: {m}"))),
        }
    }
    if mistakes.is_empty() { Ok(Some(specs)) } else { Err(mistakes) }
}

fn model_from_table(t: &toml::Table) -> Result<ModelSpec, Vec<String>> {
    let mut errs = Vec::new();
    for key in t.keys().filter(|k| !MODEL_KEYS.contains(&k.as_str())) {
        errs.push(format!("unknown key `{key}` (use {})", MODEL_KEYS.join(", ")));
    }
    let name = string(t, "name", &mut errs).unwrap_or_else(|| {
        errs.push("`name` is required".into());
        String::new()
    });
    let task_text = string(t, "task", &mut errs);
    let is_anomaly = task_text.as_deref().map(str::trim) == Some("anomaly");
    let kind_text = string(t, "kind", &mut errs);
    let mut anomaly = None;
    if is_anomaly {
        let kind = match kind_text.as_deref() {
            None => Ok(AnomalyKind::HalfSpaceTrees),
            Some(k) => AnomalyKind::parse(k).ok_or_else(|| {
                format!("kind `{k}` is unknown for task anomaly (use half_space_trees or random_cut_forest)")
            }),
        };
        let threshold = match t.get("threshold") {
            None => Ok(Threshold::default()),
            Some(toml::Value::String(s)) => Threshold::parse(s).map_err(|e| format!("threshold {e}")),
            Some(toml::Value::Float(v)) => Threshold::parse(&v.to_string()).map_err(|e| format!("threshold {e}")),
            Some(_) => Err("`threshold` must be \"quantile:Q\" or a score".to_string()),
        };
        let warmup = match t.get("warmup") {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(*n as u64)),
            Some(_) => Err("`warmup` must be a non-negative integer".to_string()),
        };
        match (kind, threshold, warmup) {
            (Ok(kind), Ok(threshold), Ok(warmup)) => anomaly = Some(AnomalySpec { kind, threshold, warmup }),
            (k, th, w) => errs.extend(k.err().into_iter().chain(th.err()).chain(w.err())),
        }
    } else {
        for key in ["threshold", "warmup"] {
            if t.contains_key(key) {
                errs.push(format!("`{key}` is for task anomaly only"));
            }
        }
    }
    let task = if is_anomaly {
        Ok(Task::Classification)
    } else {
        task_text.map_or(Ok(Task::Classification), |s| parse_task(&s))
    };
    let kind =
        if is_anomaly { Ok(ModelKind::Linear) } else { kind_text.map_or(Ok(ModelKind::Linear), |s| parse_kind(&s)) };
    let (task, kind) = match (task, kind) {
        (Ok(t), Ok(k)) => (t, k),
        (t, k) => {
            errs.extend(t.err().into_iter().chain(k.err()));
            (Task::Classification, ModelKind::Linear)
        }
    };
    let mut features = Vec::new();
    match strings(t, "features", &mut errs) {
        None if !t.contains_key("features") => {
            errs.push("`features` is required: a list such as [\"age\", \"plan:category\"]".into())
        }
        None => {}
        Some(list) => {
            for f in list {
                match FeatureSpec::parse(&f) {
                    Ok(f) => features.push(f),
                    Err(e) => errs.push(format!("feature {e}")),
                }
            }
        }
    }
    let label = string(t, "label", &mut errs).unwrap_or_else(|| {
        if !is_anomaly {
            errs.push("`label` is required: the label's field".into());
        }
        String::new()
    });
    let collections = strings(t, "collections", &mut errs).unwrap_or_default();
    let hash_buckets = match t.get("hash_buckets") {
        None => DEFAULT_HASH_BUCKETS,
        Some(toml::Value::Integer(n)) => u32::try_from(*n).unwrap_or(0),
        Some(_) => {
            errs.push("`hash_buckets` must be an integer".into());
            DEFAULT_HASH_BUCKETS
        }
    };
    let params = match t.get("params") {
        None => Value::Null,
        Some(v @ toml::Value::Table(_)) => serde_json::to_value(v).unwrap_or(Value::Null),
        Some(_) => {
            errs.push("`params` must be a table of hyper-parameters (`[model.params]`)".into());
            Value::Null
        }
    };
    let drift = match t.get("drift") {
        None => MonitorConfig::default(),
        Some(toml::Value::Table(d)) => drift_config(d).unwrap_or_else(|e| {
            errs.push(e);
            MonitorConfig::default()
        }),
        Some(_) => {
            errs.push("`drift` must be a table (`[model.drift]`)".into());
            MonitorConfig::default()
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(ModelSpec { name, task, kind, features, label, collections, hash_buckets, params, drift, anomaly })
}

/// The `[[rule]]` tables of a `SINK_MODELS` file: `name`, optional `collection`, `when` (the
/// expression). On failure, every mistake, one line each.
pub fn rules_from_toml(text: &str) -> Result<Vec<super::rules::Rule>, Vec<String>> {
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| vec![format!("not valid TOML: {}", e.message().trim())])?;
    let tables = match table.get("rule") {
        None => return Ok(Vec::new()),
        Some(toml::Value::Array(a)) => a,
        Some(_) => return Err(vec!["`rule` must be an array of tables: write `[[rule]]`".into()]),
    };
    let (mut rules, mut mistakes): (Vec<super::rules::Rule>, Vec<String>) = (Vec::new(), Vec::new());
    for (i, t) in tables.iter().enumerate() {
        let get = |k: &str| t.get(k).and_then(toml::Value::as_str);
        if let Some(key) =
            t.as_table().and_then(|t| t.keys().find(|k| !["name", "collection", "when"].contains(&k.as_str())))
        {
            mistakes.push(format!("rule {}: unknown key `{key}` (use name, collection, when)", i + 1));
            continue;
        }
        let (Some(name), Some(when)) = (get("name"), get("when")) else {
            mistakes.push(format!("rule {}: `name` and `when` (the expression) are required strings", i + 1));
            continue;
        };
        match super::rules::Rule::from_parts(name, get("collection"), when) {
            Ok(r) if rules.iter().any(|o| o.name == r.name) => {
                mistakes.push(format!("rule `{name}` is declared twice"))
            }
            Ok(r) => rules.push(r),
            Err(e) => mistakes.push(e),
        }
    }
    if mistakes.is_empty() { Ok(rules) } else { Err(mistakes) }
}

/// `[model.drift]`: `detector` (`adwin` or `page_hinkley`) with its `delta` or `threshold`,
/// `action` (`alert` or `reset`) and `warmup`.
fn drift_config(d: &toml::Table) -> Result<MonitorConfig, String> {
    if let Some(key) = d.keys().find(|k| !DRIFT_KEYS.contains(&k.as_str())) {
        return Err(format!("drift: unknown key `{key}` (use {})", DRIFT_KEYS.join(", ")));
    }
    let json = |k: &str| d.get(k).map(|v| serde_json::to_value(v).unwrap_or(Value::Null));
    let mut detector = serde_json::Map::new();
    detector.insert("detector".into(), json("detector").unwrap_or_else(|| "adwin".into()));
    for k in ["delta", "threshold"] {
        if let Some(v) = json(k) {
            detector.insert(k.into(), v);
        }
    }
    let mut config = serde_json::Map::new();
    config.insert("detector".into(), Value::Object(detector));
    for k in ["action", "warmup"] {
        if let Some(v) = json(k) {
            config.insert(k.into(), v);
        }
    }
    serde_json::from_value(Value::Object(config)).map_err(|e| format!("drift: {e}"))
}

/// An optional string; a wrong type is a mistake.
fn string(t: &toml::Table, key: &str, errs: &mut Vec<String>) -> Option<String> {
    match t.get(key)? {
        toml::Value::String(s) => Some(s.clone()),
        _ => {
            errs.push(format!("`{key}` must be a string"));
            None
        }
    }
}

/// An optional list of strings; a wrong type is a mistake.
fn strings(t: &toml::Table, key: &str, errs: &mut Vec<String>) -> Option<Vec<String>> {
    let list = t.get(key)?.as_array().and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect());
    if list.is_none() {
        errs.push(format!("`{key}` must be a list of strings"));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::DriftAction;

    const GOOD: &str = r#"
[[model]]
name = "churn"
kind = "hoeffding_tree"
features = ["age", "plan:category", "city:hash", "signup:date?", "tags:count"]
label = "churned"
collections = ["customers"]
hash_buckets = 32
[model.params]
grace_period = 50
[model.drift]
detector = "page_hinkley"
threshold = 20.0
action = "reset"

[[model]]
name = "spend"
task = "regression"
features = ["age", "plan:category"]
label = "monthly_spend"
"#;

    #[test]
    fn a_models_file_gives_every_model() {
        let specs = from_toml(GOOD).unwrap();
        assert_eq!(specs.len(), 2);
        let churn = &specs[0];
        assert_eq!((churn.task, churn.kind, churn.hash_buckets), (Task::Classification, ModelKind::HoeffdingTree, 32));
        assert_eq!(churn.features[3].to_string(), "signup:date?");
        assert_eq!(churn.params, serde_json::json!({"grace_period": 50}));
        assert_eq!(churn.drift.action, DriftAction::Reset);
        assert_eq!(churn.schema().unwrap().len(), 1 + 1 + 1 + 4 + 1);
        assert!(churn.learns_from("customers") && !churn.learns_from("orders"));
        let spend = &specs[1];
        assert_eq!(
            (spend.task, spend.kind, spend.drift),
            (Task::Regression, ModelKind::Linear, MonitorConfig::default())
        );
        assert!(spend.learns_from("anything"));
        assert_eq!(spend.differs_from(&spend.clone()), None);
        let other = ModelSpec { label: "x".into(), ..spend.clone() };
        assert_eq!(spend.differs_from(&other), Some(("label", "x".to_string())));
    }

    #[test]
    fn anomaly_models_and_rule_tables() {
        let text = r#"
[[model]]
name = "odd"
task = "anomaly"
kind = "random_cut_forest"
features = ["price", "quantity"]
threshold = "0.8"
warmup = 10

[[rule]]
name = "big"
collection = "orders"
when = "price > 100"
"#;
        let specs = from_toml(text).unwrap();
        let a = specs[0].anomaly.unwrap();
        assert_eq!((a.kind, a.threshold, a.warmup), (AnomalyKind::RandomCutForest, Threshold::Fixed(0.8), Some(10)));
        assert_eq!((specs[0].task_name(), specs[0].kind_name()), ("anomaly", "random_cut_forest"));
        let rules = rules_from_toml(text).unwrap();
        assert_eq!((rules[0].name.as_str(), rules[0].collection.as_deref()), ("big", Some("orders")));
        let bad = "[[model]]\nname = \"o\"\ntask = \"anomaly\"\nkind = \"linear\"\nfeatures = [\"p\"]\nthreshold = \"quantile:7\"\n";
        let mistakes = from_toml(bad).unwrap_err();
        assert_eq!(mistakes.len(), 2, "{mistakes:#?}");
        assert!(mistakes[0].contains("unknown for task anomaly") && mistakes[1].contains("quantile"), "{mistakes:#?}");
        assert!(rules_from_toml("[[rule]]\nname = \"r\"\nwhen = \"x >\"\n").unwrap_err()[0].starts_with("rule `r`"));
    }

    #[test]
    fn aggregate_tables_sit_beside_the_models() {
        let text = format!(
            "{GOOD}\n[[aggregate]]\ncollection = \"orders\"\nwindow = \"1m\"\ngroup_by = \"status\"\nmeasures = [\"sum(quantity)\"]\n\n[[aggregate]]\nname = \"all\"\ncollection = \"*\"\nwindow = \"1h\"\n"
        );
        assert_eq!(from_toml(&text).unwrap().len(), 2, "the models are read as before");
        let aggregates = aggregates_from_toml(&text).unwrap().unwrap();
        let names: Vec<&str> = aggregates.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["orders:1m:by=status:sum(quantity)", "all"]);
        assert_eq!(aggregates_from_toml(GOOD).unwrap(), None);
        let bad = "[[aggregate]]\nname = \"x\"\ncollection = \"o\"\nwindow = \"soon\"\n[[aggregate]]\ncollection = \"o\"\nwindow = \"1m\"\nname = \"x\"\n";
        let mistakes = aggregates_from_toml(bad).unwrap_err();
        assert_eq!(mistakes.len(), 1, "{mistakes:#?}");
        assert!(mistakes[0].starts_with("aggregate `x`: window `soon` is not a duration"), "{mistakes:#?}");
        let dup = "[[aggregate]]\nname = \"x\"\ncollection = \"o\"\nwindow = \"1m\"\n[[aggregate]]\ncollection = \"o\"\nwindow = \"2m\"\nname = \"x\"\n";
        assert_eq!(
            aggregates_from_toml(dup).unwrap_err(),
            ["aggregate `x`: the name `x` is used by an earlier aggregate"]
        );
    }

    #[test]
    fn every_mistake_is_one_line_naming_its_model() {
        let bad = r#"
colour = "red"
[[model]]
name = "a"
kind = "forest"
features = ["x:categorical", "y"]
label = "y"
hash_buckets = 1
[model.params]
grace = 3
[[model]]
name = "b"
task = "ranking"
features = "x"
[model.drift]
action = "retrain"
[[model]]
name = "a"
features = ["x"]
label = "l"
[model.params]
learning_rate = -1
"#;
        let mistakes = from_toml(bad).unwrap_err();
        let expected = [
            "unknown top-level key `colour`",
            "model `a`: kind `forest` is unknown",
            "model `a`: feature `x:categorical`: unknown feature type `categorical`",
            "model `b`: task `ranking` is unknown",
            "model `b`: `features` must be a list of strings",
            "model `b`: `label` is required",
            "model `b`: drift: unknown variant `retrain`",
            "model `a`: invalid hyper-parameter learning_rate",
            "model `a`: the name is used by an earlier model",
        ];
        for e in expected {
            assert!(mistakes.iter().any(|m| m.starts_with(e)), "no mistake starting {e:?} in {mistakes:#?}");
        }
        assert!(mistakes.iter().all(|m| !m.contains('\n')), "{mistakes:#?}");
        let one = from_toml(
            "[[model]]\nname = \"c\"\nfeatures = [\"y\"]\nlabel = \"y\"\nhash_buckets = 1\n[model.params]\ngrace = 3",
        )
        .unwrap_err();
        assert_eq!(one.len(), 3, "{one:#?}");
        assert!(one[0].contains("is the label") && one[1].contains("hash_buckets 1") && one[2].contains("grace"));
        assert!(from_toml("[[model]\nname=1").unwrap_err()[0].starts_with("not valid TOML (line 1)"));
        assert_eq!(from_toml("").unwrap_err(), ["no `[[model]]` table: list at least one model"]);
    }
}
