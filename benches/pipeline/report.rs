//! The bench's outputs: medians of the runs, goals judged, the machine and the versions, as
//! `bench/results.json` (for machines) and `bench/RESULTS.md` (for people).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::amqp::Confirms;
use crate::{Params, Run};

/// Median of the values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// One figure: the median and the value of every run.
#[derive(Debug, Clone)]
struct Figure {
    median: f64,
    runs: Vec<f64>,
}

impl Figure {
    fn of(runs: &[Run], f: impl Fn(&Run) -> f64) -> Self {
        let runs: Vec<f64> = runs.iter().map(f).collect();
        Self { median: median(&runs), runs }
    }

    fn json(&self) -> Value {
        json!({"median": round(self.median), "runs": self.runs.iter().map(|&v| round(v)).collect::<Vec<_>>()})
    }
}

fn round(v: f64) -> Value {
    if v.is_nan() {
        return Value::Null;
    }
    let r = if v.abs() >= 100.0 { v.round() } else { (v * 1000.0).round() / 1000.0 };
    json!(r)
}

/// A goal and whether the median meets it.
struct Goal {
    key: &'static str,
    text: String,
    value: f64,
    target: f64,
    /// `true`: value must be at least the target; `false`: below it.
    at_least: bool,
}

impl Goal {
    fn pass(&self) -> bool {
        if self.at_least { self.value >= self.target } else { self.value < self.target }
    }

    /// "PASS", or "MISS" with how far off.
    fn verdict(&self) -> String {
        if self.pass() {
            return "PASS".into();
        }
        let off = (self.value - self.target).abs() / self.target * 100.0;
        let dir = if self.at_least { "short" } else { "over" };
        format!("**MISS** ({off:.0}% {dir})")
    }
}

/// Everything the reports say, computed once.
struct Summary {
    strategies: Vec<(Confirms, Figure)>,
    best: (Confirms, Figure),
    raw_read: Figure,
    raw_read_stream: Figure,
    raw_pipe: Figure,
    bridge: Figure,
    raw_find_pipe: Figure,
    raw_find_unsorted: Figure,
    snapshot: Figure,
    snapshot_ratio_runs: Vec<f64>,
    bridge_ratio: f64,
    bridge_ratio_stream: f64,
    bridge_ratio_runs: Vec<f64>,
    e2e: Vec<(u32, [Figure; 3], Figure, Figure)>,
    sink_apply: Figure,
    sink_apply_tree: Figure,
    sink_apply_forest: Figure,
    bridge_cpu_us: Figure,
    bridge_instructions: Option<f64>,
    partitioned: Vec<(u16, Figure)>,
    sink_e2e: Figure,
    bridge_rss: Figure,
    sink_rss: Figure,
    sink_checkpoint: Figure,
    sink_after: Figure,
    message_bytes: usize,
    goals: Vec<Goal>,
}

fn max_of(m: &std::collections::BTreeMap<String, f64>) -> f64 {
    m.values().copied().fold(f64::NAN, f64::max)
}

