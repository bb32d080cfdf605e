//! What the sink aggregates: one [`AggregateSpec`] per aggregate, from `SINK_AGGREGATES`
//! ([`parse_list`]) or the `[[aggregate]]` tables of the models file ([`from_table`]), checked
//! with one readable line per mistake.
//!
//! `SINK_AGGREGATES` lists aggregates separated by `;`, each `collection:window[:by=path]
//! [:measure,measure...]`: `orders:1m:by=status:sum(quantity),max(amount); *:1h`. The
//! collection `*` means every collection, one group per collection. Measures are `count`
//! (always there) and `sum`, `mean`, `min` or `max` of a numeric field (dotted path).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The aggregates with no configuration: op counts per collection per minute.
pub const DEFAULT_AGGREGATES: &str = "*:1m";

/// Shortest window: event times are in ms, but a window under a second is noise on a
/// dashboard and multiplies the windows kept.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// Longest window (31 days): past that, 60 windows outlive any checkpoint worth keeping.
const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

/// A numeric measure's function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Func {
    /// Sum of the values.
    Sum,
    /// Mean of the values.
    Mean,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
}

impl Func {
    fn name(self) -> &'static str {
        match self {
            Func::Sum => "sum",
            Func::Mean => "mean",
            Func::Min => "min",
            Func::Max => "max",
        }
    }
}

/// `func(field)`: a function of a numeric field, per op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measure {
    /// What to compute.
    pub func: Func,
    /// The field's dotted path in the document.
    pub field: String,
}

impl fmt::Display for Measure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.func.name(), self.field)
    }
}

impl Measure {
    /// Parse `sum(quantity)`; `Ok(None)` for `count`, which every aggregate has.
    fn parse(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text == "count" {
            return Ok(None);
        }
        let unknown =
            || format!("measure `{text}` is unknown (use count, sum(field), mean(field), min(field), max(field))");
        let (func, rest) = text.split_once('(').ok_or_else(unknown)?;
        let field = rest.strip_suffix(')').ok_or_else(unknown)?.trim();
        let func = match func.trim() {
            "sum" => Func::Sum,
            "mean" => Func::Mean,
            "min" => Func::Min,
            "max" => Func::Max,
            _ => return Err(unknown()),
        };
        if field.is_empty() || field.contains(['(', ')', ',', ';', ':']) {
            return Err(format!("measure `{text}` needs one field, e.g. {}(quantity)", func.name()));
        }
        Ok(Some(Self { func, field: field.to_string() }))
    }
}

/// One aggregate: tumbling windows of event time over one collection (or all), counting each
/// op and computing its measures, per group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregateSpec {
    /// Unique; names it in `/analytics` and `/metrics`. The canonical text unless the models
    /// file names it.
    pub name: String,
    /// The collection; `None` for every collection (`*`), each its own group.
    pub collection: Option<String>,
    /// Window length in ms.
    pub window_ms: u64,
    /// The field whose value groups the events, if any.
    pub group_by: Option<String>,
    /// The numeric measures, beside the count.
    pub measures: Vec<Measure>,
}

impl fmt::Display for AggregateSpec {
    /// The canonical `SINK_AGGREGATES` form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = humantime::format_duration(Duration::from_millis(self.window_ms));
        write!(f, "{}:{window}", self.collection.as_deref().unwrap_or("*"))?;
        if let Some(g) = &self.group_by {
            write!(f, ":by={g}")?;
        }
        if !self.measures.is_empty() {
            let list: Vec<String> = self.measures.iter().map(ToString::to_string).collect();
            write!(f, ":{}", list.join(","))?;
        }
        Ok(())
    }
}

impl AggregateSpec {
    /// True if events of `collection` count in it.
    pub fn covers(&self, collection: &str) -> bool {
        self.collection.as_deref().is_none_or(|c| c == collection)
    }

    /// The distinct fields the measures read, in order of first mention.
    pub fn fields(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in &self.measures {
            if !out.contains(&m.field.as_str()) {
                out.push(&m.field);
            }
        }
        out
    }

    /// Parse one `SINK_AGGREGATES` item: `collection:window[:by=path][:measure,...]`.
    pub fn parse(text: &str) -> Result<Self, Vec<String>> {
        let mut parts = text.split(':').map(str::trim);
        let collection = parts.next().unwrap_or_default();
        let Some(window) = parts.next() else {
            return Err(vec!["write collection:window, e.g. orders:1m (or *:1m for every collection)".into()]);
        };
        let mut errs = Vec::new();
        let mut group_by = None;
        let mut measures = Vec::new();
        for part in parts {
            if let Some(g) = part.strip_prefix("by=") {
                if group_by.is_some() {
                    errs.push("`by=` is given twice: group by one field".into());
                }
                group_by = Some(g.trim().to_string());
            } else {
                measures.extend(part.split(',').map(|m| m.trim().to_string()));
            }
        }
        Self::build(collection, window, group_by, &measures, &mut errs).ok_or(errs)
    }

