// The sink's live dashboard: a thin view. Every second it reads the JSON the sink serves
// (/stats, /history, /analytics, /bridge) and draws it; it keeps nothing of its own, so a
// reload shows the same. Charts are hand-drawn SVG: a few lines and bars need no charting
// library, and the page must work offline, served whole by the binary with no build step.
"use strict";

const POLL_MS = 1000;
const OPS = ["c", "u", "d", "r"];
const OP_NAMES = { c: "insert", u: "update", d: "delete", r: "snapshot" };
const OP_COLORS = { c: "#2e7d32", u: "#1565c0", d: "#c62828", r: "#8e8e8e" };
const SERIES_COLORS = ["#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f"];
const SVG_NS = "http://www.w3.org/2000/svg";

// The page's own errors are shown, and kept in #errors where a test reads them.
function reportError(message) {
  const box = document.getElementById("errors");
  const line = document.createElement("div");
  line.textContent = message;
  box.appendChild(line);
  box.hidden = false;
}
window.addEventListener("error", (e) => reportError(`${e.message} (${e.filename}:${e.lineno})`));
window.addEventListener("unhandledrejection", (e) => reportError(`unhandled rejection: ${e.reason}`));

// An HTML element: h("td", {class: "num"}, "12").
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  for (const c of children) el.append(c instanceof Node ? c : String(c));
  return el;
}

// An SVG element appended to `parent`.
function svgEl(parent, tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  parent.appendChild(el);
  return el;
}

const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US")),
  num: (x, digits = 2) => {
    if (x === null || x === undefined) return "–";
    if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString("en-US");
    return Number.isInteger(x) ? String(x) : x.toFixed(digits);
  },
  clock: (t) => new Date(t).toISOString().slice(11, 19),
  ago: (ms) => {
    const s = Math.round(ms / 1000);
    return s >= 60 ? `-${Math.floor(s / 60)}m${s % 60 ? ` ${s % 60}s` : ""}` : `-${s}s`;
  },
  span: (ms) => (ms % 3600000 === 0 ? `${ms / 3600000}h` : ms % 60000 === 0 ? `${ms / 60000}m` : `${ms / 1000}s`),
};

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function setStatus(text, state) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.dataset.state = state;
}

async function tick() {
  let data;
  try {
    const [stats, history, analytics, bridge, alerts] = await Promise.all(
      ["/stats", "/history", "/analytics", "/bridge", "/alerts"].map(getJson),
    );
    data = { stats, history, analytics, bridge, alerts };
  } catch (e) {
    // The sink stopped or restarting: say so and keep asking; not an error of the page.
    setStatus(`cannot reach the sink (${e.message}); retrying`, "down");
    return;
  }
  try {
    render(data);
    setStatus(`live · updated ${fmt.clock(Date.now())} UTC`, "up");
  } catch (e) {
    reportError(`drawing failed: ${(e && e.stack) || e}`);
  }
}

async function loop() {
  await tick();
  setTimeout(loop, POLL_MS);
}

function render({ stats, history, analytics, bridge, alerts }) {
  const samples = history.samples;
  renderAlerts(alerts);
  renderTiles(stats, samples, analytics);
  renderSeries(samples);
  renderModels(stats, samples);
  renderAnalytics(analytics);
  renderBridge(bridge);
}

function setTile(id, text, value) {
  const el = document.getElementById(id);
  el.textContent = text;
  if (value !== undefined) el.dataset.value = String(value);
}

function renderTiles(stats, samples, analytics) {
  const last = samples.length ? samples[samples.length - 1] : null;
  setTile("events-applied", fmt.int(stats.events_applied), stats.events_applied);
  setTile("events-per-s", last && last.events_per_s !== null ? fmt.num(last.events_per_s, 1) : "–");
  setTile("lag", stats.lag_ms ? `${stats.lag_ms.p50} / ${stats.lag_ms.p99} ms` : "–");
  setTile("records", fmt.int(stats.records), stats.records);
  const ops = document.getElementById("ops");
  ops.replaceChildren(
    ...OPS.map((op) =>
      h("span", { class: `op-${op}`, "data-op": op, "data-value": analytics.totals[op] },
        `${OP_NAMES[op]} ${fmt.int(analytics.totals[op])}`),
    ),
  );
  document.getElementById("skipped").textContent =
    `skipped: ${fmt.int(stats.duplicates_skipped)} duplicates, ${fmt.int(stats.stale_skipped)} stale, ` +
    `${fmt.int(stats.dead_lettered)} dead-lettered`;
}

