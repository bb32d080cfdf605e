//! The source: one change stream, with a snapshot's chunks interleaved when one runs, turned
//! into the messages to publish, in the order they must be published, each carrying the
//! checkpoint it leads to once it (and everything before it) is confirmed.
//!
//! It runs as its own task, so reading and encoding overlap with publishing. See
//! `bridge::snapshot` for why the chunks wait for the stream to pass their watermark.

use std::collections::VecDeque;
use std::sync::Arc;

use mongodb::bson::{Bson, RawBsonRef, RawDocumentBuf};
use mongodb::change_stream::ChangeStream;
use tokio::sync::mpsc;

use super::checkpoint::{Checkpoint, CollectionProgress, Cursor, SnapshotProgress};
use super::encode::{self, Omit, Redaction, RowSource};
use super::metrics::BridgeMetrics;
use super::settings::OversizeMode;
use super::snapshot::{self, Chunk, ReadAhead, Reader, Touched, bracket_of, id_key};
use crate::event::{
    CONTROL_OP, ClusterTime, ControlEvent, Envelope, Phase, SnapshotInfo, SnapshotMark, Source as Where,
};

/// What the source hands to the session, in publishing order.
pub(super) enum Item {
    /// A message to publish; `at` is where the bridge stands once it is confirmed.
    Publish { body: Vec<u8>, envelope: Envelope, at: Checkpoint },
    /// A position with nothing to publish (an idle batch, a change we do not publish, rows
    /// dropped at the end of a chunk).
    Mark(Checkpoint),
    /// The snapshot is complete and the bridge stops here (`CDC_SNAPSHOT_MODE=initial_only`).
    Finished(Checkpoint),
}

/// Why the source stopped.
#[derive(Debug)]
pub(super) enum SourceError {
    /// MongoDB failed; a new session may fix it.
    Mongo(mongodb::error::Error),
    /// Retrying will not help.
    Fatal(String),
}

impl From<mongodb::error::Error> for SourceError {
    fn from(e: mongodb::error::Error) -> Self {
        SourceError::Mongo(e)
    }
}

/// The receiving session went away, or the source failed.
enum Stop {
    Closed,
    Failed(SourceError),
}

impl From<mongodb::error::Error> for Stop {
    fn from(e: mongodb::error::Error) -> Self {
        Stop::Failed(SourceError::Mongo(e))
    }
}

/// Chunks read ahead and waiting for their watermarks, at most.
const PENDING: usize = 2;

/// A snapshot in progress: its reader, the chunks read and waiting for the stream to pass
/// their watermarks, and the keys the stream changed meanwhile.
pub(super) struct Snapshot {
    reader: Reader,
    ahead: Option<ReadAhead>,
    pending: VecDeque<Chunk>,
    touched: Touched,
    /// Every row of the current collection is out; its `end` comes next.
    ended: bool,
}

impl Snapshot {
    /// Drive a snapshot with `reader`.
    pub(super) fn new(reader: Reader) -> Self {
        Self { reader, ahead: None, pending: VecDeque::new(), touched: Touched::default(), ended: false }
    }

    /// Take the chunks already read, without waiting.
    fn top_up(&mut self) -> Result<(), Stop> {
        while self.pending.len() < PENDING {
            match self.ahead.as_mut().and_then(ReadAhead::ready) {
                Some(Ok(chunk)) => self.pending.push_back(chunk),
                Some(Err(e)) => return Err(e.into()),
                None => break,
            }
        }
        Ok(())
    }
}

/// How the source encodes what it reads.
pub(super) struct Encoding {
    /// The watched database.
    pub db: String,
    /// Fields never published.
    pub redact: Redaction,
    /// The largest message body (`CDC_MAX_MESSAGE_BYTES`).
    pub max_bytes: usize,
    /// What to do with a larger one (`CDC_OVERSIZE`).
    pub oversize: OversizeMode,
    /// Counters for what was skipped or truncated.
    pub metrics: Arc<BridgeMetrics>,
    /// `CDC_FORMAT=debezium`: Debezium's MongoDB envelope instead of ours.
    pub format: Option<super::debezium::Options>,
}

