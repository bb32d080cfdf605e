//! Restarting a failed session with backoff, the same way for the bridge and the sink: wait
//! (100 ms, doubling to 5 s) unless shutdown comes first; a session that ran a while starts
//! the waits over.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio_util::sync::CancellationToken;

/// A session that lasted this long ran well: the next failure waits the least again.
const HEALTHY: Duration = Duration::from_secs(30);

/// The waits between a supervisor's attempts.
pub struct Backoff {
    delays: backon::ExponentialBackoff,
    started: Instant,
}

fn delays() -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}

impl Default for Backoff {
    fn default() -> Self {
        Self { delays: delays(), started: Instant::now() }
    }
}

impl Backoff {
    /// A session begins now.
    pub fn session_started(&mut self) {
        self.started = Instant::now();
    }

    /// The session failed: wait before the next one. `false` if shutdown came first.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        if self.started.elapsed() >= HEALTHY {
            self.delays = delays();
        }
        let delay = self.delays.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}
