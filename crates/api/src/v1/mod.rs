//! The JSON API, `/api/<version>/<module>/<function>` (`v1`, or `latest` for `v1`).
//!
//! Every function answers upstream's envelope `{"success": bool, "message": str, "data": ...}`,
//! with HTTP 200 even when `success` is false; an unknown function is 403 as upstream. GET
//! arguments come from the query string, POST arguments from a JSON object body (gzip
//! accepted with or without `Content-Encoding`).

mod job;
mod pilot;
mod system;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use panda_core::identity::Identity;
use panda_service::ServiceError;
use serde::Serialize;
use serde_json::Value as Json;

use crate::body::read_body;
use crate::forbidden_method;
use crate::identity::ClientAddr;
use crate::AppState;

/// What a v1 handler gets.
pub(crate) struct Call {
    pub method: Method,
    pub identity: Arc<Identity>,
    pub peer: Option<SocketAddr>,
    pub query: BTreeMap<String, String>,
    /// Arguments: the query's, overridden by a JSON body's.
    pub args: serde_json::Map<String, Json>,
}

/// The response envelope.
#[derive(Serialize)]
pub(crate) struct Envelope {
    pub success: bool,
    pub message: String,
    pub data: Json,
}

impl Envelope {
    pub fn ok(data: Json) -> Envelope {
        Envelope {
            success: true,
            message: String::new(),
            data,
        }
    }

    pub fn fail(message: impl Into<String>) -> Envelope {
        Envelope {
            success: false,
            message: message.into(),
            data: Json::Null,
        }
    }

    pub fn from_service(error: ServiceError) -> Envelope {
        match error {
            ServiceError::BadRequest(m) | ServiceError::Forbidden(m) => Envelope::fail(m),
            e => {
                tracing::error!(target: "panda::api", error = %e, "call failed");
                Envelope::fail("database error in the PanDA server")
            }
        }
    }
}

impl IntoResponse for Envelope {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self).unwrap_or_else(|_| {
            r#"{"success":false,"message":"encoding error","data":null}"#.into()
        });
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

/// Functions that only take POST.
const POST_ONLY: &[(&str, &str)] = &[
    ("job", "submit"),
    ("job", "kill"),
    ("job", "set_command"),
    ("job", "set_debug_mode"),
    ("pilot", "acquire_jobs"),
    ("pilot", "update_job"),
    ("pilot", "update_jobs_bulk"),
];

/// The functions served, by module.
const SERVED: &[(&str, &str)] = &[
    ("system", "is_alive"),
    ("system", "get_attributes"),
    ("job", "submit"),
    ("job", "get_description"),
    ("job", "get_description_incl_archive"),
    ("job", "kill"),
    ("job", "set_command"),
    ("job", "set_debug_mode"),
    ("pilot", "acquire_jobs"),
    ("pilot", "update_job"),
    ("pilot", "update_jobs_bulk"),
    ("metaconfig", "get_resource_types"),
];

pub async fn dispatch(
    State(state): State<AppState>,
    Path((version, module, function)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    if version != "v1" && version != "latest" {
        return forbidden_method(&function);
    }
    if !SERVED.contains(&(module.as_str(), function.as_str())) {
        return forbidden_method(&function);
    }
    let method = request.method().clone();
    if POST_ONLY.contains(&(module.as_str(), function.as_str())) && method != Method::POST {
        return Envelope::fail(format!("expecting POST, received {method}")).into_response();
    }
    let identity = request
        .extensions()
        .get::<Arc<Identity>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Identity::anonymous()));
    let peer = request.extensions().get::<ClientAddr>().and_then(|c| c.0);
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let mut args: serde_json::Map<String, Json> = query
        .iter()
        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
        .collect();
    if method == Method::POST || method == Method::PUT {
        let body = match read_body(request, state.limits.max_body_bytes).await {
            Ok(body) => body,
            Err(e) => return e.into_response(),
        };
        if !body.bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Json>(&body.bytes) {
                Ok(Json::Object(map)) => args.extend(map),
                Ok(_) => {
                    return Envelope::fail("Argument error: the body must be a JSON object")
                        .into_response()
                }
                Err(e) => {
                    return Envelope::fail(format!("received invalid JSON: {e}")).into_response()
                }
            }
        }
    }
    let call = Call {
        method,
        identity,
        peer,
        query,
        args,
    };
    match (module.as_str(), function.as_str()) {
        ("system", "is_alive") => system::is_alive(),
        ("system", "get_attributes") => system::get_attributes(&call),
        ("job", "get_description") => job::get_description(&state, &call, false).await,
        ("job", "get_description_incl_archive") => job::get_description(&state, &call, true).await,
        ("job", "kill") => job::kill(&state, &call).await,
        ("job", "set_command") => job::set_command(&state, &call).await,
        ("job", "set_debug_mode") => job::set_debug_mode(&state, &call).await,
        ("pilot", "acquire_jobs") => pilot::acquire_jobs(&state, &call).await,
        ("pilot", "update_job") => pilot::update_job(&state, &call).await,
        ("pilot", "update_jobs_bulk") => pilot::update_jobs_bulk(&state, &call).await,
        ("metaconfig", "get_resource_types") => resource_types(&state).await,
        _ => job::submit(&state, &call).await,
    }
    .into_response()
}

/// `metaconfig/get_resource_types`: the `resource_types` rows.
async fn resource_types(state: &AppState) -> Envelope {
    match state.service.store().resource_types().await {
        Ok(types) => Envelope::ok(Json::Array(
            types
                .into_iter()
                .map(|t| {
                    serde_json::json!({"resource_name": t.name, "mincore": t.min_core, "maxcore": t.max_core,
                        "minrampercore": t.min_ram_per_core, "maxrampercore": t.max_ram_per_core})
                })
                .collect(),
        )),
        Err(e) => Envelope::from_service(e.into()),
    }
}
