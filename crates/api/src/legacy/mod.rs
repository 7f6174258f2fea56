//! The legacy dispatcher, `/server/panda/<method>`, as pilot3 calls it (upstream tag 0.8.1):
//! getJob, updateJob, updateJobsInBulk, getStatus, checkJobStatus, getResourceTypes,
//! updateWorkerPilotStatus, isAlive, setDebugMode, and the credential methods (getProxy,
//! get_access_token, get_token_key, getKeyPair, set_user_secret, get_user_secrets), and the
//! event-service methods (getEventRanges, updateEventRanges, updateEventRange,
//! checkEventsAvailability, get_events_status). Other methods answer 403 like methods
//! outside upstream's allow-list.
//!
//! Every method accepts GET or POST with query, form, multipart or (gzipped) JSON
//! parameters. Answers are upstream's `StatusCode=...` responses, JSON when asked for.

mod creds;
mod errors;
pub(crate) mod events;
pub(crate) mod pilot;
mod protocol;

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use panda_core::identity::Identity;

use crate::body::{legacy_params, read_body, LegacyParams};
use crate::{forbidden_method, AppState};
pub(crate) use errors::LegacyError;
pub use protocol::{accepts_json, Protocol};

/// Who may call a legacy method, as the dispatcher decides it before the body is read (a
/// caller the method refuses may send no more than an anonymous caller) and hands it to the
/// handler in [`LegacyCall::authorized`]. Upstream answers a caller without the role in each
/// method's own way (`StatusCode=60` from updateJob, a plain string from
/// updateWorkerPilotStatus), so the handler writes the refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LegacyAccess {
    /// Anyone (upstream only logs a missing role for these).
    Open,
    /// The production role, a pilot FQAN or a `pilot_owners` DN (upstream's `_checkRole`).
    Dispatcher,
    /// The service decides from the request: getJob hands `user` jobs to any caller and
    /// everything else to dispatchers only.
    ByRequest,
    /// A verified certificate or token (upstream's check for `SSL_CLIENT_S_DN`); the service
    /// decides the rest (the credential methods, `setDebugMode`).
    Authenticated,
}

impl LegacyAccess {
    fn allows(self, identity: &Identity) -> bool {
        match self {
            LegacyAccess::Open | LegacyAccess::ByRequest => true,
            LegacyAccess::Dispatcher => identity.may_dispatch(),
            LegacyAccess::Authenticated => identity.is_authenticated() && identity.dn.is_some(),
        }
    }
}

/// What a legacy handler returns.
pub(crate) type LegacyResult = Result<Response, LegacyError>;
type Handled<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = LegacyResult> + Send + 'a>>;
/// A legacy method's handler.
type LegacyHandler = for<'a> fn(&'a AppState, &'a LegacyCall) -> Handled<'a>;

/// A handler from an `async fn(&AppState, &LegacyCall) -> LegacyResult`.
macro_rules! handler {
    ($f:path) => {{
        fn handle<'a>(state: &'a AppState, call: &'a LegacyCall) -> Handled<'a> {
            Box::pin($f(state, call))
        }
        handle as LegacyHandler
    }};
}

/// One method of the legacy dispatcher.
pub(crate) struct LegacyMethod {
    pub name: &'static str,
    pub access: LegacyAccess,
    /// `None` for isAlive, which reads no arguments and answers at once.
    handler: Option<LegacyHandler>,
}

/// The legacy methods served, with who may call them and what handles them; every other name
/// is 403.
pub(crate) const LEGACY_METHODS: &[LegacyMethod] = &[
    LegacyMethod {
        name: "isAlive",
        access: LegacyAccess::Open,
        handler: None,
    },
    LegacyMethod {
        name: "getJob",
        access: LegacyAccess::ByRequest,
        handler: Some(handler!(pilot::get_job)),
    },
    LegacyMethod {
        name: "updateJob",
        access: LegacyAccess::Dispatcher,
        handler: Some(handler!(pilot::update_job)),
    },
    LegacyMethod {
        name: "updateJobsInBulk",
        access: LegacyAccess::Dispatcher,
        handler: Some(handler!(pilot::update_jobs_in_bulk)),
    },
    LegacyMethod {
        name: "getStatus",
        access: LegacyAccess::Open,
        handler: Some(handler!(pilot::get_status)),
    },
    LegacyMethod {
        name: "checkJobStatus",
        access: LegacyAccess::Open,
        handler: Some(handler!(pilot::check_job_status)),
    },
    LegacyMethod {
        name: "getResourceTypes",
        access: LegacyAccess::Open,
        handler: Some(handler!(pilot::get_resource_types)),
    },
    LegacyMethod {
        name: "updateWorkerPilotStatus",
        access: LegacyAccess::Dispatcher,
        handler: Some(handler!(pilot::update_worker_pilot_status)),
    },
    LegacyMethod {
        name: "setDebugMode",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(creds::set_debug_mode)),
    },
    LegacyMethod {
        name: "getProxy",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(creds::get_proxy)),
    },
    LegacyMethod {
        name: "get_access_token",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(creds::get_access_token)),
    },
    LegacyMethod {
        name: "get_token_key",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(creds::get_token_key)),
    },
    LegacyMethod {
        name: "getKeyPair",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(creds::get_key_pair)),
    },
    LegacyMethod {
        name: "set_user_secret",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(creds::set_user_secret)),
    },
    LegacyMethod {
        name: "get_user_secrets",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(creds::get_user_secrets)),
    },
    LegacyMethod {
        name: "getEventRanges",
        access: LegacyAccess::Dispatcher,
        handler: Some(handler!(events::get_event_ranges)),
    },
    LegacyMethod {
        name: "updateEventRanges",
        access: LegacyAccess::Dispatcher,
        handler: Some(handler!(events::update_event_ranges)),
    },
    LegacyMethod {
        name: "updateEventRange",
        access: LegacyAccess::Dispatcher,
        handler: Some(handler!(events::update_event_range)),
    },
    LegacyMethod {
        name: "checkEventsAvailability",
        access: LegacyAccess::Dispatcher,
        handler: Some(handler!(events::check_events_availability)),
    },
    LegacyMethod {
        name: "get_events_status",
        access: LegacyAccess::Authenticated,
        handler: Some(handler!(events::get_events_status)),
    },
];

/// Whether `name` is a legacy method served here, spelled exactly.
pub(crate) fn is_served(name: &str) -> bool {
    LEGACY_METHODS.iter().any(|m| m.name == name)
}

/// What a legacy handler gets.
pub(crate) struct LegacyCall {
    pub params: LegacyParams,
    pub identity: Arc<Identity>,
    /// Whether the method's declared access admits this caller.
    pub authorized: bool,
    pub json: bool,
}

pub async fn dispatch(
    State(state): State<AppState>,
    Path(method): Path<String>,
    request: Request,
) -> Response {
    let served = LEGACY_METHODS.iter().find(|m| m.name == method);
    let Some((handler, access)) = served.and_then(|m| Some((m.handler?, m.access))) else {
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
    let authorized = access.allows(&identity);
    let limit = match authorized {
        false => state.limits.anonymous_max_body_bytes,
        true => state.limits.body_limit_for(&identity),
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
        authorized,
        json,
    };
    match handler(&state, &call).await {
        Ok(response) => response,
        // The one place a failed call is logged and answered, in the client's format.
        Err(error) => {
            error.log();
            error.into_response_as(call.json)
        }
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
