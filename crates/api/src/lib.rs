//! The web tier's routes: upstream's legacy dispatcher under `/server/panda/<method>` and the
//! JSON API under `/api/v1/<module>/<function>`, on one router.
//!
//! Handlers are thin: they decode, check the caller's identity, call the store and encode.
//! Anything not routed is 404; a legacy or API method we do not serve is 403
//! `ERROR : method X is forbidden`, as upstream answers for methods outside its allow-list.

mod body;
mod der;
#[doc(hidden)]
pub mod hot;
pub mod identity;
mod legacy;
pub mod oidc;
mod request_log;
mod static_files;
mod v1;
pub mod x509;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use panda_service::JobService;

pub use identity::IdentityPolicy;
pub use identity::{BanList, ClientCertificate};
pub use oidc::OidcVerifier;
pub use panda_core::identity::Identity;
pub use request_log::{AccessLog, RequestStats, RouteStats, LATENCY_BUCKETS};
pub use x509::X509Verifier;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub service: JobService,
    pub identity_policy: Arc<IdentityPolicy>,
    pub stats: Arc<RequestStats>,
    pub limits: Arc<Limits>,
    pub files: Arc<StaticDirs>,
    /// Banned users, cached.
    pub bans: Arc<identity::BanList>,
}

/// Bounds on what a request may carry.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted, before and after decompression; larger is 413.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 128 * 1024 * 1024,
        }
    }
}

/// Directories served as upstream's httpd aliases serve them.
#[derive(Clone, Debug)]
pub struct StaticDirs {
    /// `/cache/` (`cache_dir`).
    pub cache: PathBuf,
    /// `/trf/` (transformation scripts).
    pub trf: PathBuf,
}

/// The complete router of the web tier.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/server/panda/{method}", any(legacy::dispatch))
        .route("/api/{version}/{module}/{function}", any(v1::dispatch))
        .route("/cache/schedconfig/{file}", get(static_files::queue_data))
        .nest_service("/cache", static_files::directory(&state.files.cache))
        .nest_service("/trf", static_files::directory(&state.files.trf))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn(static_files::cache_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            identity::resolve,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.stats.clone(),
            request_log::log_request,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Upstream's answer for a method outside the allow-list.
pub(crate) fn forbidden_method(method: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        format!("ERROR : method {method} is forbidden"),
    )
        .into_response()
}
