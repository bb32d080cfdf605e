//! The one shared MongoDB client: created lazily, once per process (per connection string),
//! and cheap to clone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
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

/// Every handle this process made, by connection string.
fn registry() -> &'static Mutex<HashMap<String, Mongo>> {
    static ALL: OnceLock<Mutex<HashMap<String, Mongo>>> = OnceLock::new();
    ALL.get_or_init(Default::default)
}

impl Mongo {
    /// The process's handle for `uri`: the first call makes it, later calls clone it. Nothing
    /// connects until [`Mongo::client`] is first called.
    pub fn shared(uri: &str) -> Self {
        let mut all = registry().lock().unwrap_or_else(|p| p.into_inner());
        all.entry(uri.to_string())
            .or_insert_with(|| Self { uri: uri.into(), client: Arc::new(OnceCell::new()) })
            .clone()
    }

    /// Shut down every client of the process ([`Mongo::shutdown`]); call it once, at exit.
    pub async fn shutdown_all() {
        let all: Vec<Mongo> = registry().lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for m in all {
            m.shutdown().await;
        }
    }

    /// The shared client, created on first use.
    pub async fn client(&self) -> Result<&Client, MongoError> {
        self.client
            .get_or_try_init(|| async {
                let mut opts = ClientOptions::parse(&*self.uri)
                    .await
                    .map_err(|e| MongoError::BadUri { uri: redact_uri(&self.uri), reason: reason(&e) })?;
                opts.app_name.get_or_insert_with(|| "mongo-cdc".into());
                // Fail in seconds, not the driver's 30 s, when nothing answers; a URI option wins.
                opts.server_selection_timeout.get_or_insert(Duration::from_secs(10));
                Client::with_options(opts)
                    .map_err(|e| MongoError::BadUri { uri: redact_uri(&self.uri), reason: reason(&e) })
            })
            .await
    }

    /// Close the client's connections and background tasks. Call it (or
    /// [`Mongo::shutdown_all`]) before the runtime goes away: a client merely dropped during
    /// runtime shutdown can panic inside the driver.
    pub async fn shutdown(&self) {
        if let Some(client) = self.client.get() {
            client.clone().shutdown().immediate(true).await;
        }
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
                MongoError::Unreachable { uri: redact_uri(&self.uri), reason: reason(&e) }
            }
            ErrorKind::Authentication { .. } => MongoError::Auth(reason(&e)),
            _ => MongoError::Driver(e),
        }
    }
}

/// The part of a driver error a person needs: its message, without the driver's `Kind:`,
/// `labels` and topology dump (server selection errors keep the last server error).
fn reason(e: &mongodb::error::Error) -> String {
    match &*e.kind {
        ErrorKind::InvalidArgument { message, .. } => message.clone(),
        ErrorKind::Authentication { message, .. } => message.clone(),
        ErrorKind::ServerSelection { message, .. } => {
            let head = message.split(" Topology:").next().unwrap_or(message).trim();
            // The topology dump embeds the last error as `Error: Kind: <what>, labels: ...`.
            match message.split("Error: Kind: ").nth(1).and_then(|r| r.split(", labels").next()) {
                Some(last) => format!("{head} (last error: {last})"),
                None => head.to_string(),
            }
        }
        _ => e.to_string().lines().next().unwrap_or_default().to_string(),
    }
}