fn summarise(params: &Params, runs: &[Run]) -> Summary {
    let strategies: Vec<(Confirms, Figure)> = Confirms::ALL
        .iter()
        .map(|c| (*c, Figure::of(runs, |r| r.raw_publish_per_s.get(&c.name()).copied().unwrap_or(f64::NAN))))
        .collect();
    let best = strategies.iter().max_by(|a, b| a.1.median.total_cmp(&b.1.median)).cloned().expect("strategies");
    let raw_read = Figure::of(runs, |r| r.raw_read_per_s);
    let raw_read_stream = Figure::of(runs, |r| r.raw_read_bridge_stream_per_s);
    let raw_pipe = Figure::of(runs, |r| r.raw_pipe_per_s);
    let bridge = Figure::of(runs, |r| r.bridge_per_s);
    let raw_find_pipe = Figure::of(runs, |r| r.raw_find_pipe_per_s);
    let raw_find_unsorted = Figure::of(runs, |r| r.raw_find_unsorted_pipe_per_s);
    let snapshot = Figure::of(runs, |r| r.snapshot_per_s);
    let snapshot_ratio_runs = runs.iter().map(|r| r.snapshot_per_s / r.raw_find_pipe_per_s).collect();
    let bridge_ratio = bridge.median / best.1.median.min(raw_read.median);
    let bridge_ratio_stream = bridge.median / best.1.median.min(raw_read_stream.median);
    let bridge_ratio_runs =
        runs.iter().zip(&best.1.runs).map(|(r, publish)| r.bridge_per_s / publish.min(r.raw_read_per_s)).collect();
    let e2e = params
        .rates
        .iter()
        .map(|&rate| {
            let lat = |f: fn(&crate::Latency) -> f64| {
                Figure::of(runs, move |r| r.e2e_latency_ms.get(&rate).map_or(f64::NAN, f))
            };
            (
                rate,
                [lat(|l| l.p50), lat(|l| l.p95), lat(|l| l.p99)],
                lat(|l| l.achieved_per_s),
                lat(|l| l.window as f64),
            )
        })
        .collect();
    let sink_apply = Figure::of(runs, |r| r.sink_apply_per_s);
    let sink_apply_tree = Figure::of(runs, |r| r.sink_apply_tree_per_s);
    let sink_apply_forest = Figure::of(runs, |r| r.sink_apply_forest_per_s);
    let bridge_cpu_us = Figure::of(runs, |r| r.bridge_cpu_us_per_event);
    let bridge_instructions = runs.iter().find_map(|r| r.bridge_instructions_per_event);
    let partitioned = (1..=3u16)
        .map(|k| (k, Figure::of(runs, |r| r.partitioned_sinks_per_s.get(&k).copied().unwrap_or(f64::NAN))))
        .collect();
    let sink_e2e = Figure::of(runs, |r| r.sink_e2e_per_s);
    let bridge_rss = Figure::of(runs, |r| max_of(&r.bridge_rss_mb));
    let sink_rss = Figure::of(runs, |r| max_of(&r.sink_rss_mb));
    let sink_checkpoint = Figure::of(runs, |r| r.sink_checkpoint_mb);
    let sink_after = Figure::of(runs, |r| r.sink_after_mb);
    let goals = vec![
        Goal { key: "bridge_ratio", text: "≥ 0.9".into(), value: bridge_ratio, target: 0.9, at_least: true },
        Goal {
            key: "snapshot_ratio",
            text: "≥ 0.9".into(),
            value: snapshot.median / raw_find_pipe.median,
            target: 0.9,
            at_least: true,
        },
        Goal {
            key: "bridge_vs_pipe",
            text: "≥ 0.95".into(),
            value: bridge.median / raw_pipe.median,
            target: 0.95,
            at_least: true,
        },
        Goal {
            key: "bridge_cpu_us_per_event",
            text: "≤ 6 µs".into(),
            value: bridge_cpu_us.median,
            target: 6.0,
            at_least: false,
        },
        Goal {
            key: "sink_apply_per_s",
            text: "≥ 1,000,000/s".into(),
            value: sink_apply.median,
            target: 1e6,
            at_least: true,
        },
        Goal {
            key: "sink_e2e_per_s",
            text: format!("≥ raw_publish_per_s ({})", thousands(best.1.median)),
            value: sink_e2e.median,
            target: best.1.median,
            at_least: true,
        },
        Goal { key: "bridge_rss_mb", text: "< 32 MB".into(), value: bridge_rss.median, target: 32.0, at_least: false },
        Goal {
            key: "sink_rss_mb",
            text: format!("< 64 MB (the records live in its store: {:.1} MB on disk)", sink_checkpoint.median),
            value: sink_rss.median,
            target: 64.0,
            at_least: false,
        },
    ];
    Summary {
        strategies,
        best,
        raw_read,
        raw_read_stream,
        raw_pipe,
        bridge,
        raw_find_pipe,
        raw_find_unsorted,
        snapshot,
        snapshot_ratio_runs,
        bridge_ratio,
        bridge_ratio_stream,
        bridge_ratio_runs,
        e2e,
        sink_apply,
        sink_apply_tree,
        sink_apply_forest,
        bridge_cpu_us,
        bridge_instructions,
        partitioned,
        sink_e2e,
        bridge_rss,
        sink_rss,
        sink_checkpoint,
        sink_after,
        message_bytes: runs.first().map_or(0, |r| r.message_bytes),
        goals,
    }
}

/// `12345.6` -> `12,346`.
fn thousands(v: f64) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    let s = format!("{:.0}", v.round());
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn runs_text(f: &Figure, fmt: impl Fn(f64) -> String) -> String {
    f.runs.iter().map(|&v| fmt(v)).collect::<Vec<_>>().join(" · ")
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// CPU, cores, memory, kernel.
fn machine(load_start: &str) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string()));
    json!({
        "cpu": cpu,
        "nproc": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "memory_gib": mem_gib,
        "kernel": command("uname", &["-r"]),
        "os": os,
        "loadavg_at_start": load_start,
        "loadavg_at_end": loadavg(),
    })
}

