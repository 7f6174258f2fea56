//! The legacy dispatcher, `/server/panda/<method>`, as pilot3 calls it (upstream tag 0.8.1):
//! getJob, updateJob, updateJobsInBulk, getStatus, checkJobStatus, getResourceTypes,
//! updateWorkerPilotStatus and isAlive. Other methods answer 403 like methods outside
//! upstream's allow-list.
//!
//! Every method accepts GET or POST with query, form, multipart or (gzipped) JSON
//! parameters. Answers are upstream's `StatusCode=...` responses, JSON when asked for.

pub(crate) mod pilot;
mod protocol;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use panda_core::identity::Identity;
use panda_service::ServiceError;

use crate::body::{legacy_params, read_body, LegacyParams};
use crate::{forbidden_method, AppState};
pub use protocol::{accepts_json, Protocol};

/// Who may call a legacy method. Upstream's dispatcher answers a caller without the role in
/// each method's own way (`StatusCode=60` from getJob and updateJob, a plain string from
/// updateWorkerPilotStatus), so the handlers apply [`LegacyAccess::Dispatcher`] themselves
/// through `Identity::may_dispatch`; this table is the declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LegacyAccess {
    /// Anyone (upstream only logs a missing role for these).
    Open,
    /// The production role, a pilot FQAN or a `pilot_owners` DN (upstream's `_checkRole`).
    Dispatcher,
}

/// The legacy methods served, with who may call them; every other name is 403.
pub(crate) const LEGACY_METHODS: &[(&str, LegacyAccess)] = &[
    ("isAlive", LegacyAccess::Open),
    ("getJob", LegacyAccess::Dispatcher),
    ("updateJob", LegacyAccess::Dispatcher),
    ("updateJobsInBulk", LegacyAccess::Dispatcher),
    ("getStatus", LegacyAccess::Open),
    ("checkJobStatus", LegacyAccess::Open),
    ("getResourceTypes", LegacyAccess::Open),
    ("updateWorkerPilotStatus", LegacyAccess::Dispatcher),
];

/// Whether `name` is a legacy method served here, spelled exactly.
pub(crate) fn is_served(name: &str) -> bool {
    LEGACY_METHODS.iter().any(|(served, _)| *served == name)
}

/// What a legacy handler gets.
pub(crate) struct LegacyCall {
    pub params: LegacyParams,
    pub identity: Arc<Identity>,
    pub json: bool,
}

pub async fn dispatch(
    State(state): State<AppState>,
    Path(method): Path<String>,
    request: Request,
) -> Response {
    let served = LEGACY_METHODS.iter().find(|(name, _)| *name == method);
    let Some(&(handler, access)) = served.filter(|(name, _)| *name != "isAlive") else {
        // isAlive takes no arguments, and a method not served takes none either: a body is
        // dropped unread, within an anonymous caller's bounds.
        crate::body::discard(
            request.into_body(),
            state.limits.anonymous_max_body_bytes,
            &state.limits,
        )
        .await;
        return match served {
            Some(_) => is_alive(),
            None => forbidden_method(&method),
        };
    };
    let identity = request
        .extensions()
        .get::<Arc<Identity>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Identity::anonymous()));
    let json = accepts_json(request.headers());
    let query = request.uri().query().map(str::to_string);
    // The caller is known before the body is read: one the method will refuse may send no
    // more than an anonymous caller.
    let limit = match (access, identity.may_dispatch()) {
        (LegacyAccess::Dispatcher, false) => state.limits.anonymous_max_body_bytes,
        _ => state.limits.body_limit_for(&identity),
    };
    let body = match read_body(request, limit, &state.limits).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let params = match legacy_params(query.as_deref(), body, &state.limits) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    // A worker only now that the request is whole: a slow sender holds none.
    let _worker = state.stats.worker().await;
    let call = LegacyCall {
        params,
        identity,
        json,
    };
    let result = match handler {
        "getJob" => pilot::get_job(&state, &call).await,
        "updateJob" => pilot::update_job(&state, &call).await,
        "updateJobsInBulk" => pilot::update_jobs_in_bulk(&state, &call).await,
        "getStatus" => pilot::get_status(&state, &call).await,
        "checkJobStatus" => pilot::check_job_status(&state, &call).await,
        "getResourceTypes" => pilot::get_resource_types(&state, &call).await,
        _ => pilot::update_worker_pilot_status(&state, &call).await,
    };
    result.unwrap_or_else(|e| e.into_response())
}

/// Upstream's health answer: the urlencoded pair `alive=yes`.
fn is_alive() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "alive=yes",
    )
        .into_response()
}

/// A failure of a legacy call that is not a `StatusCode` answer.
#[derive(Debug)]
pub(crate) enum LegacyError {
    /// The request is malformed: HTTP 400 naming the problem.
    BadRequest(String),
    /// The database is unreachable: HTTP 503.
    Unavailable(String),
    /// Anything else: StatusCode 30 (upstream's SC_Failed).
    Failed { message: String, json: bool },
}

impl LegacyError {
    pub fn from_service(error: ServiceError, json: bool) -> LegacyError {
        match error {
            ServiceError::BadRequest(m) => LegacyError::BadRequest(m),
            e if e.is_unavailable() => LegacyError::Unavailable(e.to_string()),
            e => {
                tracing::error!(target: "panda::legacy", error = %e, "dispatcher call failed");
                LegacyError::Failed {
                    message: e.to_string(),
                    json,
                }
            }
        }
    }
}

impl From<ServiceError> for LegacyError {
    fn from(error: ServiceError) -> Self {
        LegacyError::from_service(error, false)
    }
}

impl IntoResponse for LegacyError {
    fn into_response(self) -> Response {
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
            LegacyError::Unavailable(m) => {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("ERROR : {m}"))
            }
            LegacyError::Failed { message, json } => {
                Protocol::with_dialog(protocol::SC_FAILED, &message, json).into_response(json)
            }
        }
    }
}
