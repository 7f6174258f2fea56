//! Reading request parameters the lenient way upstream's clients need.
//!
//! Parameters come from the query string and the body. A body that starts with gzip's magic
//! bytes is decompressed whatever the headers say (pilot3 gzips legacy requests without
//! `Content-Encoding`). A JSON object body, a form-urlencoded body and a multipart form are all
//! accepted. Limits hold before and after decompression; a body over the limit is 413, a
//! truncated or undecodable one is 400 with a message naming the problem.

use std::io::Read;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;

/// How a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Unreadable(String),
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            BodyError::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("ERROR : request body exceeds the limit of {limit} bytes"),
            ),
            BodyError::Unreadable(why) => (StatusCode::BAD_REQUEST, format!("ERROR : {why}")),
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            message,
        )
            .into_response()
    }
}

/// The body as received: raw bytes (decompressed) and what the client said it is.
pub struct RawBody {
    pub bytes: Vec<u8>,
    pub content_type: String,
    /// Multipart fields, when the body was a multipart form.
    pub multipart: Option<Vec<(String, String)>>,
}

pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads the body, gunzipping it when it is gzip, within `limit` bytes both ways.
pub async fn read_body(request: Request, limit: usize) -> Result<RawBody, BodyError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        return read_multipart(request, limit, content_type).await;
    }
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| body_error(&e, limit))?;
    let bytes = if bytes.starts_with(&GZIP_MAGIC) {
        gunzip(&bytes, limit)?
    } else {
        bytes.to_vec()
    };
    Ok(RawBody {
        bytes,
        content_type,
        multipart: None,
    })
}

fn body_error(error: &axum::Error, limit: usize) -> BodyError {
    let too_large = std::error::Error::source(error)
        .is_some_and(|s| s.to_string().contains("length limit"))
        || error.to_string().contains("length limit");
    if too_large {
        BodyError::TooLarge(limit)
    } else {
        BodyError::Unreadable(format!(
            "request body could not be read (truncated?): {error}"
        ))
    }
}

/// Multipart forms are bounded by the router's `DefaultBodyLimit`, set to the same limit.
async fn read_multipart(
    request: Request,
    limit: usize,
    content_type: String,
) -> Result<RawBody, BodyError> {
    let mut form = Multipart::from_request(request, &()).await.map_err(|e| {
        BodyError::Unreadable(format!("malformed multipart form: {}", e.body_text()))
    })?;
    let mut fields = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_string();
                let data = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_error(e.status(), &e.body_text(), limit))?;
                fields.push((name, String::from_utf8_lossy(&data).into_owned()));
            }
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e.status(), &e.body_text(), limit)),
        }
    }
    Ok(RawBody {
        bytes: Vec::new(),
        content_type,
        multipart: Some(fields),
    })
}

fn multipart_error(status: StatusCode, text: &str, limit: usize) -> BodyError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        BodyError::TooLarge(limit)
    } else {
        BodyError::Unreadable(format!("malformed multipart form: {text}"))
    }
}

/// Decompresses gzip data, refusing output beyond `limit` bytes.
pub fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    let decoder = flate2::read::GzDecoder::new(data);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::Unreadable(format!("malformed gzip body: {e}")))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge(limit));
    }
    Ok(out)
}

/// Parameters as the legacy dispatcher sees them: names to strings, first value wins.
#[derive(Debug, Default, Clone)]
pub struct LegacyParams {
    pairs: Vec<(String, String)>,
}

impl LegacyParams {
    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter that is present and not empty.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// Parameters from one JSON object (an element of updateJobsInBulk's `jobList`).
    pub fn from_json_object(map: serde_json::Map<String, Json>) -> LegacyParams {
        LegacyParams {
            pairs: map
                .into_iter()
                .map(|(k, v)| (k, legacy_string(&v)))
                .collect(),
        }
    }
}

/// Decodes query and body into legacy parameters. JSON scalars become the strings upstream's
/// legacy parser makes of them: `true`/`false` → `True`/`False`, `null` → `None`, numbers as
/// written; nested values stay JSON text.
pub fn legacy_params(query: Option<&str>, body: RawBody) -> Result<LegacyParams, BodyError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let parsed: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|e| BodyError::Unreadable(format!("malformed query string: {e}")))?;
        pairs.extend(parsed);
    }
    if let Some(fields) = body.multipart {
        pairs.extend(fields);
        return Ok(LegacyParams { pairs });
    }
    let text = body.bytes.as_slice();
    let trimmed = text
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &text[i..]);
    let looks_json = body.content_type.starts_with("application/json")
        || trimmed.is_some_and(|t| t.starts_with(b"{"));
    if trimmed.is_none() {
        // Empty body.
    } else if looks_json {
        let json: Json = serde_json::from_slice(text)
            .map_err(|e| BodyError::Unreadable(format!("received invalid JSON: {e}")))?;
        let Json::Object(map) = json else {
            return Err(BodyError::Unreadable(
                "a JSON body must be an object of parameters".into(),
            ));
        };
        for (key, value) in map {
            pairs.push((key, legacy_string(&value)));
        }
    } else {
        let text = std::str::from_utf8(text)
            .map_err(|_| BodyError::Unreadable("form body is not UTF-8".into()))?;
        let parsed: Vec<(String, String)> = serde_urlencoded::from_str(text)
            .map_err(|e| BodyError::Unreadable(format!("malformed form body: {e}")))?;
        pairs.extend(parsed);
    }
    Ok(LegacyParams { pairs })
}

fn legacy_string(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Bool(true) => "True".into(),
        Json::Bool(false) => "False".into(),
        Json::Null => "None".into(),
        Json::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(bytes: &[u8], content_type: &str) -> RawBody {
        RawBody {
            bytes: bytes.to_vec(),
            content_type: content_type.into(),
            multipart: None,
        }
    }

    #[test]
    fn json_bodies_become_upstream_legacy_strings() {
        let body = raw(
            br#"{"siteName":"Q","allowOtherCountry":false,"mem":24105.6,"nJobs":2,"x":null}"#,
            "application/json",
        );
        let p = legacy_params(None, body).expect("valid");
        assert_eq!(p.get("siteName"), Some("Q"));
        assert_eq!(p.get("allowOtherCountry"), Some("False"));
        assert_eq!(p.get("mem"), Some("24105.6"));
        assert_eq!(p.get("nJobs"), Some("2"));
        assert_eq!(p.get("x"), Some("None"));
    }

    #[test]
    fn forms_and_queries_are_merged() {
        let p = legacy_params(
            Some("a=1"),
            raw(b"siteName=Q&node=n+1", "application/x-www-form-urlencoded"),
        )
        .expect("valid");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("node"), Some("n 1"));
    }

    #[test]
    fn gzip_is_detected_and_bounded() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[b'a'; 1000]).expect("write");
        let data = enc.finish().expect("finish");
        assert_eq!(gunzip(&data, 2000).map(|v| v.len()).ok(), Some(1000));
        assert!(matches!(gunzip(&data, 10), Err(BodyError::TooLarge(10))));
        assert!(matches!(
            gunzip(&data[..data.len() / 2], 2000),
            Err(BodyError::Unreadable(_))
        ));
    }

    #[test]
    fn broken_json_names_the_problem() {
        let err = legacy_params(None, raw(b"{\"a\": ", "application/json")).expect_err("invalid");
        assert!(matches!(err, BodyError::Unreadable(m) if m.contains("invalid JSON")));
    }
}
