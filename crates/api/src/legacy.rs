//! The legacy dispatcher, `/server/panda/<method>`, as pilot3 calls it (upstream tag 0.8.1).
//! Methods not implemented yet answer 403 like methods outside upstream's allow-list.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::forbidden_method;

pub async fn dispatch(Path(method): Path<String>) -> Response {
    match method.as_str() {
        "isAlive" => is_alive(),
        other => forbidden_method(other),
    }
}

/// Upstream's health answer: the urlencoded pair `alive=yes`.
fn is_alive() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "alive=yes",
    )
        .into_response()
}
