//! Around every request: a worker slot, one access-log line, one structured log line, and the
//! counters behind the systemd status line and `/metrics`.
//!
//! "Workers", as in Apache's status line, are request slots: at most `max_workers` requests are
//! handled at once, the rest wait for a slot. Busy = requests being handled, Idle = free slots.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use panda_core::identity::Identity;
use tokio::sync::Semaphore;

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

/// The metrics label for a request: the route template, with the method or function filled in
/// for served API calls (bounded: unknown methods are 403 and keep the template).
fn route_label(template: Option<&str>, path: &str, status: u16) -> String {
    match template {
        Some(t) if t.starts_with("/cache") => "/cache".into(),
        Some(t) if t.starts_with("/trf") => "/trf".into(),
        Some(t) if t.contains('{') && status != 403 && status != 404 && !t.contains('*') => {
            path.to_string()
        }
        Some(t) => t.to_string(),
        None => "unmatched".into(),
    }
}

pub async fn log_request(
    State(stats): State<Arc<RequestStats>>,
    request: Request,
    next: Next,
) -> Response {
    let _slot = stats.workers.acquire().await;
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let version = format!("{:?}", request.version());
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_else(|| "-".into());
    stats.total.fetch_add(1, Ordering::Relaxed);
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let response = next.run(request).await;
    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let bytes = response.body().size_hint().exact().unwrap_or(0);
    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    stats.record(
        route_label(template.as_deref(), &path, status),
        method.as_str(),
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
        %method,
        path,
        status,
        bytes,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
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
    fn route_labels_stay_bounded() {
        let legacy = Some("/server/panda/{method}");
        assert_eq!(
            route_label(legacy, "/server/panda/getJob", 200),
            "/server/panda/getJob"
        );
        assert_eq!(
            route_label(legacy, "/server/panda/x1", 403),
            "/server/panda/{method}"
        );
        assert_eq!(route_label(None, "/random", 404), "unmatched");
    }
}