/// The 1, 5 and 15 minute load averages (other work on the machine skews the figures).
pub fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The version of `name` in Cargo.lock.
fn locked(name: &str) -> Option<String> {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")).ok()?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == format!("name = \"{name}\"") {
            return lines.next()?.strip_prefix("version = ").map(|v| v.trim_matches('"').to_string());
        }
    }
    None
}

fn versions() -> Value {
    let root = env!("CARGO_MANIFEST_DIR");
    let python = Path::new(root).join(".venv/bin/python");
    let secantus =
        command(&python.to_string_lossy(), &["-c", "import importlib.metadata as m; print(m.version('secantusdb'))"]);
    let commit = command("git", &["-C", root, "rev-parse", "--short", "HEAD"]);
    let dirty = command("git", &["-C", root, "status", "--porcelain", "--", "src", "Cargo.toml"])
        .is_some_and(|s| !s.is_empty());
    json!({
        "rustc": command("rustc", &["--version"]),
        "mongo_cdc": env!("CARGO_PKG_VERSION"),
        "git_commit": commit,
        "src_uncommitted_changes": dirty,
        "secantusdb": secantus,
        "rabbitmq": command("rabbitmqctl", &["version"]),
        "lapin": locked("lapin"),
        "mongodb": locked("mongodb"),
    })
}

fn results_json(params: &Params, runs: &[Run], s: &Summary, date: &str, load_start: &str) -> Value {
    let e2e: serde_json::Map<String, Value> = s
        .e2e
        .iter()
        .map(|(rate, [p50, p95, p99], _, _)| {
            (rate.to_string(), json!({"p50": round(p50.median), "p95": round(p95.median), "p99": round(p99.median)}))
        })
        .collect();
    let e2e_runs: serde_json::Map<String, Value> = s
        .e2e
        .iter()
        .map(|(rate, [p50, p95, p99], achieved, window)| {
            (
                rate.to_string(),
                json!({"p50": p50.json(), "p95": p95.json(), "p99": p99.json(), "achieved_per_s": achieved.json(), "window": window.json()}),
            )
        })
        .collect();
    let strategies: serde_json::Map<String, Value> = s.strategies.iter().map(|(c, f)| (c.name(), f.json())).collect();
    let goals: serde_json::Map<String, Value> = s
        .goals
        .iter()
        .map(|g| {
            (
                g.key.to_string(),
                json!({"goal": g.text, "value": round(g.value), "target": round(g.target), "pass": g.pass()}),
            )
        })
        .collect();
    json!({
        "raw_publish_per_s": round(s.best.1.median),
        "raw_publish_strategy": s.best.0.name(),
        "raw_read_per_s": round(s.raw_read.median),
        "raw_read_bridge_stream_per_s": round(s.raw_read_stream.median),
        "raw_pipe_per_s": round(s.raw_pipe.median),
        "bridge_per_s": round(s.bridge.median),
        "bridge_ratio": round(s.bridge_ratio),
        "raw_find_pipe_per_s": round(s.raw_find_pipe.median),
        "raw_find_unsorted_pipe_per_s": round(s.raw_find_unsorted.median),
        "snapshot_per_s": round(s.snapshot.median),
        "snapshot_ratio": round(s.snapshot.median / s.raw_find_pipe.median),
        "e2e_latency_ms": e2e,
        "sink_apply_per_s": round(s.sink_apply.median),
        "bridge_cpu_us_per_event": round(s.bridge_cpu_us.median),
        "bridge_instructions_per_event": s.bridge_instructions.map(round),
        "partitioned_sinks_per_s": s.partitioned.iter().map(|(k, f)| (k.to_string(), round(f.median))).collect::<serde_json::Map<_, _>>(),
        "sink_apply_tree_per_s": round(s.sink_apply_tree.median),
        "sink_apply_forest_per_s": round(s.sink_apply_forest.median),
        "sink_e2e_per_s": round(s.sink_e2e.median),
        "bridge_rss_mb": round(s.bridge_rss.median),
        "sink_rss_mb": round(s.sink_rss.median),
        "sink_records_mb": round(s.sink_checkpoint.median),
        "ratios": {
            "bridge_ratio": round(s.bridge_ratio),
            "bridge_per_s / min(raw_publish_per_s, raw_read_bridge_stream_per_s)": round(s.bridge_ratio_stream),
            "bridge_per_s / raw_pipe_per_s": round(s.bridge.median / s.raw_pipe.median),
            "sink_e2e_per_s / raw_publish_per_s": round(s.sink_e2e.median / s.best.1.median),
            "sink_apply_per_s / 1e6": round(s.sink_apply.median / 1e6),
        },
        "goals": goals,
        "runs": {
            "raw_publish_per_s": s.best.1.json()["runs"],
            "raw_read_per_s": s.raw_read.json()["runs"],
            "raw_read_bridge_stream_per_s": s.raw_read_stream.json()["runs"],
            "raw_pipe_per_s": s.raw_pipe.json()["runs"],
            "bridge_per_s": s.bridge.json()["runs"],
            "bridge_ratio": s.bridge_ratio_runs.iter().map(|&v| round(v)).collect::<Vec<_>>(),
            "raw_find_pipe_per_s": s.raw_find_pipe.json()["runs"],
            "raw_find_unsorted_pipe_per_s": s.raw_find_unsorted.json()["runs"],
            "snapshot_per_s": s.snapshot.json()["runs"],
            "snapshot_ratio": s.snapshot_ratio_runs.iter().map(|&v| round(v)).collect::<Vec<_>>(),
            "e2e_latency_ms": e2e_runs,
            "sink_apply_per_s": s.sink_apply.json()["runs"],
            "bridge_cpu_us_per_event": s.bridge_cpu_us.json()["runs"],
            "partitioned_sinks_per_s": s.partitioned.iter().map(|(k, f)| (k.to_string(), f.json()["runs"].clone())).collect::<serde_json::Map<_, _>>(),
            "sink_apply_tree_per_s": s.sink_apply_tree.json()["runs"],
            "sink_apply_forest_per_s": s.sink_apply_forest.json()["runs"],
            "sink_e2e_per_s": s.sink_e2e.json()["runs"],
            "bridge_rss_mb": s.bridge_rss.json()["runs"],
            "sink_rss_mb": s.sink_rss.json()["runs"],
            "sink_records_mb": s.sink_checkpoint.json()["runs"],
            "raw_publish_strategies": strategies,
            "per_run": runs,
        },
        "sink_after_documents_mb": round(s.sink_after.median),
        "bridge_checkpoint_writes": round(median(&runs.iter().map(|r| r.bridge_checkpoint_writes as f64).collect::<Vec<_>>())),
        "message_bytes": s.message_bytes,
        "params": params,
        "standard_params": params.standard(),
        "date": date,
        "machine": machine(load_start),
        "versions": versions(),
    })
}

