//! Upstream's `Protocol.Response`: an ordered set of keys starting with `StatusCode`, sent as
//! urlencoded text (every value through Python's `str()`) or, when the client's `Accept`
//! includes `application/json`, as JSON.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use crate::python::python_repr;

/// `StatusCode` values (upstream's Protocol.py).
pub const SC_SUCCESS: i64 = 0;
pub const SC_NO_JOBS: i64 = 20;
pub const SC_FAILED: i64 = 30;
pub const SC_INVALID: i64 = 50;
pub const SC_ROLE: i64 = 60;
pub const SC_PERMS: i64 = 70;
pub const SC_MISS_KEY: i64 = 80;
pub const SC_PROXY_ERROR: i64 = 90;

/// Whether the client asked for JSON: `application/json` anywhere in `Accept`.
pub fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"))
}

#[derive(Clone, Debug, Default)]
pub struct Protocol {
    entries: Vec<(String, Json)>,
}

impl Protocol {
    pub fn new(code: i64) -> Protocol {
        Protocol {
            entries: vec![("StatusCode".into(), json!(code))],
        }
    }

    /// A response with an `errorDialog`, which upstream only shows JSON clients for some codes.
    pub fn with_dialog(code: i64, dialog: &str, json_mode: bool) -> Protocol {
        let mut response = Protocol::new(code);
        if json_mode {
            response.push("errorDialog", json!(dialog));
        }
        response
    }

    pub fn push(&mut self, key: &str, value: Json) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn extend(&mut self, entries: Vec<(String, Json)>) {
        for (k, v) in entries {
            self.push(&k, v);
        }
    }

    pub fn to_json(&self) -> Json {
        Json::Object(self.entries.iter().cloned().collect())
    }

    /// The urlencoded form: `StatusCode=0&command=NULL`.
    pub fn to_urlencoded(&self) -> String {
        self.entries
            .iter()
            .map(|(k, v)| format!("{}={}", quote_plus(k), quote_plus(&python_str(v))))
            .collect::<Vec<_>>()
            .join("&")
    }

    pub fn into_response(self, json_mode: bool) -> Response {
        if json_mode {
            json_response(self.to_json().to_string())
        } else {
            text_response(self.to_urlencoded())
        }
    }
}

pub fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub fn text_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Python's `str()` of a value: strings bare, `None`, `True`/`False`, containers as repr.
pub fn python_str(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        other => python_repr(other),
    }
}

/// Python's `urllib.parse.quote_plus`.
pub fn quote_plus(text: &str) -> String {
    crate::url::percent_encode(text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoding_renders_values_as_python_str() {
        let mut r = Protocol::new(0);
        r.push("command", json!("NULL"));
        r.push("flag", json!(false));
        r.push("none", Json::Null);
        r.push("text", json!("a b+c/d"));
        assert_eq!(
            r.to_urlencoded(),
            "StatusCode=0&command=NULL&flag=False&none=None&text=a+b%2Bc%2Fd"
        );
    }
}