    /// Check and assemble the parts, pushing every mistake to `errs`.
    fn build(
        collection: &str,
        window: &str,
        group_by: Option<String>,
        measures: &[String],
        errs: &mut Vec<String>,
    ) -> Option<Self> {
        let collection = match collection.trim() {
            "" => {
                errs.push("the collection is empty: name one, or `*` for every collection".into());
                None
            }
            "*" => None,
            c => Some(c.to_string()),
        };
        let window_ms = match humantime::parse_duration(window.trim()) {
            Ok(d) if (MIN_WINDOW..=MAX_WINDOW).contains(&d) => d.as_millis() as u64,
            Ok(_) => {
                errs.push(format!("window `{window}` must be between 1s and 31days"));
                0
            }
            Err(e) => {
                errs.push(format!("window `{window}` is not a duration (e.g. 30s, 1m, 1h): {e}"));
                0
            }
        };
        if group_by.as_deref().is_some_and(|g| g.trim().is_empty()) {
            errs.push("`by=` is empty: name the field to group by".into());
        }
        let mut parsed: Vec<Measure> = Vec::new();
        for m in measures.iter().filter(|m| !m.trim().is_empty()) {
            match Measure::parse(m) {
                Ok(Some(m)) if parsed.contains(&m) => errs.push(format!("measure `{m}` is listed twice")),
                Ok(Some(m)) => parsed.push(m),
                Ok(None) => {}
                Err(e) => errs.push(e),
            }
        }
        if !errs.is_empty() {
            return None;
        }
        let mut spec = Self { name: String::new(), collection, window_ms, group_by, measures: parsed };
        spec.name = spec.to_string();
        Some(spec)
    }
}

/// The aggregates of a `SINK_AGGREGATES` value, in order. On failure, every mistake found,
/// one line each, naming the aggregate by its position and text.
pub fn parse_list(text: &str) -> Result<Vec<AggregateSpec>, Vec<String>> {
    let mut specs: Vec<AggregateSpec> = Vec::new();
    let mut mistakes = Vec::new();
    let items = text.split(';').map(str::trim).filter(|s| !s.is_empty());
    for (i, item) in items.enumerate() {
        let who = format!("aggregate {} (`{item}`)", i + 1);
        match AggregateSpec::parse(item) {
            Ok(s) if specs.iter().any(|o| o.name == s.name) => {
                mistakes.push(format!("{who}: the same aggregate is listed earlier"))
            }
            Ok(s) => specs.push(s),
            Err(errs) => mistakes.extend(errs.into_iter().map(|e| format!("{who}: {e}"))),
        }
    }
    if mistakes.is_empty() && specs.is_empty() {
        mistakes.push("lists no aggregate (e.g. orders:1m:by=status:sum(quantity); *:1h)".into());
    }
    if mistakes.is_empty() { Ok(specs) } else { Err(mistakes) }
}

/// The keys of an `[[aggregate]]` table.
pub const TABLE_KEYS: [&str; 5] = ["name", "collection", "window", "group_by", "measures"];

