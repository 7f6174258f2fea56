//! Static paths as upstream's httpd serves them: `/cache/` from `cache_dir`, `/trf/` from the
//! transformation directory, and each queue's pilot data under `/cache/schedconfig/`.
//!
//! Files are served by tower-http's `ServeDir`, which sets content types and lengths and
//! refuses paths that climb out of the directory. A symbolic link inside the directory is
//! served only if it resolves to a file inside the same directory ([`confine`]): a link to
//! `/etc/passwd` planted in the cache is 404. A name starting with a dot is never served
//! (uploads in progress are such names). Queue data comes from the database, so every node
//! serves the same.

use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use tower_http::services::ServeDir;

use crate::AppState;

pub fn directory(dir: &Path) -> ServeDir {
    ServeDir::new(dir).append_index_html_on_directories(false)
}

/// A strong entity tag of an answer's bytes: the same on every node that answers the same, so
/// a cache in front of several nodes can revalidate with any of them.
fn entity_tag(body: &[u8]) -> String {
    let digest = openssl::sha::sha256(body);
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `/cache/schedconfig/<QUEUE>.all.json` and `<QUEUE>.pilot.json`: the queue's JSON as the
/// pilot downloads it (`--queuedata-url`), with an ETag (`If-None-Match` answers 304). Other
/// names fall through to `cache_dir`.
pub async fn queue_data(
    State(state): State<AppState>,
    UrlPath(file): UrlPath<String>,
    headers: header::HeaderMap,
) -> Response {
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
    match state.service.queue_json(queue).await {
        Ok(Some(json)) => {
            let tag = entity_tag(json.as_bytes());
            let unchanged = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
            match unchanged {
                true => (StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response(),
                false => (
                    [
                        (header::CONTENT_TYPE, "application/json".to_string()),
                        (header::ETAG, tag),
                    ],
                    json,
                )
                    .into_response(),
            }
        }
        Ok(None) => (StatusCode::NOT_FOUND, format!("unknown queue {queue}")).into_response(),
        // The detail (host, user, driver text) is for the log, not for the client.
        Err(e) => {
            tracing::error!(target: "panda::api", error = %e, queue, "queue data unavailable");
            let status = match e.is_unavailable() {
                true => StatusCode::SERVICE_UNAVAILABLE,
                false => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, "queue data unavailable").into_response()
        }
    }
}

/// The largest `<vo>_auth_config.json` served: a few keys, never more than this.
const MAX_AUTH_CONFIG_BYTES: u64 = 64 * 1024;

/// Whether `file` is a VO's client configuration: `<vo>_auth_config.json`, the VO (and
/// optional group) a plain name, never a path.
fn is_auth_config_name(file: &str) -> bool {
    file.strip_suffix("_auth_config.json").is_some_and(|vo| {
        !vo.is_empty()
            && !vo.starts_with('.')
            && vo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    })
}

/// `GET /auth/<vo>_auth_config.json`: the VO's OIDC client configuration from `auth_config`,
/// as upstream's httpd alias serves it, for anyone (panda-client fetches it before it has a
/// token). Only files of that name, at most [`MAX_AUTH_CONFIG_BYTES`]; anything else is 404.
pub async fn auth_config(
    State(state): State<AppState>,
    UrlPath(file): UrlPath<String>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "not found").into_response();
    let Some(dir) = state
        .files
        .auth
        .as_ref()
        .filter(|_| is_auth_config_name(&file))
    else {
        return not_found();
    };
    let path = dir.join(&file);
    let small = tokio::fs::metadata(&path)
        .await
        .is_ok_and(|m| m.is_file() && m.len() <= MAX_AUTH_CONFIG_BYTES);
    if !small {
        return not_found();
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(_) => not_found(),
    }
}

/// Middleware: a `/cache/` or `/trf/` path whose file, symbolic links resolved, lies outside
/// its directory is 404 before `ServeDir` opens it.
pub async fn confine(
    State(dirs): State<std::sync::Arc<crate::StaticDirs>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let (root, rest) = if let Some(rest) = path.strip_prefix("/cache/") {
        (&dirs.cache, rest)
    } else if let Some(rest) = path.strip_prefix("/trf/") {
        (&dirs.trf, rest)
    } else {
        return next.run(request).await;
    };
    let inside = match (percent_decode(rest), std::fs::canonicalize(root)) {
        (Some(relative), _) if relative.split('/').any(|part| part.starts_with('.')) => false,
        (Some(relative), Ok(root)) => {
            match std::fs::canonicalize(root.join(relative.trim_start_matches('/'))) {
                Ok(file) => file.starts_with(&root),
                // Missing: ServeDir (or the queue-data handler) answers 404 itself.
                Err(_) => true,
            }
        }
        _ => false,
    };
    if inside {
        next.run(request).await
    } else {
        tracing::warn!(target: "panda::limits", path, "static path leads out of its directory");
        (StatusCode::NOT_FOUND, "not found").into_response()
    }
}

/// `%xx` decoding of a URL path; `None` when it is not UTF-8 or holds a NUL.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// How long caches (the squid on port 25085) may keep `/cache/` and `/trf/` answers.
pub const CACHE_MAX_AGE_SECONDS: u32 = 300;

/// Middleware: successful `/cache/` and `/trf/` answers (and their 304s) may be kept for a
/// while by shared caches. None of them depends on a request header, so there is no `Vary`;
/// files carry `Last-Modified` (ServeDir), queue data an `ETag`.
pub async fn cache_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let cacheable = path.starts_with("/cache/") || path.starts_with("/trf/");
    let mut response = next.run(request).await;
    if cacheable && matches!(response.status(), StatusCode::OK | StatusCode::NOT_MODIFIED) {
        if let Ok(value) =
            header::HeaderValue::from_str(&format!("public, max-age={CACHE_MAX_AGE_SECONDS}"))
        {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entity_tag_follows_the_bytes_alone() {
        let tag = entity_tag(b"{\"a\": 1}");
        assert_eq!(tag, entity_tag(b"{\"a\": 1}"));
        assert_ne!(tag, entity_tag(b"{\"a\": 2}"));
        assert!(
            tag.starts_with('"') && tag.ends_with('"') && tag.len() == 26,
            "{tag}"
        );
    }

    #[test]
    fn only_plain_vo_names_are_auth_config_files() {
        assert!(is_auth_config_name("atlas_auth_config.json"));
        assert!(is_auth_config_name("atlas.production_auth_config.json"));
        for bad in [
            "_auth_config.json",
            "../atlas_auth_config.json",
            ".hidden_auth_config.json",
            "atlas/x_auth_config.json",
            "atlas_jwks.json",
        ] {
            assert!(!is_auth_config_name(bad), "{bad}");
        }
    }
}
