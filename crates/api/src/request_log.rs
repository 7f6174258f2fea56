//! One structured log line per request, and the counters behind the status line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Request counters, shared with whoever reports them (systemd status, metrics).
#[derive(Debug, Default)]
pub struct RequestStats {
    pub total: AtomicU64,
    pub in_flight: AtomicU64,
}

pub async fn log_request(
    State(stats): State<Arc<RequestStats>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    stats.total.fetch_add(1, Ordering::Relaxed);
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    tracing::info!(
        target: "panda::request",
        %method,
        path,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    response
}