// A time-series chart: `series` is [{name, color, points: [[t_ms, value], ...]}] over [t0, t1];
// `markers` are times drawn as dashed red lines (drift alerts).
function lineChart(svg, series, { t0, t1, yMin = null, digits = 0, markers = [] }) {
  const width = Math.max(svg.clientWidth || 480, 200);
  const height = svg.clientHeight || 150;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const pad = { l: 48, r: 10, t: 8, b: 18 };
  const values = series.flatMap((s) => s.points.map((p) => p[1]));
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  if (yMin !== null) lo = Math.min(lo, yMin);
  if (hi - lo < 1e-9) hi = lo + (Math.abs(lo) || 1);
  const span = Math.max(t1 - t0, 1);
  const x = (t) => pad.l + ((t - t0) / span) * (width - pad.l - pad.r);
  const y = (v) => height - pad.b - ((v - lo) / (hi - lo)) * (height - pad.t - pad.b);
  for (let i = 0; i <= 2; i++) {
    const v = lo + ((hi - lo) * i) / 2;
    svgEl(svg, "line", { class: "grid", x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v) });
    svgEl(svg, "text", { x: pad.l - 4, y: y(v) + 3, "text-anchor": "end" }, fmt.num(v, digits));
  }
  svgEl(svg, "text", { x: pad.l, y: height - 4 }, t1 > t0 ? fmt.ago(t1 - t0) : "");
  svgEl(svg, "text", { x: width - pad.r, y: height - 4, "text-anchor": "end" }, "now");
  for (const t of markers) {
    const line = svgEl(svg, "line", { class: "alert", x1: x(t), x2: x(t), y1: pad.t, y2: height - pad.b, "data-alert": t });
    svgEl(line, "title", {}, `drift alert at ${fmt.clock(t)} UTC`);
  }
  for (const s of series) {
    const points = s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    svgEl(svg, "polyline", {
      points, fill: "none", stroke: s.color, "stroke-width": 1.8, "data-series": s.name, "data-points": s.points.length,
    });
    if (s.points.length) {
      // The latest point, visible even while there is only one.
      const [t, v] = s.points[s.points.length - 1];
      svgEl(svg, "circle", { cx: x(t), cy: y(v), r: 3, fill: s.color });
    }
  }
}

function timeRange(samples) {
  const t1 = samples.length ? samples[samples.length - 1].t_ms : Date.now();
  return { t0: samples.length ? samples[0].t_ms : t1, t1 };
}

function renderSeries(samples) {
  const range = timeRange(samples);
  const pick = (f) => samples.filter((s) => f(s) !== null && f(s) !== undefined).map((s) => [s.t_ms, f(s)]);
  lineChart(document.getElementById("rate-chart"),
    [{ name: "events_per_s", color: SERIES_COLORS[0], points: pick((s) => s.events_per_s) }],
    { ...range, yMin: 0 });
  lineChart(document.getElementById("lag-chart"), [
    { name: "p50", color: "#1565c0", points: pick((s) => s.lag_p50_ms) },
    { name: "p99", color: "#ef6c00", points: pick((s) => s.lag_p99_ms) },
  ], { ...range, yMin: 0 });
}