/// One `[[aggregate]]` table of the models file: `collection` (a name or `"*"`) and `window`
/// are required; `name`, `group_by` and `measures` (e.g. `["sum(quantity)", "max(amount)"]`)
/// are optional. The mistakes, one line each, without naming the table (the caller does).
pub fn from_table(t: &toml::Table) -> Result<AggregateSpec, Vec<String>> {
    let mut errs = Vec::new();
    for key in t.keys().filter(|k| !TABLE_KEYS.contains(&k.as_str())) {
        errs.push(format!("unknown key `{key}` (use {})", TABLE_KEYS.join(", ")));
    }
    let mut string = |key: &str, required: bool| match t.get(key) {
        None if required => {
            errs.push(format!("`{key}` is required"));
            None
        }
        None => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errs.push(format!("`{key}` must be a string"));
            None
        }
    };
    let name = string("name", false);
    let collection = string("collection", true);
    let window = string("window", true);
    let group_by = string("group_by", false);
    let measures = match t.get("measures") {
        None => Vec::new(),
        Some(v) => match v.as_array().and_then(|a| a.iter().map(|m| m.as_str().map(String::from)).collect()) {
            Some(list) => list,
            None => {
                errs.push("`measures` must be a list of strings such as [\"sum(quantity)\"]".into());
                Vec::new()
            }
        },
    };
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        errs.push("`name` is empty".into());
    }
    let (Some(collection), Some(window)) = (collection, window) else { return Err(errs) };
    let spec = AggregateSpec::build(&collection, &window, group_by, &measures, &mut errs);
    match spec {
        Some(mut spec) if errs.is_empty() => {
            if let Some(n) = name {
                spec.name = n;
            }
            Ok(spec)
        }
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readable_syntax_gives_every_part() {
        let specs = parse_list("orders:1m:by=status:sum(quantity),max(amount); *:1h ;").unwrap();
        assert_eq!(specs.len(), 2);
        let orders = &specs[0];
        assert_eq!(orders.collection.as_deref(), Some("orders"));
        assert_eq!(orders.window_ms, 60_000);
        assert_eq!(orders.group_by.as_deref(), Some("status"));
        assert_eq!(
            orders.measures,
            [
                Measure { func: Func::Sum, field: "quantity".into() },
                Measure { func: Func::Max, field: "amount".into() }
            ]
        );
        assert_eq!(orders.name, "orders:1m:by=status:sum(quantity),max(amount)");
        assert!(orders.covers("orders") && !orders.covers("users"));
        let all = &specs[1];
        assert_eq!((all.collection.as_ref(), all.window_ms, all.name.as_str()), (None, 3_600_000, "*:1h"));
        assert!(all.covers("anything"));
        // `count` is always there; measures may come before `by=`; the name is canonical.
        let s = AggregateSpec::parse("orders : 30s : count,mean(a.b),min(a.b) : by=kind").unwrap();
        assert_eq!(s.name, "orders:30s:by=kind:mean(a.b),min(a.b)");
        assert_eq!(s.fields(), ["a.b"]);
        assert_eq!(parse_list(DEFAULT_AGGREGATES).unwrap()[0].name, "*:1m");
    }

    #[test]
    fn every_mistake_is_one_line_naming_its_aggregate() {
        let mistakes =
            parse_list("orders; :1x:by=:avg(q),sum(),sum(q),sum(q); *:1m; *:60s; users:500ms:by=a:by=b").unwrap_err();
        let expected = [
            "aggregate 1 (`orders`): write collection:window",
            "aggregate 2 (`:1x:by=:avg(q),sum(),sum(q),sum(q)`): the collection is empty",
            "aggregate 2 (`:1x:by=:avg(q),sum(),sum(q),sum(q)`): window `1x` is not a duration",
            "aggregate 2 (`:1x:by=:avg(q),sum(),sum(q),sum(q)`): `by=` is empty",
            "aggregate 2 (`:1x:by=:avg(q),sum(),sum(q),sum(q)`): measure `avg(q)` is unknown",
            "aggregate 2 (`:1x:by=:avg(q),sum(),sum(q),sum(q)`): measure `sum()` needs one field",
            "aggregate 2 (`:1x:by=:avg(q),sum(),sum(q),sum(q)`): measure `sum(q)` is listed twice",
            "aggregate 4 (`*:60s`): the same aggregate is listed earlier",
            "aggregate 5 (`users:500ms:by=a:by=b`): `by=` is given twice",
            "aggregate 5 (`users:500ms:by=a:by=b`): window `500ms` must be between 1s and 31days",
        ];
        for e in expected {
            assert!(mistakes.iter().any(|m| m.starts_with(e)), "no mistake starting {e:?} in {mistakes:#?}");
        }
        assert_eq!(mistakes.len(), expected.len(), "{mistakes:#?}");
        assert!(mistakes.iter().all(|m| !m.contains('\n')));
        assert_eq!(
            parse_list(" ; ").unwrap_err(),
            ["lists no aggregate (e.g. orders:1m:by=status:sum(quantity); *:1h)"]
        );
    }

    #[test]
    fn a_table_of_the_models_file() {
        let t: toml::Table = r#"
name = "sales"
collection = "orders"
window = "1h"
group_by = "status"
measures = ["sum(quantity)", "count"]
"#
        .parse()
        .unwrap();
        let s = from_table(&t).unwrap();
        assert_eq!((s.name.as_str(), s.window_ms, s.measures.len()), ("sales", 3_600_000, 1));
        let bad: toml::Table = "collection = 3\nmeasures = \"sum(q)\"\ncolour = 1".parse().unwrap();
        let errs = from_table(&bad).unwrap_err();
        assert_eq!(
            errs,
            [
                "unknown key `colour` (use name, collection, window, group_by, measures)",
                "`collection` must be a string",
                "`window` is required",
                "`measures` must be a list of strings such as [\"sum(quantity)\"]",
            ]
        );
    }
}
