//! The reader task: pulls changes from the stream and turns them into ready-to-send messages,
//! so BSON decoding and JSON encoding overlap with publishing.

use mongodb::bson::Document;
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use tokio::sync::mpsc;

use crate::event::ChangeEvent;
use crate::mq::publisher::Envelope;

/// What the reader hands to the publisher, in stream order.
pub(super) enum Item {
    /// A change to publish; `token` resumes after it.
    Change { token: ResumeToken, body: Vec<u8>, envelope: Envelope },
    /// A position with nothing to publish (an idle batch, or a change we do not publish).
    Mark(ResumeToken),
}

/// Read until the stream closes, the receiver goes away, or an error (which is sent on).
pub(super) async fn read(
    mut stream: ChangeStream<ChangeStreamEvent<Document>>,
    tx: mpsc::Sender<Result<Item, mongodb::error::Error>>,
) {
    let mut last_mark: Option<ResumeToken> = None;
    loop {
        let item = match stream.next_if_any().await {
            Ok(Some(change)) => {
                let Some(token) = stream.resume_token() else { continue };
                match ChangeEvent::from_change(&change) {
                    Ok(Some(ev)) => {
                        Item::Change { token, body: ev.to_json(), envelope: crate::mq::publisher::Envelope::of(&ev) }
                    }
                    Ok(None) => Item::Mark(token),
                    Err(e) => {
                        // Without a namespace or key there is nothing a consumer could apply.
                        tracing::error!(error = %e, operation = ?change.operation_type, "skipping a change that does not fit the contract");
                        Item::Mark(token)
                    }
                }
            }
            Ok(None) => {
                if !stream.is_alive() {
                    return;
                }
                match stream.resume_token() {
                    Some(t) if last_mark.as_ref() != Some(&t) => {
                        last_mark = Some(t.clone());
                        Item::Mark(t)
                    }
                    _ => continue,
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if tx.send(Ok(item)).await.is_err() {
            return;
        }
    }
}
