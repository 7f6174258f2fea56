//! `/metrics` in Prometheus' text format, on its own listen address (`metrics_address`,
//! default 127.0.0.1:25090), away from the client-facing ports.
//!
//! Families: HTTP requests by route, method and status, and their latency histogram per route;
//! requests in flight; jobs by table and status (counted at scrape time); database pool use;
//! per daemon task the last start, duration and outcome.

use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use panda_api::{RequestStats, LATENCY_BUCKETS};
use panda_daemon::TaskStats;
use panda_store::Store;
use tokio::net::TcpListener;

#[derive(Clone)]
pub struct MetricsState {
    pub requests: Arc<RequestStats>,
    pub store: Store,
    pub tasks: Arc<TaskStats>,
}

pub async fn serve(
    listener: TcpListener,
    state: MetricsState,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!("metrics listener failed: {e}");
    }
}

/// Escapes a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

async fn metrics(State(state): State<MetricsState>) -> Response {
    let mut out = String::with_capacity(8192);
    render_requests(&mut out, &state.requests);
    family(&mut out, "panda_jobs", "gauge", "Jobs by table and status.");
    match state.store.job_counts().await {
        Ok(counts) => {
            for (table, status, n) in counts {
                let _ = writeln!(
                    out,
                    "panda_jobs{{table=\"{}\",status=\"{}\"}} {n}",
                    table.name(),
                    label(&status)
                );
            }
        }
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("database unavailable: {e}\n"),
            )
                .into_response()
        }
    }
    let (open, idle, max) = state.store.pool_stats();
    family(
        &mut out,
        "panda_db_connections",
        "gauge",
        "Database pool connections by state.",
    );
    let _ = writeln!(out, "panda_db_connections{{state=\"idle\"}} {idle}");
    let _ = writeln!(
        out,
        "panda_db_connections{{state=\"in_use\"}} {}",
        open.saturating_sub(idle)
    );
    family(
        &mut out,
        "panda_db_connections_max",
        "gauge",
        "Database pool size limit.",
    );
    let _ = writeln!(out, "panda_db_connections_max {max}");
    render_tasks(&mut out, &state.tasks);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

fn render_requests(out: &mut String, stats: &RequestStats) {
    let routes = stats.routes();
    let mut names: Vec<&String> = routes.keys().collect();
    names.sort();
    family(
        out,
        "panda_http_requests_total",
        "counter",
        "HTTP requests by route, method and status.",
    );
    for route in &names {
        let mut counts: Vec<_> = routes[*route].counts.iter().collect();
        counts.sort();
        for ((method, status), n) in counts {
            let _ = writeln!(
                out,
                "panda_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                label(route)
            );
        }
    }
    family(
        out,
        "panda_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by route.",
    );
    for route in &names {
        let r = &routes[*route];
        for (bound, n) in LATENCY_BUCKETS.iter().zip(r.buckets) {
            let _ = writeln!(
                out,
                "panda_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{bound}\"}} {n}",
                label(route)
            );
        }
        let _ = writeln!(
            out,
            "panda_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}",
            label(route),
            r.count
        );
        let _ = writeln!(
            out,
            "panda_http_request_duration_seconds_sum{{route=\"{}\"}} {}",
            label(route),
            r.sum_seconds
        );
        let _ = writeln!(
            out,
            "panda_http_request_duration_seconds_count{{route=\"{}\"}} {}",
            label(route),
            r.count
        );
    }
    family(
        out,
        "panda_http_requests_in_flight",
        "gauge",
        "Requests being handled now (busy workers).",
    );
    let _ = writeln!(
        out,
        "panda_http_requests_in_flight {}",
        stats.in_flight.load(Ordering::Relaxed)
    );
    family(
        out,
        "panda_http_response_bytes_total",
        "counter",
        "Response body bytes served.",
    );
    let _ = writeln!(
        out,
        "panda_http_response_bytes_total {}",
        stats.bytes.load(Ordering::Relaxed)
    );
}

fn render_tasks(out: &mut String, tasks: &TaskStats) {
    let runs = tasks.snapshot();
    family(
        out,
        "panda_daemon_task_last_start_timestamp_seconds",
        "gauge",
        "Start of the last run of each daemon task.",
    );
    for (task, run) in &runs {
        let start = run
            .started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(
            out,
            "panda_daemon_task_last_start_timestamp_seconds{{task=\"{}\"}} {start}",
            label(task)
        );
    }
    family(
        out,
        "panda_daemon_task_last_duration_seconds",
        "gauge",
        "Duration of the last run of each daemon task.",
    );
    for (task, run) in &runs {
        let _ = writeln!(
            out,
            "panda_daemon_task_last_duration_seconds{{task=\"{}\"}} {}",
            label(task),
            run.duration.as_secs_f64()
        );
    }
    family(
        out,
        "panda_daemon_task_last_outcome",
        "gauge",
        "Outcome of the last run of each daemon task (1 for the outcome it had).",
    );
    for (task, run) in &runs {
        let _ = writeln!(
            out,
            "panda_daemon_task_last_outcome{{task=\"{}\",outcome=\"{}\"}} 1",
            label(task),
            run.outcome
        );
    }
}
