//! The live dashboard: the page at `/` (HTML, CSS and script compiled into the binary, so it
//! works offline), and the JSON it reads besides the API's `/stats` and `/alerts`:
//! `/analytics` (the published view's windows), `/history` (a ring of per-second samples the
//! sink keeps, so time series survive a page reload) and `/bridge` (the bridge's snapshot
//! progress, fetched from its `/metrics` so the page stays same-origin). The page holds no
//! state of its own: everything it draws comes from these answers.

mod bridge;
pub mod history;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use self::bridge::BridgeLink;
use self::history::History;
use super::stats::Board;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// How often the sink samples its figures into the history.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What the dashboard's routes read: the published view, the history, the bridge link.
#[derive(Clone)]
pub struct Dashboard {
    board: Board,
    history: Arc<Mutex<History>>,
    bridge: Option<Arc<BridgeLink>>,
}

impl Dashboard {
    /// A dashboard over `board`, showing the bridge at `bridge_url` (`http://host:port`) if set.
    pub fn new(board: Board, bridge_url: Option<String>) -> Self {
        Self {
            board,
            history: Arc::new(Mutex::new(History::default())),
            bridge: bridge_url.map(|url| Arc::new(BridgeLink::new(url))),
        }
    }

    /// `/`, its script and style, `/analytics`, `/history` and `/bridge`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(|| async { asset("text/html; charset=utf-8", PAGE) }))
            .route("/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
            .route("/dashboard.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
            .route("/analytics", get(analytics))
            .route("/history", get(history))
            .route("/bridge", get(bridge))
            .with_state(self.clone())
    }

    /// Take a sample of the published view every [`SAMPLE_EVERY`] until `stop`. Run by the
    /// sink beside its HTTP server, so samples are taken while no page is open, and while the
    /// consumer is idle (the rate is then 0).
    pub async fn sample(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    let view = self.board.view();
                    let mut lags = self.board.take_lags();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64);
                    self.history.lock().unwrap_or_else(|p| p.into_inner()).push(&view, &mut lags, now);
                }
            }
        }
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // no-cache: a new binary serves a new page without a stale script beside it.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn analytics(State(d): State<Dashboard>) -> Response {
    Json(&d.board.view().analytics).into_response()
}

async fn history(State(d): State<Dashboard>) -> Response {
    let body = serde_json::to_vec(&*d.history.lock().unwrap_or_else(|p| p.into_inner()));
    ([(header::CONTENT_TYPE, "application/json")], body.unwrap_or_default()).into_response()
}

async fn bridge(State(d): State<Dashboard>) -> Response {
    match &d.bridge {
        Some(link) => Json(link.status().await).into_response(),
        None => Json(serde_json::json!({"linked": false})).into_response(),
    }
}
