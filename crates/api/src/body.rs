//! Reading request parameters the lenient way upstream's clients need.
//!
//! Parameters come from the query string and the body. A body that starts with gzip's magic
//! bytes is decompressed whatever the headers say (pilot3 gzips legacy requests without
//! `Content-Encoding`). A JSON object body, a form-urlencoded body and a multipart form are all
//! accepted.
//!
//! Bounds, all before anything is parsed (see [`crate::Limits`]): the body limit of the caller
//! (smaller for a caller without verified credentials) holds for the bytes received and again
//! for the bytes decompressed; a JSON body may hold at most `max_json_values` values nested
//! at most `max_json_depth` deep, checked by a scan that allocates nothing; the body must
//! arrive within `body_read_timeout`, extended by a second per `body_min_rate` bytes. Over a
//! size limit is 413, too slow is 408, truncated or undecodable is 400, each with a message
//! naming the problem. The body is read by the handler after it has checked the caller and
//! the method, and before it takes a request worker: a slow client never holds one.

use std::io::Read;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::Value as Json;

use crate::Limits;

/// How a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    Unreadable(String),
    /// The body did not arrive in time: bytes received, seconds waited.
    TooSlow(usize, u64),
}

impl BodyError {
    /// What went wrong, in words.
    pub fn message(&self) -> String {
        match self {
            BodyError::TooLarge(limit) => {
                format!("request body exceeds the limit of {limit} bytes")
            }
            BodyError::Unreadable(why) => why.clone(),
            BodyError::TooSlow(received, seconds) => {
                format!("request body not received in time ({received} bytes in {seconds} s)")
            }
        }
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        let status = match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
            BodyError::TooSlow(..) => StatusCode::REQUEST_TIMEOUT,
        };
        let message = format!("ERROR : {}", self.message());
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

/// Reads the body, gunzipping it when it is gzip, within `limit` bytes both ways and within
/// the time `limits` allow.
pub async fn read_body(
    request: Request,
    limit: usize,
    limits: &Limits,
) -> Result<RawBody, BodyError> {
    let content_type = content_type(request.headers());
    let (parts, body) = request.into_parts();
    let bytes = collect(&parts.headers, body, limit, limits).await?;
    if content_type.starts_with("multipart/form-data") {
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        return read_multipart(request, limit, content_type).await;
    }
    let bytes = if bytes.starts_with(&GZIP_MAGIC) {
        gunzip(&bytes, limit)?
    } else {
        bytes
    };
    Ok(RawBody {
        bytes,
        content_type,
        multipart: None,
    })
}

/// The request's `Content-Type`, lower-cased; empty when there is none.
pub fn content_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The body's bytes, at most `limit` of them, arriving in the time allowed.
async fn collect(
    headers: &axum::http::HeaderMap,
    mut body: axum::body::Body,
    limit: usize,
    limits: &Limits,
) -> Result<Vec<u8>, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let started = Instant::now();
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    loop {
        let earned = bytes.len() as f64 / limits.body_min_rate.max(1) as f64;
        let allowed = limits.body_read_timeout + Duration::from_secs_f64(earned);
        let left = allowed.saturating_sub(started.elapsed());
        let frame = match tokio::time::timeout(left, body.frame()).await {
            Err(_) => return Err(BodyError::TooSlow(bytes.len(), started.elapsed().as_secs())),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(body_error(&e, limit)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// Reads and drops a body that will not be used, at most `limit` bytes within the body
/// timeout, keeping none of it. An answer sent while the client is still sending would
/// otherwise reach it as a reset connection; past the limit or the time this gives up and the
/// connection is closed.
pub async fn discard(mut body: axum::body::Body, limit: usize, limits: &Limits) {
    let started = Instant::now();
    let mut received = 0usize;
    while received <= limit {
        let earned = received as f64 / limits.body_min_rate.max(1) as f64;
        let allowed = limits.body_read_timeout + Duration::from_secs_f64(earned);
        let left = allowed.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                received += frame.data_ref().map_or(0, |d| d.len());
            }
            _ => return,
        }
    }
}

/// Checks that a JSON text holds at most `max_values` values nested at most `max_depth`
/// deep, without parsing it: a scan over the bytes that skips strings. Whether it is valid
/// JSON is the parser's business afterwards.
pub fn check_json_shape(text: &[u8], max_values: usize, max_depth: usize) -> Result<(), BodyError> {
    let (mut depth, mut values) = (0usize, 1usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                values += 1;
                if depth > max_depth {
                    return Err(BodyError::Unreadable(format!(
                        "JSON nested deeper than {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' | b':' => values += 1,
            _ => {}
        }
        if values > max_values {
            return Err(BodyError::Unreadable(format!(
                "JSON holds more than {max_values} values"
            )));
        }
    }
    Ok(())
}

/// Parses a JSON body after [`check_json_shape`].
pub fn parse_json(text: &[u8], limits: &Limits) -> Result<Json, BodyError> {
    check_json_shape(text, limits.max_json_values, limits.max_json_depth)?;
    serde_json::from_slice(text)
        .map_err(|e| BodyError::Unreadable(format!("received invalid JSON: {e}")))
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

/// A multipart form, from a body already read within its limit.
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

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
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
    /// (`legacy_string` turns each value into what upstream's parser makes of it.)
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
pub fn legacy_params(
    query: Option<&str>,
    body: RawBody,
    limits: &Limits,
) -> Result<LegacyParams, BodyError> {
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
        let json = parse_json(text, limits)?;
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
    // No database stores a NUL in text: refused here, named, before any SQL sees it.
    if let Some((name, _)) = pairs
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(BodyError::Unreadable(format!(
            "parameter {:?} contains a NUL byte",
            name.replace('\0', "\\0")
        )));
    }
    Ok(LegacyParams { pairs })
}

/// A pilot's report read from legacy parameters, by their own names.
impl panda_service::ReportFields for LegacyParams {
    fn get(&self, name: &str) -> Option<&str> {
        LegacyParams::get(self, name)
    }
}

/// A JSON value as upstream's legacy parser makes it a string: `true`/`false` → `True`/`False`,
/// `null` → `None`, numbers as written; nested values as JSON text.
pub fn legacy_string(value: &Json) -> String {
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

    #[test]
    fn json_shape_is_bounded_before_parsing() {
        assert!(check_json_shape(br#"{"a":[0,0,0]}"#, 10, 4).is_ok());
        let many = format!("{{\"a\":[{}0]}}", "0,".repeat(100));
        assert!(matches!(check_json_shape(many.as_bytes(), 50, 4),
            Err(BodyError::Unreadable(m)) if m.contains("more than 50 values")));
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        assert!(matches!(check_json_shape(deep.as_bytes(), 1000, 64),
            Err(BodyError::Unreadable(m)) if m.contains("deeper than 64")));
        // Structure inside strings does not count, escaped quotes included.
        let text = format!("{{\"a\":\"{}\\\"[[[\"}}", ",".repeat(100));
        assert!(check_json_shape(text.as_bytes(), 5, 2).is_ok());
    }

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
        let p = legacy_params(None, body, &Limits::default()).expect("valid");
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
            &Limits::default(),
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
    fn nul_bytes_are_refused_with_the_parameter_named() {
        let err = legacy_params(
            None,
            raw(b"siteName=Q%00x", "application/x-www-form-urlencoded"),
            &Limits::default(),
        )
        .expect_err("NUL");
        assert!(matches!(err, BodyError::Unreadable(m) if m.contains("siteName")));
    }

    #[test]
    fn broken_json_names_the_problem() {
        let err = legacy_params(
            None,
            raw(b"{\"a\": ", "application/json"),
            &Limits::default(),
        )
        .expect_err("invalid");
        assert!(matches!(err, BodyError::Unreadable(m) if m.contains("invalid JSON")));
    }
}
