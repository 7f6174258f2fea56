//! `/health/ready`: the load balancer's health check (`deploy/haproxy.cfg.example`).
//!
//! 200 `ready` while this node takes requests; 404 `draining` from SIGTERM on, for the
//! configured `drain_delay`, while the node still serves what reaches it, so that the
//! balancer moves traffic away before the node stops accepting; 503 `database unreachable`
//! while the database does not answer. Draining is 404 because that is HAProxy's signal for
//! a server being taken out gracefully (`http-check disable-on-404`): it sends the node no new
//! requests but lets those in flight finish, even where a server marked down has its requests
//! closed (`on-marked-down shutdown-sessions`, for nodes that hang); to any other balancer
//! both are a failed check. Anyone may ask (a balancer has no credential); the
//! request has no body, and the database sees at most one check a second whatever the rate
//! (`panda_service::JobService::database_ready`). `isAlive` stays what upstream's is: the
//! process answers.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Whether the node is being drained; set once, on SIGTERM.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
}

impl Health {
    /// From now on the health check fails; requests are still served.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    let (status, text) = if state.health.is_draining() {
        (StatusCode::NOT_FOUND, "draining\n")
    } else if state.service.database_ready().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}