/// Turns the stream (and a snapshot) into [`Item`]s.
pub(super) struct Source {
    /// Raw events: a large one may come in fragments (`$changeStreamSplitLargeEvent`), which
    /// do not each parse as an event.
    stream: ChangeStream<RawDocumentBuf>,
    /// Fragments of a split event, until its last one arrives.
    fragments: Vec<RawDocumentBuf>,
    /// Where the bridge stands after the last item sent.
    at: Checkpoint,
    /// The cluster time the stream has been read up to (every change up to it was sent).
    stream_time: ClusterTime,
    snapshot: Option<Snapshot>,
    stop_after_snapshot: bool,
    encoding: Encoding,
    last_mark: Option<mongodb::change_stream::event::ResumeToken>,
}

impl Source {
    /// A source over `stream`, which was opened at `at`; `snapshot` drives the snapshot when
    /// `at` has one in progress.
    pub(super) fn new(
        stream: ChangeStream<RawDocumentBuf>,
        at: Checkpoint,
        snapshot: Option<Snapshot>,
        stop_after_snapshot: bool,
        encoding: Encoding,
    ) -> Self {
        let stream_time = encode::token_cluster_time(at.token()).unwrap_or_default();
        let snapshot = if matches!(at, Checkpoint::Snapshot { .. }) { snapshot } else { None };
        Self {
            stream,
            fragments: Vec::new(),
            at,
            stream_time,
            snapshot,
            stop_after_snapshot,
            encoding,
            last_mark: None,
        }
    }

