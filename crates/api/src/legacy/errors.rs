//! How a legacy call fails when it cannot answer with a `StatusCode`, and what the client sees.
//!
//! A malformed request is HTTP 400 naming the problem (the client's own input, safe to echo).
//! A database that cannot be reached is HTTP 503, and any other failure upstream's
//! `StatusCode=30` (SC_Failed) with a dialog; both say only what failed, never the database's
//! own words (host, user, driver text). The detail is logged once, at the dispatcher, inside
//! the request's span (its `id` is in the request log line too). The answer takes the format
//! the client asked for: JSON with `Accept: application/json`, urlencoded otherwise.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use panda_service::ServiceError;

use super::protocol::{self, Protocol};

/// A failure of a legacy call that is not a `StatusCode` answer.
#[derive(Debug)]
pub(crate) enum LegacyError {
    /// The request is malformed: HTTP 400 naming the problem.
    BadRequest(String),
    /// The database is unreachable: HTTP 503. The detail is for the log.
    Unavailable { detail: String },
    /// Anything else: StatusCode 30. `dialog` is what the client reads; `detail`, when set,
    /// what the log gets.
    Failed {
        dialog: String,
        detail: Option<String>,
    },
}

/// What a client reads when the database cannot be reached.
const UNAVAILABLE: &str = "ERROR : the PanDA server's database is unavailable; retry later";
/// What a client reads when the database failed in another way.
const DATABASE_ERROR: &str = "database error in the PanDA server";

impl From<ServiceError> for LegacyError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::BadRequest(m) => LegacyError::BadRequest(m),
            // The service's own words about a rule: safe to show.
            ServiceError::Forbidden(m) => LegacyError::Failed {
                dialog: m,
                detail: None,
            },
            ServiceError::Store(e) if e.is_unavailable() => LegacyError::Unavailable {
                detail: e.to_string(),
            },
            ServiceError::Store(e) => LegacyError::Failed {
                dialog: DATABASE_ERROR.into(),
                detail: Some(e.to_string()),
            },
        }
    }
}

impl LegacyError {
    /// Logs what the client is not told.
    pub fn log(&self) {
        match self {
            LegacyError::BadRequest(m) => {
                tracing::debug!(target: "panda::legacy", reason = %m, "bad request")
            }
            LegacyError::Unavailable { detail } => {
                tracing::error!(target: "panda::legacy", error = %detail, "database unavailable")
            }
            LegacyError::Failed {
                detail: Some(detail),
                ..
            } => {
                tracing::error!(target: "panda::legacy", error = %detail, "dispatcher call failed")
            }
            LegacyError::Failed { dialog, .. } => {
                tracing::info!(target: "panda::legacy", dialog = %dialog, "call refused")
            }
        }
    }

    /// The answer, JSON when the client asked for it.
    pub fn into_response_as(self, json: bool) -> Response {
        let text = |status: StatusCode, message: String| {
            (
                status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                message,
            )
                .into_response()
        };
        match self {
            LegacyError::BadRequest(m) => text(StatusCode::BAD_REQUEST, format!("ERROR : {m}")),
            LegacyError::Unavailable { .. } => {
                text(StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE.into())
            }
            LegacyError::Failed { dialog, .. } => {
                Protocol::with_dialog(protocol::SC_FAILED, &dialog, json).into_response(json)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panda_service::StoreError;

    #[test]
    fn the_database_s_words_never_reach_the_client() {
        let secret = "connection to postgres@db01.example.org:5432 refused";
        let unavailable =
            LegacyError::from(ServiceError::Store(StoreError::Unavailable(secret.into())));
        assert!(
            matches!(&unavailable, LegacyError::Unavailable { detail } if detail.contains(secret))
        );
        let failed = LegacyError::from(ServiceError::Store(StoreError::JobNotFound(7)));
        match &failed {
            LegacyError::Failed { dialog, detail } => {
                assert_eq!(dialog, DATABASE_ERROR);
                assert!(detail.is_some());
            }
            other => panic!("{other:?}"),
        }
    }
}
