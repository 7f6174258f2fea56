//! The JSON API, `/api/<version>/<module>/<function>` (`v1`, or `latest` for `v1`).
//!
//! Every function answers upstream's envelope `{"success": bool, "message": str, "data": ...}`,
//! with HTTP 200 even when `success` is false; an unknown function is 403 as upstream.

mod system;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Serialize;
use serde_json::Value;

use crate::forbidden_method;
use crate::identity::{ClientAddr, Identity};

/// What a v1 handler gets besides the store.
pub(crate) struct Call {
    pub method: Method,
    pub identity: Arc<Identity>,
    pub peer: Option<std::net::SocketAddr>,
    pub query: BTreeMap<String, String>,
}

/// The response envelope.
#[derive(Serialize)]
pub(crate) struct Envelope {
    pub success: bool,
    pub message: String,
    pub data: Value,
}

impl Envelope {
    pub fn ok(data: Value) -> Envelope {
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
            data: Value::Null,
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

pub async fn dispatch(
    Path((version, module, function)): Path<(String, String, String)>,
    method: Method,
    Extension(identity): Extension<Arc<Identity>>,
    Extension(ClientAddr(peer)): Extension<ClientAddr>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if version != "v1" && version != "latest" {
        return forbidden_method(&function);
    }
    let call = Call {
        method,
        identity,
        peer,
        query,
    };
    match (module.as_str(), function.as_str()) {
        ("system", "is_alive") => system::is_alive().into_response(),
        ("system", "get_attributes") => system::get_attributes(&call).into_response(),
        _ => forbidden_method(&function),
    }
}