    /// Read until the stream closes, the session goes away, or an error (which is sent on).
    pub(super) async fn run(mut self, tx: mpsc::Sender<Result<Item, SourceError>>) {
        match self.pump(&tx).await {
            Ok(()) | Err(Stop::Closed) => {}
            Err(Stop::Failed(e)) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    }

    /// Keep a fragment of a split event; with its last one, the whole event: all fragments
    /// merged (the last fragment's `_id` resumes after it).
    fn assemble(&mut self, fragment: RawDocumentBuf) -> Result<Option<RawDocumentBuf>, Stop> {
        let of = match fragment.get("splitEvent") {
            Ok(Some(RawBsonRef::Document(split))) => split.get_i32("of").unwrap_or(1),
            _ => 1,
        };
        self.fragments.push(fragment);
        if self.fragments.len() < of as usize {
            return Ok(None);
        }
        let mut merged = RawDocumentBuf::new();
        let mut seen = std::collections::HashSet::new();
        for fragment in self.fragments.drain(..).rev() {
            for field in fragment.iter() {
                let (key, value) =
                    field.map_err(|e| Stop::Failed(SourceError::Fatal(format!("a split event: {e}"))))?;
                if key != "splitEvent" && seen.insert(key.to_string()) {
                    merged.append(key, value.to_raw_bson());
                }
            }
        }
        Ok(Some(merged))
    }

    /// One whole change from the stream: release the chunks it passes, note its key for the
    /// snapshot, and send its message (or a mark).
    async fn change(
        &mut self,
        tx: &mpsc::Sender<Result<Item, SourceError>>,
        scanned: encode::Scan<'_>,
    ) -> Result<(), Stop> {
        let Some(token) = self.stream.resume_token() else { return Ok(()) };
        let time = scanned.cluster_time.or_else(|| encode::token_cluster_time(&token)).unwrap_or(self.stream_time);
        // A chunk's rows go before the first change past its watermark.
        while self.chunk_ready(time, false) {
            self.release(tx).await?;
        }
        self.note_change(scanned.collection, scanned.id, time);
        self.at.set_token(token);
        self.stream_time = self.stream_time.max(time);
        let item = match scanned.message {
            Ok(Some(msg)) => match self.fit(&msg)? {
                Some((body, envelope)) => Item::Publish { body, envelope, at: self.at.clone() },
                None => Item::Mark(self.at.clone()),
            },
            Ok(None) => Item::Mark(self.at.clone()),
            Err(e) => {
                // Without a namespace or key there is nothing a consumer could apply.
                let operation = scanned.operation.unwrap_or("?");
                tracing::error!(error = %e, operation, "skipping a change that does not fit the contract");
                Item::Mark(self.at.clone())
            }
        };
        send(tx, item).await
    }

    /// The body of `msg`, or what `CDC_OVERSIZE` says when it is larger than
    /// `CDC_MAX_MESSAGE_BYTES`: stop, skip it (`None`), or leave out the pre-image, then the
    /// update's delta, then the document, listing what went in `truncated`.
    fn fit(&self, msg: &encode::Raw<'_>) -> Result<Option<(Vec<u8>, Envelope)>, Stop> {
        Self::fit_with(&self.encoding, msg)
    }

    /// [`Self::fit`], for when `self` is borrowed elsewhere.
    fn fit_with(enc: &Encoding, msg: &encode::Raw<'_>) -> Result<Option<(Vec<u8>, Envelope)>, Stop> {
        let bad = |e: encode::EventError| Stop::Failed(SourceError::Fatal(format!("{}: {e}", msg.describe())));
        let encode = |omit: Omit| match &enc.format {
            None => msg.body(&enc.redact, omit),
            Some(o) => super::debezium::body(msg, &enc.redact, omit, o),
        };
        let body = encode(Omit::default()).map_err(bad)?;
        if body.len() <= enc.max_bytes {
            return Ok(Some((body, msg.envelope())));
        }
        let what =
            format!("{} is {} bytes, more than CDC_MAX_MESSAGE_BYTES ({})", msg.describe(), body.len(), enc.max_bytes);
        if enc.oversize == OversizeMode::Fail {
            return Err(Stop::Failed(SourceError::Fatal(format!(
                "an event too large to publish: {what}; set CDC_OVERSIZE=skip or CDC_OVERSIZE=truncate to go on"
            ))));
        }
        if enc.oversize == OversizeMode::Truncate {
            let steps = [
                Omit { before: true, ..Omit::default() },
                Omit { before: true, delta: true, ..Omit::default() },
                Omit { before: true, delta: true, after: true },
            ];
            let mut omit = Omit::default();
            for step in steps {
                if !msg.has(Omit {
                    before: step.before && !omit.before,
                    delta: step.delta && !omit.delta,
                    after: step.after && !omit.after,
                }) {
                    continue;
                }
                omit = Omit {
                    before: step.before && msg.has(Omit { before: true, ..Omit::default() }),
                    delta: step.delta && msg.has(Omit { delta: true, ..Omit::default() }),
                    after: step.after && msg.has(Omit { after: true, ..Omit::default() }),
                };
                let body = encode(omit).map_err(bad)?;
                if body.len() <= enc.max_bytes {
                    tracing::warn!(event = %what, truncated = ?omit.names(), "published an oversized event without some of its parts");
                    enc.metrics.oversize_truncated.inc();
                    return Ok(Some((body, msg.envelope())));
                }
            }
        }
        tracing::warn!(event = %what, "skipped an event too large to publish (CDC_OVERSIZE)");
        enc.metrics.oversize_skipped.inc();
        Ok(None)
    }

    async fn pump(&mut self, tx: &mpsc::Sender<Result<Item, SourceError>>) -> Result<(), Stop> {
        loop {
            if let Some(snap) = self.snapshot.as_mut() {
                snap.top_up()?;
                if snap.pending.is_empty() && self.snapshot_step(tx).await? {
                    return Ok(());
                }
            }
            match self.stream.next_if_any().await {
                Ok(Some(raw)) => {
                    let scanned = encode::scan(&raw);
                    if scanned.fragments > 1 {
                        drop(scanned);
                        if let Some(whole) = self.assemble(raw)? {
                            let scanned = encode::scan(&whole);
                            self.change(tx, scanned).await?;
                        }
                        continue;
                    }
                    self.change(tx, scanned).await?;
                }
                Ok(None) => {
                    if !self.stream.is_alive() {
                        return Ok(());
                    }
                    // Never a position inside a split event: resuming there would lose its
                    // first fragments.
                    if !self.fragments.is_empty() {
                        continue;
                    }
                    let Some(token) = self.stream.resume_token() else { continue };
                    if self.last_mark.as_ref() == Some(&token) {
                        continue;
                    }
                    match encode::token_cluster_time(&token) {
                        Some(time) => self.stream_time = self.stream_time.max(time),
                        None if self.snapshot.is_some() => {
                            return Err(Stop::Failed(SourceError::Fatal(
                                "a snapshot needs the change stream's position, and this server's resume tokens are of an unknown format".into(),
                            )));
                        }
                        None => {}
                    }
                    self.at.set_token(token.clone());
                    self.last_mark = Some(token);
                    while self.chunk_ready(self.stream_time, true) {
                        self.release(tx).await?;
                    }
                    send(tx, Item::Mark(self.at.clone())).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The snapshot's next step when no chunk waits: begin a collection, read a chunk, end a
    /// collection, or finish. Returns true when the source must stop (`initial_only`).
    async fn snapshot_step(&mut self, tx: &mpsc::Sender<Result<Item, SourceError>>) -> Result<bool, Stop> {
        let (Some(snap), Checkpoint::Snapshot { progress, .. }) = (self.snapshot.as_mut(), &mut self.at) else {
            return Ok(false);
        };
        if let Some(cur) = &progress.current {
            if snap.ended {
                let end = control(&self.encoding.db, progress, cur, Phase::End, self.stream_time);
                tracing::info!(collection = %cur.name, rows = cur.rows, "snapshot of the collection is complete");
                progress.current = None;
                snap.ended = false;
                snap.touched.clear();
                send(tx, end_item(end, self.at.clone())).await?;
                return Ok(false);
            }
            let ahead = match &mut snap.ahead {
                Some(ahead) => ahead,
                None => {
                    snap.ahead.insert(snap.reader.read_ahead(cur.name.clone(), cur.cursor.clone(), cur.max_id.clone()))
                }
            };
            match ahead.next().await {
                Some(Ok(chunk)) => snap.pending.push_back(chunk),
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(Stop::Failed(SourceError::Fatal(format!(
                        "the snapshot's reader of `{}` stopped before the collection's end",
                        cur.name
                    ))));
                }
            }
            return Ok(false);
        }
        let Some(name) = progress.pending.first().cloned() else {
            tracing::info!(snapshot = %progress.id, "snapshot complete; streaming");
            self.snapshot = None;
            self.at = Checkpoint::Stream { token: self.at.token().clone() };
            if self.stop_after_snapshot {
                send(tx, Item::Finished(self.at.clone())).await?;
                return Ok(true);
            }
            send(tx, Item::Mark(self.at.clone())).await?;
            return Ok(false);
        };
        let bounds = snap.reader.bounds(&name).await?;
        tracing::info!(collection = %name, estimate = bounds.estimate, "snapshot of the collection begins");
        progress.pending = progress.pending[1..].to_vec().into();
        let cur = CollectionProgress {
            name: name.into(),
            since: self.stream_time,
            max_id: bounds.max_id.map(Arc::new),
            cursor: Cursor { bracket: 0, after: None },
            rows: 0,
            estimate: bounds.estimate,
        };
        let start = control(&self.encoding.db, progress, &cur, Phase::Start, self.stream_time);
        progress.current = Some(cur);
        snap.touched.clear();
        send(tx, end_item(start, self.at.clone())).await?;
        Ok(false)
    }

    /// A chunk waits and the stream has passed its watermark: strictly past it for a change
    /// at `time`, at or past it for an idle batch's position.
    fn chunk_ready(&self, time: ClusterTime, idle: bool) -> bool {
        let Some(chunk) = self.snapshot.as_ref().and_then(|s| s.pending.front()) else { return false };
        if idle { time >= chunk.watermark } else { time > chunk.watermark }
    }

    /// Remember a change to a key of the collection being snapshotted.
    fn note_change(&mut self, collection: Option<&str>, id: Option<RawBsonRef<'_>>, time: ClusterTime) {
        let (Some(snap), Checkpoint::Snapshot { progress, .. }) = (self.snapshot.as_mut(), &self.at) else { return };
        let Some(cur) = &progress.current else { return };
        if collection != Some(&*cur.name) || time <= cur.since {
            return;
        }
        if let Some(id) = id.and_then(|id| Bson::try_from(id.to_raw_bson()).ok()) {
            snap.touched.note(&id, &cur.cursor, cur.max_id.as_deref());
        }
    }

    /// Send the waiting chunk's rows, but those whose key the stream changed meanwhile.
    async fn release(&mut self, tx: &mpsc::Sender<Result<Item, SourceError>>) -> Result<(), Stop> {
        let (Some(snap), Checkpoint::Snapshot { progress, .. }) = (self.snapshot.as_mut(), &mut self.at) else {
            return Ok(());
        };
        let Some(chunk) = snap.pending.pop_front() else { return Ok(()) };
        let final_chunk = chunk.last && progress.pending.is_empty();
        let ids: Vec<Bson> = chunk
            .docs
            .iter()
            .map(|d| {
                d.get("_id").ok().flatten().and_then(|id| Bson::try_from(id.to_raw_bson()).ok()).unwrap_or(Bson::Null)
            })
            .collect();
        let keep: Vec<bool> = if snap.touched.is_empty() {
            vec![true; ids.len()]
        } else {
            ids.iter().map(|id| !snap.touched.contains(&id_key(id))).collect()
        };
        let last_kept = keep.iter().rposition(|k| *k);
        let mut rows = Vec::with_capacity(ids.len());
        let Some(cur) = progress.current.as_mut() else { return Ok(()) };
        for (i, doc) in chunk.docs.iter().enumerate() {
            cur.cursor = Cursor { bracket: bracket_of(&ids[i]), after: Some(ids[i].clone()) };
            if !keep[i] {
                continue;
            }
            cur.rows += 1;
            let mark = if final_chunk && Some(i) == last_kept { SnapshotMark::Last } else { SnapshotMark::True };
            let at = RowSource {
                snapshot_id: &progress.id,
                db: &self.encoding.db,
                collection: &cur.name,
                read_at: chunk.read_at,
                ts_ms: chunk.wall_ms,
            };
            match encode::raw_row(doc, &at, mark) {
                Ok(msg) => rows.push((Self::fit_with(&self.encoding, &msg)?, cur.clone())),
                Err(e) => {
                    tracing::error!(error = %e, collection = %cur.name, "skipping a document that does not fit the contract")
                }
            }
        }
        cur.cursor = chunk.next.clone();
        snap.touched.prune(&cur.cursor);
        if chunk.last {
            snap.ended = true;
            snap.ahead = None;
        }
        let after_chunk = self.at.clone();
        for (encoded, cur) in rows {
            let at = match &after_chunk {
                Checkpoint::Snapshot { token, progress } => Checkpoint::Snapshot {
                    token: token.clone(),
                    progress: Box::new(SnapshotProgress { current: Some(cur), ..(**progress).clone() }),
                },
                other => other.clone(),
            };
            let item = match encoded {
                Some((body, envelope)) => Item::Publish { body, envelope, at },
                None => Item::Mark(at),
            };
            send(tx, item).await?;
        }
        send(tx, Item::Mark(after_chunk)).await
    }
}

fn end_item(ev: ControlEvent, at: Checkpoint) -> Item {
    Item::Publish { body: ev.to_json(), envelope: Envelope::of_control(&ev), at }
}

/// A `start` or `end` control message for the collection `cur`.
fn control(db: &str, p: &SnapshotProgress, cur: &CollectionProgress, phase: Phase, now: ClusterTime) -> ControlEvent {
    let phase_name = match phase {
        Phase::Start => "start",
        Phase::End => "end",
    };
    ControlEvent {
        id: format!("s:{}:{}:{phase_name}", p.id, cur.name),
        op: CONTROL_OP.into(),
        snapshot: SnapshotInfo {
            id: p.id.to_string(),
            phase,
            since: cur.since,
            rows: (phase == Phase::End).then_some(cur.rows),
        },
        source: Where {
            db: db.to_string(),
            collection: cur.name.to_string(),
            cluster_time: now,
            snapshot: SnapshotMark::True,
        },
        ts_ms: snapshot::now_ms(),
    }
}

async fn send(tx: &mpsc::Sender<Result<Item, SourceError>>, item: Item) -> Result<(), Stop> {
    tx.send(Ok(item)).await.map_err(|_| Stop::Closed)
}
