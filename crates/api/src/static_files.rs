//! Static paths as upstream's httpd serves them: `/cache/` from `cache_dir`, `/trf/` from the
//! transformation directory, and each queue's pilot data under `/cache/schedconfig/`.
//!
//! Files are served by tower-http's `ServeDir`, which sets content types and lengths and
//! refuses paths that climb out of the directory. Queue data comes from the database, so every
//! node serves the same.

use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::services::ServeDir;

use crate::AppState;

pub fn directory(dir: &Path) -> ServeDir {
    ServeDir::new(dir).append_index_html_on_directories(false)
}

/// `/cache/schedconfig/<QUEUE>.all.json` and `<QUEUE>.pilot.json`: the queue's JSON as the
/// pilot downloads it (`--queuedata-url`). Other names fall through to `cache_dir`.
pub async fn queue_data(State(state): State<AppState>, UrlPath(file): UrlPath<String>) -> Response {
    let queue = file
        .strip_suffix(".all.json")
        .or_else(|| file.strip_suffix(".pilot.json"));
    let Some(queue) = queue else {
        let path = state.files.cache.join("schedconfig").join(&file);
        return match file.contains('/') || file.starts_with('.') {
            true => (StatusCode::NOT_FOUND, "not found").into_response(),
            false => match tokio::fs::read(&path).await {
                Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
                Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
            },
        };
    };
    match state.service.store().queue_json(queue).await {
        Ok(Some(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("unknown queue {queue}")).into_response(),
        Err(e) if e.is_unavailable() => {
            (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// How long caches (the squid on port 25085) may keep `/cache/` answers.
pub const CACHE_MAX_AGE_SECONDS: u32 = 300;

/// Middleware: successful `/cache/` answers may be cached for a while by shared caches.
pub async fn cache_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let cacheable = request.uri().path().starts_with("/cache/");
    let mut response = next.run(request).await;
    if cacheable && response.status() == StatusCode::OK {
        if let Ok(value) =
            header::HeaderValue::from_str(&format!("public, max-age={CACHE_MAX_AGE_SECONDS}"))
        {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    response
}
