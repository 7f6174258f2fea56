//! Whether this node should be sent requests: what a load balancer's health check asks.
//!
//! The answer is the database's: a node whose database does not answer can serve nothing
//! but `isAlive`. (That the schema is the right one was checked at start-up, which a node
//! does not pass otherwise.) One check at a time reaches the database, and its answer stands
//! for [`READINESS_TTL`], so however many health checks arrive, the database sees at most
//! one `SELECT 1` a second from them; callers arriving during a check wait for its answer.

use std::time::{Duration, Instant};

use crate::JobService;

/// How long one database check answers every health check.
pub const READINESS_TTL: Duration = Duration::from_secs(1);

/// The last check and when it was made.
#[derive(Debug, Default)]
pub(crate) struct LastCheck(tokio::sync::Mutex<Option<(Instant, bool)>>);

impl JobService {
    /// Whether the database answers, checked at most once per [`READINESS_TTL`]. A change
    /// between answering and not is logged once, with the database's error.
    pub async fn database_ready(&self) -> bool {
        let mut last = self.readiness.0.lock().await;
        if let Some((at, ready)) = *last {
            if at.elapsed() < READINESS_TTL {
                return ready;
            }
        }
        let was_ready = last.map(|(_, ready)| ready).unwrap_or(true);
        let ready = match self.stores.jobs.ping().await {
            Ok(()) => {
                if !was_ready {
                    tracing::info!(target: "panda::health", "the database answers again: ready");
                }
                true
            }
            Err(e) => {
                if was_ready {
                    tracing::warn!(target: "panda::health", error = %e,
                        "the database does not answer: not ready");
                }
                false
            }
        };
        *last = Some((Instant::now(), ready));
        ready
    }
}
