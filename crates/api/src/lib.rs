//! The web tier's routes: upstream's legacy dispatcher under `/server/panda/<method>` and the
//! JSON API under `/api/v1/<module>/<function>`, on one router.
//!
//! Handlers are thin: they decode, check the caller's identity, call the service
//! (`panda_service::JobService`, where every rule lives) and encode. This crate does not depend
//! on `panda-store`: no handler runs a statement.
//! Anything not routed is 404; a legacy or API method we do not serve is 403
//! `ERROR : method X is forbidden`, as upstream answers for methods outside its allow-list.

#[doc(hidden)]
pub mod body;
mod der;
pub mod health;
#[doc(hidden)]
pub mod hot;
pub mod identity;
mod job_dict;
mod legacy;
pub mod monitor;
pub mod oidc;
pub mod proxy_protocol;
mod python;
mod request_log;
mod static_files;
mod url;
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

pub use health::Health;
pub use identity::ClientCertificate;
pub use identity::IdentityPolicy;
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
    /// What `/health/ready` answers besides the database (draining).
    pub health: Arc<Health>,
    /// Who may see the monitor, and whether the web ports serve it.
    pub monitor: MonitorPlacement,
}

/// Where the monitor is served and to whom.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MonitorPlacement {
    /// Served on the web tier's own ports (HTTP and HTTPS), beside the APIs.
    pub on_web_ports: bool,
    pub access: monitor::MonitorAccess,
}

/// Bounds on what a request may carry and how long it may take to send it. Memory per
/// request is bounded by the body limit twice (the bytes as received and decompressed, never
/// larger than the limit) plus the parsed values, at most `max_json_values` of them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted, before and after decompression; larger is 413.
    pub max_body_bytes: usize,
    /// The same for a caller with no verified credential (local mode's operator counts as
    /// verified).
    pub anonymous_max_body_bytes: usize,
    /// Time for a body to arrive, extended by one second per `body_min_rate` bytes received.
    pub body_read_timeout: std::time::Duration,
    pub body_min_rate: u64,
    /// Values (scalars, arrays, objects) one JSON body may hold, and how deeply it may nest.
    pub max_json_values: usize,
    pub max_json_depth: usize,
}

/// IDs one call may name: upstream's 5,500 of `get_description`, for every call that takes a
/// list of IDs (legacy and `/api/v1`). More is refused with the limit named.
pub const MAX_IDS: usize = 5500;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 128 * 1024 * 1024,
            anonymous_max_body_bytes: 1024 * 1024,
            body_read_timeout: std::time::Duration::from_secs(20),
            body_min_rate: 500,
            max_json_values: 2_000_000,
            max_json_depth: 64,
        }
    }
}

impl Limits {
    /// The body limit for this caller.
    pub fn body_limit_for(&self, identity: &Identity) -> usize {
        if identity.is_authenticated() {
            self.max_body_bytes
        } else {
            self.anonymous_max_body_bytes.min(self.max_body_bytes)
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
    /// `/auth/`: the VOs' `<vo>_auth_config.json` (`auth_config`), which panda-client reads to
    /// start its OIDC device flow; `None` when tokens are off.
    pub auth: Option<PathBuf>,
}

/// The complete router of the web tier.
pub fn router(state: AppState) -> Router {
    let monitor = match state.monitor.on_web_ports {
        true => monitor::routes(),
        false => Router::new(),
    };
    let routes = monitor
        .route("/server/panda/{method}", any(legacy::dispatch))
        .route("/api/{version}/{module}/{function}", any(v1::dispatch))
        .route("/cache/schedconfig/{file}", get(static_files::queue_data))
        .route("/auth/{file}", get(static_files::auth_config))
        .route("/health/ready", get(health::ready))
        .nest_service("/cache", static_files::directory(&state.files.cache))
        .nest_service("/trf", static_files::directory(&state.files.trf))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(axum::middleware::from_fn(static_files::cache_headers))
        .layer(axum::middleware::from_fn_with_state(
            state.files.clone(),
            static_files::confine,
        ));
    with_identity_and_log(routes, state)
}

/// The monitor alone, for a listener of its own (`monitor_address`): the same identities
/// and request log as the web tier.
pub fn monitor_router(state: AppState) -> Router {
    with_identity_and_log(monitor::routes().fallback(not_found), state)
}

/// The outer layers every listener's router has: the caller's identity, resolved once, and
/// the request log around everything.
fn with_identity_and_log(routes: Router<AppState>, state: AppState) -> Router {
    routes
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
