//! The one shared MongoDB client: created lazily, once, and cheap to clone.

use std::sync::Arc;
use std::time::Duration;

use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use mongodb::{Client, bson::doc};
use tokio::sync::OnceCell;

use crate::config::redact_uri;
use crate::error::MongoError;

/// A handle on the process's MongoDB client. Clones share one client (and so one pool).
#[derive(Clone)]
pub struct Mongo {
    uri: Arc<str>,
    client: Arc<OnceCell<Client>>,
}

impl Mongo {
    /// A handle for `uri`; nothing connects until [`Mongo::client`] is first called.
    pub fn new(uri: &str) -> Self {
        Self { uri: uri.into(), client: Arc::new(OnceCell::new()) }
    }

    /// The shared client, created on first use.
    pub async fn client(&self) -> Result<&Client, MongoError> {
        self.client
            .get_or_try_init(|| async {
                let mut opts = ClientOptions::parse(&*self.uri).await.map_err(|e| MongoError::BadUri {
                    uri: redact_uri(&self.uri),
                    reason: one_line(&e),
                })?;
                opts.app_name.get_or_insert_with(|| "mongo-cdc".into());
                // Fail in seconds, not the driver's 30 s, when nothing answers; a URI option wins.
                opts.server_selection_timeout.get_or_insert(Duration::from_secs(10));
                Client::with_options(opts).map_err(|e| MongoError::BadUri {
                    uri: redact_uri(&self.uri),
                    reason: one_line(&e),
                })
            })
            .await
    }

    /// Check that the server answers, turning failures into errors that name what to fix.
    pub async fn ping(&self) -> Result<(), MongoError> {
        let client = self.client().await?;
        client.database("admin").run_command(doc! {"ping": 1}).await.map_err(|e| self.classify(e))?;
        Ok(())
    }

    /// Turn a driver error into a [`MongoError`] a person can act on.
    pub fn classify(&self, e: mongodb::error::Error) -> MongoError {
        match *e.kind {
            ErrorKind::ServerSelection { .. } => {
                MongoError::Unreachable { uri: redact_uri(&self.uri), reason: one_line(&e) }
            }
            ErrorKind::Authentication { .. } => MongoError::Auth(one_line(&e)),
            _ => MongoError::Driver(e),
        }
    }
}

/// The first line of an error's message (driver errors can span many lines).
fn one_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().chars().take(300).collect()
}
