//! The web tier's routes: upstream's legacy dispatcher under `/server/panda/<method>` and the
//! JSON API under `/api/v1/<module>/<function>`, on one router.
//!
//! Handlers are thin: they decode, check the caller's identity, call the store and encode.
//! Anything not routed is 404; a legacy or API method we do not serve is 403
//! `ERROR : method X is forbidden`, as upstream answers for methods outside its allow-list.

pub mod identity;
mod legacy;
mod request_log;
mod v1;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use panda_store::Store;

pub use identity::{Identity, IdentityPolicy};
pub use request_log::RequestStats;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub identity_policy: Arc<IdentityPolicy>,
    pub stats: Arc<RequestStats>,
}

/// The complete router of the web tier.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/server/panda/{method}", any(legacy::dispatch))
        .route("/api/{version}/{module}/{function}", any(v1::dispatch))
        .fallback(not_found)
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
