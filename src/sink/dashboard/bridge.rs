//! The dashboard's link to the bridge (`SINK_BRIDGE_URL`): fetch its Prometheus `/metrics`
//! and keep the snapshot's progress and the events published, as JSON for `/bridge`.

use std::time::Duration;

use serde::Serialize;

/// How long `/bridge` waits for the bridge: the page asks every second.
const TIMEOUT: Duration = Duration::from_millis(800);

/// The bridge as `/bridge` serves it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BridgeStatus {
    /// Always true here (`{"linked": false}` is served without a link).
    pub linked: bool,
    /// The bridge's base URL.
    pub url: String,
    /// Whether its `/metrics` answered.
    pub reachable: bool,
    /// Why it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `cdc_snapshot_running`.
    pub snapshot_running: bool,
    /// Per collection of the snapshot: rows sent and documents estimated.
    pub snapshot: Vec<CollectionProgress>,
    /// `cdc_events_published_total`, every collection and op together.
    pub events_published: u64,
}

/// One collection's snapshot progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CollectionProgress {
    /// The collection.
    pub collection: String,
    /// `cdc_snapshot_rows`.
    pub rows: u64,
    /// `cdc_snapshot_documents_estimated` (null when the bridge has not said).
    pub estimated: Option<u64>,
}

/// Where the bridge is, and a client to ask it.
#[derive(Debug)]
pub struct BridgeLink {
    url: String,
    client: reqwest::Client,
}

impl BridgeLink {
    /// A link to the bridge at `url` (`http://host:port`).
    pub fn new(url: String) -> Self {
        let client = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap_or_default();
        Self { url, client }
    }

    /// The bridge's figures now; an unreachable bridge is a status, not an error.
    pub async fn status(&self) -> BridgeStatus {
        let fetched = async {
            let resp = self.client.get(format!("{}/metrics", self.url)).send().await?.error_for_status()?;
            resp.text().await
        };
        match fetched.await {
            Ok(text) => BridgeStatus { url: self.url.clone(), ..parse(&text) },
            Err(e) => BridgeStatus {
                linked: true,
                url: self.url.clone(),
                error: Some(error_chain(&e)),
                ..BridgeStatus::default()
            },
        }
    }
}

/// The error and its causes on one line (reqwest's own message omits the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Read the figures out of the bridge's Prometheus text. Hand-written: the `prometheus` crate
/// only writes the format, and three metric families need only `name{labels} value` lines.
fn parse(text: &str) -> BridgeStatus {
    let mut status = BridgeStatus { linked: true, reachable: true, ..BridgeStatus::default() };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut progress = |f: &dyn Fn(&mut CollectionProgress)| {
            let Some(c) = label(labels, "collection") else { return };
            match status.snapshot.iter_mut().find(|p| p.collection == c) {
                Some(p) => f(p),
                None => {
                    let mut p = CollectionProgress { collection: c, ..CollectionProgress::default() };
                    f(&mut p);
                    status.snapshot.push(p);
                }
            }
        };
        match name {
            "cdc_snapshot_running" => status.snapshot_running = value > 0.0,
            "cdc_snapshot_rows" => progress(&|p| p.rows = value as u64),
            "cdc_snapshot_documents_estimated" => progress(&|p| p.estimated = Some(value as u64)),
            "cdc_events_published_total" => status.events_published += value as u64,
            _ => {}
        }
    }
    status.snapshot.sort_by(|a, b| a.collection.cmp(&b.collection));
    status
}

/// The value of label `key` in `a="x",b="y"`, unescaped.
fn label(labels: &str, key: &str) -> Option<String> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        if k.trim_start_matches(',').trim() == key {
            return Some(value);
        }
        rest = &after[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridges_metrics_give_its_snapshot_progress() {
        let text = r#"# HELP cdc_snapshot_running 1 while a snapshot runs.
# TYPE cdc_snapshot_running gauge
cdc_snapshot_running 1
cdc_snapshot_rows{collection="orders"} 1200
cdc_snapshot_rows{collection="a \"q\" b"} 3
cdc_snapshot_documents_estimated{collection="orders"} 5000
cdc_events_published_total{collection="orders",op="c"} 10
cdc_events_published_total{collection="orders",op="u"} 5
cdc_confirm_latency_seconds_bucket{le="0.005"} 3
"#;
        let s = parse(text);
        assert!(s.linked && s.reachable && s.snapshot_running);
        assert_eq!(s.events_published, 15);
        assert_eq!(
            s.snapshot,
            [
                CollectionProgress { collection: "a \"q\" b".into(), rows: 3, estimated: None },
                CollectionProgress { collection: "orders".into(), rows: 1200, estimated: Some(5000) },
            ]
        );
        assert_eq!(label(r#"op="c",collection="x""#, "collection").as_deref(), Some("x"));
        assert!(!parse("cdc_snapshot_running 0\n").snapshot_running);
    }
}