fn results_md(params: &Params, runs: &[Run], s: &Summary, json: &Value, date: &str) -> String {
    let m = &json["machine"];
    let v = &json["versions"];
    let text = |x: &Value| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
    let per_s = |x: f64| format!("{}/s", thousands(x));
    let mb = |x: f64| format!("{x:.1} MB");
    let ms = |x: f64| format!("{x:.0}");
    let goal = |key: &str| s.goals.iter().find(|g| g.key == key).expect("goal");
    let mut o = String::new();
    let _ = writeln!(o, "# mongo-cdc pipeline benchmark\n");
    let _ = writeln!(
        o,
        "Written by `make bench` (`cargo bench --bench pipeline`) on {date}. Every figure is the median of {} runs; the \
         runs' own values follow it. The machine is shared and noisy, so the ratios say more than the absolute figures.\n",
        params.runs
    );
    if !params.standard() {
        let _ = writeln!(o, "**Non-standard settings** ({params:?}): not comparable with the standard run.\n");
    }
    let _ = writeln!(o, "## Machine and versions\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| machine | {}, {} CPUs, {} GiB RAM; {}, kernel {} |",
        text(&m["cpu"]),
        m["nproc"],
        m["memory_gib"],
        text(&m["os"]),
        text(&m["kernel"])
    );
    let dirty =
        if v["src_uncommitted_changes"].as_bool() == Some(true) { ", with uncommitted changes in src/" } else { "" };
    let _ = writeln!(
        o,
        "| mongo-cdc | {} (commit {}{dirty}), release build |",
        text(&v["mongo_cdc"]),
        text(&v["git_commit"])
    );
    let _ = writeln!(o, "| rustc | {} |", text(&v["rustc"]));
    let _ = writeln!(o, "| SecantusDB | {} (in memory, a new server for every run) |", text(&v["secantusdb"]));
    let _ = writeln!(o, "| RabbitMQ | {} (local, shared) |", text(&v["rabbitmq"]));
    let _ = writeln!(o, "| crates | lapin {}, mongodb {} |", text(&v["lapin"]), text(&v["mongodb"]));
    let _ = writeln!(
        o,
        "| load average (1/5/15 min) | {} at the start, {} at the end (other work on this machine shares its 2 cores) |\n",
        text(&m["loadavg_at_start"]),
        text(&m["loadavg_at_end"])
    );

    let _ = writeln!(o, "## Figures\n");
    let _ = writeln!(o, "| key | median | runs | goal | result |\n|---|---|---|---|---|");
    let _ = writeln!(
        o,
        "| `raw_publish_per_s` | {} | {} | ceiling, broker side (best strategy: `{}`) | |",
        per_s(s.best.1.median),
        runs_text(&s.best.1, thousands),
        s.best.0.name()
    );
    let _ = writeln!(
        o,
        "| `raw_read_per_s` | {} | {} | ceiling, database side (plain change stream) | |",
        per_s(s.raw_read.median),
        runs_text(&s.raw_read, thousands)
    );
    let _ = writeln!(
        o,
        "| `raw_read_bridge_stream_per_s` | {} | {} | the same read with the bridge's stream options (extra figure) | |",
        per_s(s.raw_read_stream.median),
        runs_text(&s.raw_read_stream, thousands)
    );
    let _ = writeln!(
        o,
        "| `raw_pipe_per_s` | {} | {} | the bench's minimal bridge, both servers busy at once (extra figure) | |",
        per_s(s.raw_pipe.median),
        runs_text(&s.raw_pipe, thousands)
    );
    let _ = writeln!(o, "| `bridge_per_s` | {} | {} | | |", per_s(s.bridge.median), runs_text(&s.bridge, thousands));
    let g = goal("bridge_ratio");
    let _ = writeln!(
        o,
        "| `bridge_ratio` | {:.2} | {} | {} | {} |",
        s.bridge_ratio,
        s.bridge_ratio_runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" · "),
        g.text,
        g.verdict()
    );
    let _ = writeln!(
        o,
        "| `bridge_per_s / min(raw_publish, raw_read_bridge_stream)` | {:.2} | | (extra: against the read the bridge actually does) | |",
        s.bridge_ratio_stream
    );
    let _ = writeln!(
        o,
        "| `bridge_per_s / raw_pipe_per_s` | {:.2} | | (extra: against the bench's minimal bridge on the same machine) | |",
        s.bridge.median / s.raw_pipe.median
    );
    let _ = writeln!(
        o,
        "| `raw_find_pipe_per_s` | {} | {} | ceiling for a snapshot: the bench's minimal `find` (in `_id` order) -> publish pipe | |",
        per_s(s.raw_find_pipe.median),
        runs_text(&s.raw_find_pipe, thousands)
    );
    let _ = writeln!(
        o,
        "| `raw_find_unsorted_pipe_per_s` | {} | {} | the same `find` in natural order (extra figure) | |",
        per_s(s.raw_find_unsorted.median),
        runs_text(&s.raw_find_unsorted, thousands)
    );
    let _ =
        writeln!(o, "| `snapshot_per_s` | {} | {} | | |", per_s(s.snapshot.median), runs_text(&s.snapshot, thousands));
    let g = goal("snapshot_ratio");
    let _ = writeln!(
        o,
        "| `snapshot_ratio` = snapshot / minimal find pipe | {:.2} | {} | {} | {} |",
        g.value,
        s.snapshot_ratio_runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(" · "),
        g.text,
        g.verdict()
    );
    let g = goal("bridge_vs_pipe");
    let _ = writeln!(
        o,
        "| `bridge_per_s / raw_pipe_per_s` (lean bridge) | {:.2} | | {} | {} |",
        g.value,
        g.text,
        g.verdict()
    );
    let g = goal("bridge_cpu_us_per_event");
    let _ = writeln!(
        o,
        "| `bridge_cpu_us_per_event` (CPU while draining the backlog) | {:.1} µs | {} | {} | {} |",
        g.value,
        runs_text(&s.bridge_cpu_us, |v| format!("{v:.1}")),
        g.text,
        g.verdict()
    );
    let _ = writeln!(
        o,
        "| `bridge_instructions_per_event` (callgrind, one more change) | {} | | stable beside the CPU time | |",
        s.bridge_instructions.map_or("n/a (no valgrind)".to_string(), thousands)
    );
    for (k, f) in &s.partitioned {
        let _ = writeln!(
            o,
            "| `partitioned_sinks_per_s` with {k} sink{} | {} | {} | (extra: partitions of one broker, on this 2-core machine) | |",
            if *k == 1 { "" } else { "s" },
            per_s(f.median),
            runs_text(f, thousands)
        );
    }
    for (rate, [p50, p95, p99], achieved, _) in &s.e2e {
        let _ = writeln!(
            o,
            "| `e2e_latency_ms` at {rate}/s | p50 {} · p95 {} · p99 {} ms | p99: {} (achieved {}) | | |",
            ms(p50.median),
            ms(p95.median),
            ms(p99.median),
            runs_text(p99, ms),
            runs_text(achieved, per_s)
        );
    }
    let g = goal("sink_apply_per_s");
    let _ = writeln!(
        o,
        "| `sink_apply_per_s` | {} | {} | {} (ratio {:.2}) | {} |",
        per_s(s.sink_apply.median),
        runs_text(&s.sink_apply, thousands),
        g.text,
        s.sink_apply.median / 1e6,
        g.verdict()
    );
    for (key, figure) in
        [("sink_apply_tree_per_s", &s.sink_apply_tree), ("sink_apply_forest_per_s", &s.sink_apply_forest)]
    {
        let _ = writeln!(o, "| `{key}` | {} | {} | | |", per_s(figure.median), runs_text(figure, thousands));
    }
    let g = goal("sink_e2e_per_s");
    let _ = writeln!(
        o,
        "| `sink_e2e_per_s` | {} | {} | {} (ratio {:.2}) | {} |",
        per_s(s.sink_e2e.median),
        runs_text(&s.sink_e2e, thousands),
        g.text,
        s.sink_e2e.median / s.best.1.median,
        g.verdict()
    );
    let g = goal("bridge_rss_mb");
    let _ = writeln!(
        o,
        "| `bridge_rss_mb` | {} | {} | {} | {} |",
        mb(s.bridge_rss.median),
        runs_text(&s.bridge_rss, mb),
        g.text,
        g.verdict()
    );
    let g = goal("sink_rss_mb");
    let _ = writeln!(
        o,
        "| `sink_rss_mb` | {} | {} | {} | {} |\n",
        mb(s.sink_rss.median),
        runs_text(&s.sink_rss, mb),
        g.text,
        g.verdict()
    );

    let _ = writeln!(o, "## Confirm strategies for the raw publisher\n");
    let _ = writeln!(o, "| strategy | median | runs | how |\n|---|---|---|---|");
    for (c, f) in &s.strategies {
        let mark = if c.name() == s.best.0.name() { " **(best)**" } else { "" };
        let _ = writeln!(
            o,
            "| `{}`{mark} | {} | {} | {} |",
            c.name(),
            per_s(f.median),
            runs_text(f, thousands),
            c.describe()
        );
    }
    let _ = writeln!(
        o,
        "\n`raw_publish_per_s` is the best strategy's median, `{}`. The bridge itself queues each publish \
         in stream order without awaiting it, with at most `CDC_CONFIRM_WINDOW` (2048) unconfirmed and their confirms \
         awaited in order, closest to `pipelined-64x4096`.\n",
        s.best.0.name()
    );

    let _ = writeln!(o, "## Where the time goes\n");
    let _ = writeln!(
        o,
        "CPU seconds each process used during a step (from `/proc/<pid>/stat`; medians of the runs; `bench` is the \
         bench process itself, i.e. the raw reader or publisher; RabbitMQ is the shared broker node). \"cores busy\" is \
         their sum over the wall time: 2.0 means this 2-core machine was saturated.\n"
    );
    let _ = writeln!(
        o,
        "| step | events/s | wall s | bench | bridge / sink | SecantusDB | RabbitMQ | cores busy | µs CPU per event: bench / bridge / sink |\n|---|---|---|---|---|---|---|---|---|"
    );
    let best_key = format!("raw_publish/{}", s.best.0.name());
    let rows = [
        ("raw read, plain stream", "raw_read", s.raw_read.median),
        ("raw read, bridge's stream", "raw_read_bridge_stream", s.raw_read_stream.median),
        ("minimal pipe (read + publish)", "raw_pipe", s.raw_pipe.median),
        ("bridge drains the backlog", "bridge", s.bridge.median),
        ("minimal find pipe (find + publish)", "raw_find_pipe", s.raw_find_pipe.median),
        ("bridge snapshots the documents", "snapshot", s.snapshot.median),
        ("raw publish (best strategy)", best_key.as_str(), s.best.1.median),
        ("sink drains the queue", "sink", s.sink_e2e.median),
    ];
    for (label, key, rate) in rows {
        let cpu = |p: &str| {
            median(
                &runs
                    .iter()
                    .map(|r| r.usage.get(key).and_then(|u| u.cpu_s.get(p).copied()).unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        let wall = median(&runs.iter().map(|r| r.usage.get(key).map_or(f64::NAN, |u| u.wall_s)).collect::<Vec<_>>());
        let busy = median(
            &runs
                .iter()
                .map(|r| {
                    r.usage
                        .get(key)
                        .map_or(f64::NAN, |u| u.cpu_s.values().filter(|v| !v.is_nan()).sum::<f64>() / u.wall_s)
                })
                .collect::<Vec<_>>(),
        );
        let own = if key == "bridge" || key == "snapshot" {
            cpu("bridge")
        } else if key == "sink" {
            cpu("sink")
        } else {
            f64::NAN
        };
        let secs = |v: f64| if v.is_nan() { "–".to_string() } else { format!("{v:.1}") };
        let per_event =
            |v: f64| if v.is_nan() { "–".to_string() } else { format!("{:.0}", v / params.backlog as f64 * 1e6) };
        let _ = writeln!(
            o,
            "| {label} | {} | {} | {} | {} | {} | {} | {busy:.2} | {} / {} |",
            thousands(rate),
            secs(wall),
            secs(cpu("bench")),
            secs(own),
            secs(cpu("secantusdb")),
            secs(cpu("rabbitmq")),
            per_event(cpu("bench")),
            per_event(own)
        );
    }
    let _ = writeln!(
        o,
        "\nWhile draining, the bridge wrote its checkpoint {} times (median; each write is a SecantusDB update).\n",
        thousands(median(&runs.iter().map(|r| r.bridge_checkpoint_writes as f64).collect::<Vec<_>>()))
    );

    let _ = writeln!(o, "## How each figure is measured\n");
    let _ = writeln!(
        o,
        "- **Messages.** Inserts of small documents (a name, ten features `f0`..`f9` in [-1, 1), a boolean `label`; \
         ObjectId `_id`) into one collection. One bridge message is {} bytes of JSON plus the bridge's AMQP properties \
         (persistent, `message_id`, `type`, `timestamp`, headers `db` and `collection`).",
        s.message_bytes
    );
    let _ = writeln!(
        o,
        "- **`raw_publish_per_s`.** A plain lapin publisher (one connection, one channel in confirm mode) sends {} copies \
         of a real bridge message, with its properties and `mandatory`, to a fresh durable queue declared like the \
         bridge's; timed from the first publish to the last confirm, then the queue's depth is checked.",
        thousands(params.backlog as f64)
    );
    let _ = writeln!(
        o,
        "- **`raw_read_per_s`.** The mongodb driver opens a plain change stream on the database (default options) with \
         `startAtOperationTime` before a backlog of {} inserts and reads them all with `next_if_any`, publishing nothing; \
         timed from opening the stream. `raw_read_bridge_stream_per_s` is the same read with the stream the bridge opens \
         (as `src/bridge/mod.rs` does: `fullDocument: updateLookup`, `fullDocumentBeforeChange: whenAvailable`, \
         batches of 1000): what SecantusDB can serve the bridge at best. `raw_pipe_per_s` is a minimal bridge inside the bench: that stream, each change \
         encoded with `encode::change` and `to_json` in a reader task, published with the bridge's properties, \
         64 publishes in flight and at most 512 unconfirmed, no checkpoints; it shows what reading and publishing at \
         the same time, on one machine, allow.",
        thousands(params.backlog as f64)
    );
    let _ = writeln!(
        o,
        "- **`bridge_per_s`.** A bridge pins its checkpoint and is stopped; the backlog is inserted; then the release \
         binary is started and timed from spawn until the queue holds every message and the checkpoint's resume token has \
         reached the cluster time of the last insert (polled every {} ms). The four readers of the backlog (plain read, \
         read with the bridge's options, minimal pipe, bridge) take turns at going first. `bridge_ratio` = `bridge_per_s / min(raw_publish_per_s, raw_read_per_s)` over the medians.",
        crate::POLL.as_millis()
    );
    let _ = writeln!(
        o,
        "- **`snapshot_per_s`.** The backlog's {n} documents, already in the collection, are snapshotted by a bridge \
         with no checkpoint (`CDC_SNAPSHOT_MODE=initial`, chunks of 1,000): timed from spawn until the queue holds \
         every row and the collection's start and end messages, and the checkpoint says the snapshot is complete. Its \
         ceiling `raw_find_pipe_per_s` is a minimal snapshot inside the bench: one `find` in `_id` order (batches of \
         1,000; the order any resumable snapshot must read in, to continue from a position after a crash; \
         `raw_find_unsorted_pipe_per_s` is the same in natural order), each document encoded as a row (`encode::row`, `to_json`) in a reader task, published with the \
         bridge's properties, 64 publishes in flight and at most 512 unconfirmed, no checkpoints, no stream; the two \
         take turns at going first. `snapshot_ratio` = `snapshot_per_s / raw_find_pipe_per_s` over the medians.",
        n = thousands(params.backlog as f64)
    );
    let _ = writeln!(
        o,
        "- **The lean bridge.** `bridge_cpu_us_per_event` is the bridge process's CPU time (from `/proc`) while it \
         drains the backlog, over the changes. `bridge_instructions_per_event` runs the release binary under \
         `valgrind --tool=callgrind` on backlogs of 2,000 and 8,000 changes (first run only: the count does not vary) \
         and divides the difference of the instruction totals by 6,000: the cost of one more change, start-up and \
         idle time cancelled out, and stable on a noisy machine."
    );
    let _ = writeln!(
        o,
        "- **`partitioned_sinks_per_s`.** The backlog's messages (with their `key` header, as the bridge sends them) \
         go through a consistent-hash exchange into 1, 2 or 3 partition queues; then as many sinks start (one per \
         partition, `SINK_PARTITION`) and are timed from spawn until together they have applied every message. All \
         of them, RabbitMQ and the bench share this machine's 2 cores."
    );
    let _ = writeln!(
        o,
        "- **`e2e_latency_ms`.** A fresh bridge and sink per load; inserts paced open-loop (every millisecond, what is \
         due, up to 32 inserts outstanding) for {} s at each offered load; once the sink has applied every insert, its \
         `/stats` `lag_ms` (apply time minus the change's commit wall time `ts_ms`, over the last 10,000 events) is read.",
        params.e2e_secs
    );
    let _ = writeln!(
        o,
        "- **`sink_apply_per_s`.** `SinkCore::apply_bytes` in process, no broker, over {} pre-serialised insert events \
         (distinct ids and keys, 10 features, classification), built before timing starts; a fresh core per run. \
         `sink_apply_tree_per_s`: the same events through a Hoeffding tree (River's defaults); \
         `sink_apply_forest_per_s`: the first {} of them through an adaptive random forest (10 trees, River's defaults).",
        thousands(params.apply_events as f64),
        thousands(params.apply_events.min(crate::FOREST_EVENTS as u64) as f64)
    );
    let _ = writeln!(
        o,
        "- **`sink_e2e_per_s`.** The sink binary is started on the queue the bridge filled ({} real messages) and timed \
         from spawn until `/stats` `events_applied` reaches them all; afterwards the queue must be empty (everything \
         acknowledged).",
        thousands(params.backlog as f64)
    );
    let _ = writeln!(
        o,
        "- **Memory.** Peak RSS (`VmHWM` from `/proc/<pid>/status`, MB = 2^20 bytes) just before each process is \
         stopped; a run's figure is the largest over its bridges (backlog and both loads) and over its sinks. The \
         records the backlog sink holds are in its state store, {:.1} MB on disk (the `after` documents alone are {:.1} MB \
         of JSON); `bench/STATE.md` measures the sink at 1,000,000 records.\n",
        s.sink_checkpoint.median, s.sink_after.median
    );
    let _ = writeln!(o, "## Reproduce\n\n```sh\nmake bench\n```\n");
    let _ = writeln!(
        o,
        "It installs SecantusDB into `.venv` and checks RabbitMQ on 127.0.0.1:5672 (`make deps`), then runs `cargo \
         bench --bench pipeline`, which rewrites this file and `bench/results.json` (every run's values are there)."
    );
    o
}

/// Write `results.json` and `RESULTS.md` into `dir`; returns their paths.
pub fn write(dir: &Path, params: &Params, runs: &[Run], load_start: &str) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let date = command("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let s = summarise(params, runs);
    let json = results_json(params, runs, &s, &date, load_start);
    let md = results_md(params, runs, &s, &json, &date);
    let (jp, mp) = (dir.join("results.json"), dir.join("RESULTS.md"));
    std::fs::write(&jp, serde_json::to_string_pretty(&json).expect("JSON") + "\n")?;
    std::fs::write(&mp, md)?;
    Ok((jp, mp))
}