function renderModels(stats, samples) {
  const box = document.getElementById("models");
  const last = samples.length ? samples[samples.length - 1] : null;
  const names = last ? last.models.map((m) => m.name) : Object.keys(stats.models);
  const range = timeRange(samples);
  box.replaceChildren();
  // Every card is in place before any chart is drawn: a chart's size depends on how many
  // cards share the row.
  const charts = [];
  names.forEach((name, i) => {
    const report = stats.models[name] || {};
    const points = [];
    const alerts = [];
    let before = null;
    for (const s of samples) {
      const m = s.models.find((x) => x.name === name);
      if (!m) continue;
      if (m.value !== null) points.push([s.t_ms, m.value]);
      if (before !== null && m.drift_detections > before) alerts.push(s.t_ms);
      before = m.drift_detections;
    }
    const metric = last ? (last.models.find((x) => x.name === name) || {}).metric : "";
    const value = points.length ? points[points.length - 1][1] : null;
    const detections = report.drift ? report.drift.detections : 0;
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("class", "chart");
    svg.dataset.model = name;
    const card = h("div", { class: "model", "data-model": name },
      h("h3", {}, `${name} `, h("small", {}, `${report.kind || ""} · ${report.task || ""}`)),
      h("div", { class: "note" },
        `${metric} ${fmt.num(value, 3)} · trained ${fmt.int(report.trained)} · drift alerts ${fmt.int(detections)}`),
      svg);
    box.appendChild(card);
    charts.push([svg, [{ name, color: SERIES_COLORS[i % SERIES_COLORS.length], points }],
      { ...range, digits: metric === "accuracy" ? 2 : 1, markers: alerts }]);
  });
  for (const [svg, series, opts] of charts) {
    lineChart(svg, series, opts);
    svg.dataset.points = String(series[0].points.length);
  }
}

// The window an aggregate is in now (the watermark's), else its newest.
function currentWindow(a) {
  return a.windows.find((w) => w.start_ms === a.current_start_ms) || a.windows[a.windows.length - 1] || null;
}

function renderAnalytics(analytics) {
  const box = document.getElementById("analytics");
  document.getElementById("analytics-note").textContent =
    `tumbling windows of event time; events later than ${fmt.span(analytics.lateness_ms)} are counted as late` +
    (analytics.watermark_ms ? `; watermark ${fmt.clock(analytics.watermark_ms)} UTC` : "");
  box.replaceChildren();
  for (const a of analytics.aggregates) {
    const w = currentWindow(a);
    const head = h("header", {},
      h("h3", {}, `${a.name} `,
        h("small", {}, `every ${fmt.span(a.window_ms)} of ${a.collection === "*" ? "every collection" : a.collection}` +
          (a.group_by ? `, by ${a.group_by}` : "") +
          ` · ${a.windows.length} window${a.windows.length === 1 ? "" : "s"} kept · ${fmt.int(a.late)} late`)),
      h("div", { class: "note" }, w
        ? `current window ${fmt.clock(w.start_ms)}–${fmt.clock(w.end_ms)} UTC${w.closed ? " (closed)" : ""}: ${fmt.int(w.count)} events`
        : "no events yet"));
    const card = h("div", { class: "aggregate", "data-aggregate": a.name }, head);
    if (w) {
      card.append(windowTable(a, w), windowBars(w));
    }
    box.appendChild(card);
  }
}

const MAX_ROWS = 40;

function windowTable(a, w) {
  const measures = a.measures.slice(1);
  const groups = [...w.groups].sort((x, y) => y.count - x.count);
  const rows = [];
  for (const g of groups) {
    for (const op of OPS) {
      const figures = g.ops[op];
      if (!figures) continue;
      rows.push(h("tr", {},
        h("td", {}, a.collection === "*" ? g.collection : g.group === null ? "–" : g.group),
        h("td", { class: `op-${op}` }, OP_NAMES[op]),
        h("td", { class: "num" }, fmt.int(figures.count)),
        ...measures.map((m) => h("td", { class: "num" }, fmt.num(figures[m])))));
    }
  }
  const shown = rows.slice(0, MAX_ROWS);
  const table = h("table", {},
    h("thead", {}, h("tr", {},
      h("th", {}, a.collection === "*" ? "collection" : a.group_by || "group"),
      h("th", {}, "op"), h("th", { class: "num" }, "count"),
      ...measures.map((m) => h("th", { class: "num" }, m)))),
    h("tbody", {}, ...shown));
  const wrap = h("div", {}, table);
  if (rows.length > shown.length) wrap.append(h("div", { class: "note" }, `and ${rows.length - shown.length} more rows`));
  return wrap;
}

