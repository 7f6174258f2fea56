//! Around every request: one access-log line, one structured log line, and the
//! counters behind the systemd status line and `/metrics`.
//!
//! "Workers", as in Apache's status line, are request slots: at most `max_workers` requests are
//! handled at once, the rest wait for a slot. A handler takes its slot ([`RequestStats::worker`])
//! once the request's body has been read, so a slow sender holds a connection, not a worker.
//! Busy = slots taken, Idle = free slots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use panda_core::identity::Identity;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Where access-log lines go (a file reopened on SIGHUP, in the server).
pub trait AccessLog: Send + Sync {
    fn write_line(&self, line: &str);
}

/// Latency buckets of the request histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Per-route request counts and latency histogram.
#[derive(Debug, Default, Clone)]
pub struct RouteStats {
    /// By (method, status).
    pub counts: HashMap<(String, u16), u64>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`].
    pub buckets: [u64; 12],
    pub count: u64,
    pub sum_seconds: f64,
}

/// Counters shared with the status line and the metrics endpoint.
pub struct RequestStats {
    pub total: AtomicU64,
    pub in_flight: AtomicU64,
    pub bytes: AtomicU64,
    pub max_workers: usize,
    workers: Semaphore,
    routes: Mutex<HashMap<String, RouteStats>>,
    access: Option<Arc<dyn AccessLog>>,
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats::new(512, None)
    }
}

impl RequestStats {
    pub fn new(max_workers: usize, access: Option<Arc<dyn AccessLog>>) -> RequestStats {
        let max_workers = max_workers.max(1);
        RequestStats {
            total: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_workers,
            workers: Semaphore::new(max_workers),
            routes: Mutex::new(HashMap::new()),
            access,
        }
    }

    /// A request worker, held while a request is handled; taken only once its body is read.
    pub async fn worker(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.workers.acquire().await.ok()
    }

    /// Workers handling a request now.
    pub fn busy_workers(&self) -> u64 {
        self.max_workers
            .saturating_sub(self.workers.available_permits()) as u64
    }

    /// A copy of the per-route statistics.
    pub fn routes(&self) -> HashMap<String, RouteStats> {
        self.routes.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn record(&self, route: String, method: &str, status: u16, seconds: f64) {
        let Ok(mut routes) = self.routes.lock() else {
            return;
        };
        let stats = routes.entry(route).or_default();
        *stats
            .counts
            .entry((method.to_string(), status))
            .or_default() += 1;
        for (slot, bound) in stats.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *slot += 1;
            }
        }
        stats.count += 1;
        stats.sum_seconds += seconds;
    }
}

/// A short, stable, non-reversible tag for a DN (FNV-1a), so logs can follow a caller without
/// holding personal data.
pub fn identity_tag(identity: Option<&Identity>) -> String {
    let Some(dn) = identity.and_then(|i| i.dn.as_deref()) else {
        return "-".into();
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dn.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

/// The metrics label for a request, from a closed set so that no client can grow `/metrics`:
/// a served legacy method or API function by its own name, spelled exactly as declared;
/// `/cache` and `/trf` for static files; `other` for everything else (unknown names, other
/// spellings, unmatched paths).
fn route_label(path: &str) -> String {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["server", "panda", method] if crate::legacy::is_served(method) => {
            format!("/server/panda/{method}")
        }
        ["api", "v1" | "latest", module, function]
            if crate::v1::endpoint(module, function).is_some() =>
        {
            format!("/api/v1/{module}/{function}")
        }
        ["cache", ..] => "/cache".into(),
        ["trf", ..] => "/trf".into(),
        _ => "other".into(),
    }
}

/// The HTTP method as a label: the standard ones, or `other`.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The longest request target written to the access log, in bytes.
const MAX_LOGGED_TARGET: usize = 2048;

fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

pub async fn log_request(
    State(stats): State<Arc<RequestStats>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let version = format!("{:?}", request.version());
    // A query of thousands of IDs is kept to its start in the access log.
    let target = clip(target, MAX_LOGGED_TARGET);
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_else(|| "-".into());
    // The request's number in this process: every line logged while it is handled carries it
    // (the `request` span), and so does its request-log line.
    let id = stats.total.fetch_add(1, Ordering::Relaxed) + 1;
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = next
        .run(request)
        .instrument(tracing::info_span!("request", id))
        .await;
    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    // A streamed body (a file under /cache/) has no exact size hint; its Content-Length
    // says what is being served.
    let bytes = response.body().size_hint().exact().unwrap_or_else(|| {
        response
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    stats.record(
        route_label(&path),
        method_label(&method),
        status,
        elapsed.as_secs_f64(),
    );
    let who = identity_tag(
        response
            .extensions()
            .get::<Arc<Identity>>()
            .map(Arc::as_ref),
    );
    tracing::info!(
        target: "panda::request",
        id,
        %method,
        path,
        status,
        bytes,
        duration_ms = panda_core::time::millis(elapsed),
        identity = who,
    );
    if let Some(access) = &stats.access {
        let time = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S %z");
        let size = if bytes == 0 {
            "-".to_string()
        } else {
            bytes.to_string()
        };
        access.write_line(&format!(
            "[{time}] {peer} \"{method} {target} {version}\" {status} {size} {}",
            elapsed.as_micros()
        ));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_tags_are_stable_and_hide_the_dn() {
        let id = Identity::local_operator();
        let tag = identity_tag(Some(&id));
        assert_eq!(tag, identity_tag(Some(&id)));
        assert_eq!(tag.len(), 12);
        assert!(!tag.contains("local"));
        assert_eq!(identity_tag(None), "-");
    }

    #[test]
    fn route_labels_come_from_a_closed_set() {
        assert_eq!(route_label("/server/panda/getJob"), "/server/panda/getJob");
        assert_eq!(route_label("/server/panda/get%53tatus"), "other");
        assert_eq!(route_label("/server/panda/x1"), "other");
        assert_eq!(
            route_label("/api/latest/pilot/acquire_jobs"),
            "/api/v1/pilot/acquire_jobs"
        );
        assert_eq!(route_label("/api/v1/pilot/nothing"), "other");
        assert_eq!(route_label("/cache/a/b.tgz"), "/cache");
        assert_eq!(route_label("/random"), "other");
        assert_eq!(
            method_label(&axum::http::Method::from_bytes(b"FOO").expect("m")),
            "other"
        );
    }
}