// One horizontal bar per group of the window, stacked by op.
function windowBars(w) {
  const groups = [...w.groups].sort((x, y) => y.count - x.count).slice(0, 12);
  const rowH = 18;
  const width = 360;
  const labelW = 110;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "bars");
  svg.setAttribute("viewBox", `0 0 ${width} ${groups.length * rowH + 4}`);
  svg.setAttribute("width", "100%");
  svg.setAttribute("height", groups.length * rowH + 4);
  const max = Math.max(1, ...groups.map((g) => g.count));
  groups.forEach((g, i) => {
    const y = i * rowH + 2;
    const label = g.group === null ? g.collection : `${g.group}`;
    svgEl(svg, "text", { x: labelW - 6, y: y + 12, "text-anchor": "end" }, label.length > 18 ? `${label.slice(0, 17)}…` : label);
    let x = labelW;
    for (const op of OPS) {
      const n = g.ops[op] ? g.ops[op].count : 0;
      if (!n) continue;
      const len = (n / max) * (width - labelW - 50);
      const bar = svgEl(svg, "rect", { x, y, width: Math.max(len, 1), height: rowH - 5, fill: OP_COLORS[op], "data-op": op });
      svgEl(bar, "title", {}, `${OP_NAMES[op]}: ${n}`);
      x += len;
    }
    svgEl(svg, "text", { x: x + 4, y: y + 12 }, fmt.int(g.count));
  });
  return svg;
}

// The latest alerts, newest first, each marked by its kind.
function renderAlerts(alerts) {
  const box = document.getElementById("alerts");
  if (!alerts.length) {
    box.replaceChildren(h("span", { class: "empty" }, "No alert yet."));
    return;
  }
  const what = (a) => {
    switch (a.kind) {
      case "anomaly": return `${a.model} scored ${fmt.num(a.score, 3)}` + (a.top_features && a.top_features.length ? ` (${a.top_features.join(", ")})` : "");
      case "rule": return `rule ${a.rule}`;
      case "schema": return `field ${a.field}: ${a.was.length ? a.was.join("/") : "new"} → ${a.now}`;
      default: return `${a.model} drifted after ${fmt.int(a.trained)} samples`;
    }
  };
  box.replaceChildren(...alerts.slice(-20).reverse().map((a) => h("div", { class: `alert-line ${a.kind}`, "data-kind": a.kind, "data-id": a.id },
    h("span", { class: `badge ${a.kind}` }, a.kind),
    ` ${fmt.clock(a.ts_ms)} · ${a.collection ? `${a.collection}/${a.key} · ` : ""}${what(a)}`)));
}

function renderBridge(bridge) {
  const box = document.getElementById("bridge");
  if (!bridge.linked) {
    box.dataset.state = "not-linked";
    box.replaceChildren(h("span", { class: "empty" },
      "The bridge is not linked: set SINK_BRIDGE_URL to the bridge's CDC_HTTP_ADDR to see its snapshot progress here."));
    return;
  }
  if (!bridge.reachable) {
    box.dataset.state = "unreachable";
    box.replaceChildren(h("span", { class: "empty" }, `Cannot reach the bridge at ${bridge.url}: ${bridge.error}`));
    return;
  }
  box.dataset.state = bridge.snapshot_running ? "snapshot" : "streaming";
  const lines = [h("div", {},
    `${bridge.url} · ${bridge.snapshot_running ? "snapshot running" : "streaming (no snapshot running)"} · ` +
    `${fmt.int(bridge.events_published)} changes published`)];
  for (const c of bridge.snapshot) {
    const pct = c.estimated ? Math.min(100, (100 * c.rows) / c.estimated) : null;
    lines.push(h("div", { "data-collection": c.collection },
      h("span", { class: "progress" }, h("div", { style: `width: ${pct === null ? 0 : pct.toFixed(1)}%` })),
      ` ${c.collection}: ${fmt.int(c.rows)} of ${c.estimated === null ? "?" : fmt.int(c.estimated)} rows` +
        (pct === null ? "" : ` (${pct.toFixed(0)}%)`)));
  }
  box.replaceChildren(...lines);
}

loop();
