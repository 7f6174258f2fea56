//! `file_server`: the sandbox cache as prun uses it (`validate_cache_file`, then
//! `upload_cache_file`), and the small cache functions around it.
//!
//! Who may call: every function needs a verified credential (upstream's `secure`), and
//! `register_cache_file` the production role. An upload is accepted over HTTPS, as upstream
//! (`ERROR : no HTTPS` otherwise), or over plain HTTP from a loopback peer of a server in local
//! mode (`trust_loopback`).
//!
//! How much: an upload is one multipart form whose field `file` carries the file; it is
//! streamed to disk as it arrives (never held in memory) and bounded by its own limit, chosen
//! by the file's name (`panda_service::sandbox::upload_limit`), not by `max_body_size`. A
//! request declaring more than the largest limit is refused before a byte is read. Over the
//! limit is HTTP 413 with the limit named: the rest of the body is not read, so the answer
//! cannot wait for it.
//!
//! What a slow client costs: the body must keep arriving at the server's minimum rate
//! (`body_read_timeout` plus a second per `body_min_rate` bytes), or the upload is dropped with
//! 408; an upload holds one of the node's few upload turns and a file handle, never a request
//! worker.

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use panda_service::sandbox::{
    self, CacheFileInfo, UploadError, UploadKind, UploadOutcome, JEDI_LOG_DIR, MAX_UPLOAD,
};
use serde_json::Value as Json;

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::identity::OverHttps;
use crate::AppState;

/// Room for the multipart framing and the other fields around the file.
const FORM_OVERHEAD: u64 = 64 * 1024;

/// `file_server/validate_cache_file`: `FOUND:<host>:<file>` when the caller registered a
/// sandbox of this size and checksum in the last days, else `NOTFOUND`.
pub(crate) async fn validate_cache_file(state: &AppState, call: &Call) -> Envelope {
    let size = call.args.int("file_size").unwrap_or_default();
    let checksum = match call.args.get("checksum") {
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    match state
        .service
        .find_cache_file(&call.identity, size, &checksum)
        .await
    {
        Ok(Some((host, name))) => Envelope {
            success: true,
            message: format!("FOUND:{host}:{name}"),
            data: Json::Null,
        },
        Ok(None) => Envelope::fail("NOTFOUND"),
        Err(e) => Envelope::from_service(e),
    }
}

/// `file_server/touch_cache_file`.
pub(crate) async fn touch_cache_file(state: &AppState, call: &Call) -> Envelope {
    let name = call.args.text("file_name").unwrap_or_default();
    match state.service.touch_cache_file(name) {
        Ok(true) => Envelope::ok(Json::Null),
        Ok(false) => Envelope::fail(format!("Failed to touch file: no file {name} in the cache")),
        Err(e) => Envelope::from_service(e),
    }
}

/// `file_server/delete_cache_file`: accepted and ignored, as upstream (a sandbox may still be
/// needed by a job that is rebrokered); the cleanup removes files nobody touched.
pub(crate) async fn delete_cache_file(_: &AppState, call: &Call) -> Envelope {
    match sandbox::check_file_name(call.args.text("file_name").unwrap_or_default()) {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e),
    }
}

/// `file_server/register_cache_file` (production): records a file another node stored.
pub(crate) async fn register_cache_file(state: &AppState, call: &Call) -> Envelope {
    let host = call
        .peer
        .map(|p| p.ip().to_string())
        .unwrap_or_else(|| "localhost".into());
    let info = CacheFileInfo {
        user: call.args.text("user_name").unwrap_or_default().to_string(),
        host,
        file_name: call.args.text("file_name").unwrap_or_default().to_string(),
        size: call.args.int("file_size").unwrap_or_default(),
        checksum: call.args.text("checksum").map(str::to_string),
    };
    match state.service.register_cache_file(&info).await {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e),
    }
}

/// `file_server/download_jedi_log`: a log in the cache from `offset` on, as text; upstream
/// answers a single space when there is nothing to read, and so do we.
pub(crate) async fn download_jedi_log(state: &AppState, call: &Call) -> Response {
    let name = call.args.text("log_name").unwrap_or_default();
    let offset = call.args.int("offset").unwrap_or(0).max(0) as u64;
    let mut text = String::from(" ");
    if sandbox::check_file_name(name).is_ok() {
        if let Ok(bytes) = read_from(&state.service.cache_dir().join(name), offset).await {
            text.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// The most of a log one call returns.
const MAX_LOG_READ: u64 = 16 * 1024 * 1024;

async fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut bytes = Vec::new();
    file.take(MAX_LOG_READ).read_to_end(&mut bytes).await?;
    Ok(bytes)
}

/// Whether this request may upload: HTTPS, or local mode's loopback.
fn upload_transport_ok(state: &AppState, call: &Call, request: &Request) -> bool {
    request.extensions().get::<OverHttps>().is_some()
        || (state.identity_policy.trust_loopback && call.peer.is_some_and(|p| p.ip().is_loopback()))
}

/// An answer to an upload: the envelope as JSON with `status`.
fn answer(status: StatusCode, envelope: Envelope) -> Response {
    let mut response = envelope.into_response_as(true);
    *response.status_mut() = status;
    response
}

/// `file_server/upload_cache_file`: the multipart field `file`, streamed into the cache.
pub(crate) async fn upload_cache_file(state: &AppState, call: &Call, request: Request) -> Response {
    upload(state, call, request, UploadKind::Sandbox).await
}

/// `file_server/upload_jedi_log` (production role): a JEDI log into `/cache/jedilog/`,
/// replacing the previous one; `data` is its URL.
pub(crate) async fn upload_jedi_log(state: &AppState, call: &Call, request: Request) -> Response {
    upload(state, call, request, UploadKind::JediLog).await
}

/// `file_server/upload_hpo_checkpoint`: the file `<taskID>_<subID>` kept as
/// `hpo_cp_<taskID>_<subID>`, replacing the previous one; `data` is its path.
pub(crate) async fn upload_hpo_checkpoint(
    state: &AppState,
    call: &Call,
    request: Request,
) -> Response {
    upload(state, call, request, UploadKind::Checkpoint).await
}

/// The URL a file in the cache is served at, from the host the client called.
fn cache_url(host: &str, https: bool, path: &str) -> String {
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}/cache/{path}")
}

async fn upload(state: &AppState, call: &Call, request: Request, kind: UploadKind) -> Response {
    if !upload_transport_ok(state, call, &request) {
        super::discard_body(request, state).await;
        return answer(StatusCode::OK, Envelope::fail("ERROR : no HTTPS"));
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD + FORM_OVERHEAD) {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            Envelope::fail(format!(
                "ERROR: upload failure. Exceeded size limit: the request declares {} bytes; \
                 no file may exceed {MAX_UPLOAD} bytes",
                declared.unwrap_or_default()
            )),
        );
    }
    let boundary = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok());
    let Some(boundary) = boundary else {
        super::discard_body(request, state).await;
        return answer(
            StatusCode::OK,
            Envelope::fail("Argument error: upload_cache_file takes a multipart/form-data body with the field file"),
        );
    };
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(MAX_UPLOAD + FORM_OVERHEAD)
            .per_field(FORM_OVERHEAD)
            .for_field("file", MAX_UPLOAD),
    );
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let https = request.extensions().get::<OverHttps>().is_some();
    let stream = request.into_body().into_data_stream();
    let mut form = multer::Multipart::with_constraints(stream, boundary, constraints);
    let pace = Pace::new(state);
    loop {
        let field = match pace.within(form.next_field()).await {
            Err(timeout) => return timeout,
            Ok(Ok(Some(field))) => field,
            Ok(Ok(None)) => {
                return answer(
                    StatusCode::OK,
                    Envelope::fail("Argument error: the form has no field file"),
                )
            }
            Ok(Err(e)) => return answer(StatusCode::BAD_REQUEST, form_error(&e)),
        };
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or_default().to_string();
        let where_ = Place {
            kind,
            host: &host,
            https,
        };
        return receive(state, call, field, &name, &pace, where_).await;
    }
}

/// Streams one file field into the cache.
/// What an upload is and where the client reached us (for the URL of a stored log).
struct Place<'a> {
    kind: UploadKind,
    host: &'a str,
    https: bool,
}

async fn receive(
    state: &AppState,
    call: &Call,
    mut field: multer::Field<'_>,
    name: &str,
    pace: &Pace,
    place: Place<'_>,
) -> Response {
    let mut upload = match state
        .service
        .begin_cache_upload(&call.identity, place.kind, name)
        .await
    {
        Ok(upload) => upload,
        Err(e) => return answer(StatusCode::OK, Envelope::from_service(e)),
    };
    loop {
        let chunk = match pace.within(field.chunk()).await {
            Err(timeout) => return timeout,
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => break,
            Ok(Err(multer::Error::FieldSizeExceeded { .. })) => {
                let too_large = UploadError::TooLarge {
                    limit: upload.limit(),
                    name: upload.name().to_string(),
                };
                return answer(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Envelope::fail(too_large.message()),
                );
            }
            Ok(Err(e)) => return answer(StatusCode::BAD_REQUEST, form_error(&e)),
        };
        pace.received(chunk.len());
        if let Err(e) = upload.write(&chunk).await {
            let status = match e {
                UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                UploadError::Write => StatusCode::OK,
            };
            return answer(status, Envelope::fail(e.message()));
        }
    }
    let _worker = state.stats.worker().await;
    match state.service.finish_cache_upload(upload).await {
        Ok(UploadOutcome::Stored(info)) => answer(
            StatusCode::OK,
            match place.kind {
                UploadKind::Sandbox => Envelope::ok(Json::Null),
                UploadKind::JediLog => Envelope::ok(Json::String(cache_url(
                    place.host,
                    place.https,
                    &format!("{JEDI_LOG_DIR}/{}", info.file_name),
                ))),
                UploadKind::Checkpoint => {
                    let path = state.service.cache_dir().join(&info.file_name);
                    Envelope {
                        success: true,
                        message: format!("Successfully placed at {}", path.display()),
                        data: Json::String(path.display().to_string()),
                    }
                }
            },
        ),
        Ok(UploadOutcome::Exists) => answer(
            StatusCode::OK,
            Envelope::fail("ERROR: cannot overwrite file"),
        ),
        Err(e) => answer(StatusCode::OK, Envelope::from_service(e)),
    }
}

fn form_error(e: &multer::Error) -> Envelope {
    Envelope::fail(format!(
        "Argument error: the multipart form cannot be read: {e}"
    ))
}

/// The time an upload's body may take: `body_read_timeout`, plus a second for every
/// `body_min_rate` bytes received.
struct Pace {
    started: Instant,
    base: Duration,
    rate: u64,
    received: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn new(state: &AppState) -> Pace {
        Pace {
            started: Instant::now(),
            base: state.limits.body_read_timeout,
            rate: state.limits.body_min_rate.max(1),
            received: Default::default(),
        }
    }

    fn received(&self, bytes: usize) {
        self.received
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `step` within the time left, or answers 408.
    async fn within<T>(&self, step: impl std::future::Future<Output = T>) -> Result<T, Response> {
        let received = self.received.load(std::sync::atomic::Ordering::Relaxed);
        let allowed = self.base + Duration::from_secs_f64(received as f64 / self.rate as f64);
        let left = allowed.saturating_sub(self.started.elapsed());
        tokio::time::timeout(left, step).await.map_err(|_| {
            tracing::warn!(target: "panda::limits", received, "upload too slow; dropped");
            answer(
                StatusCode::REQUEST_TIMEOUT,
                Envelope::fail(format!(
                    "ERROR: upload not received in time ({received} bytes in {} s)",
                    self.started.elapsed().as_secs()
                )),
            )
        })
    }
}

/// `file_server/delete_hpo_checkpoint`.
pub(crate) async fn delete_hpo_checkpoint(state: &AppState, call: &Call) -> Envelope {
    let text = |key: &str| match call.args.get(key) {
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    match state
        .service
        .delete_checkpoint(&text("task_id"), &text("sub_id"))
        .await
    {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e),
    }
}

/// The caller's DN as request files record it.
fn requester(call: &Call) -> String {
    call.identity.dn.clone().unwrap_or_default()
}

fn now_text() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `file_server/upload_file_recovery_request`: the request kept for a recovery agent, with
/// an empty log file whose URL is answered (the task's owner or the production role).
pub(crate) async fn upload_file_recovery_request(state: &AppState, call: &Call) -> Envelope {
    let task_id = call.args.int("task_id");
    let dataset = call.args.text("dataset").filter(|d| !d.is_empty());
    if task_id.is_none() && dataset.is_none() {
        return Envelope::fail("Either task_id or dataset must be provided");
    }
    if let Some(id) = task_id {
        if let Some(refused) = super::task::refuse_unless_owner(state, call, id).await {
            return refused;
        }
    }
    let log = format!(
        "lost_file_recovery.{}.log",
        panda_service::task_processing::new_guid()
    );
    let mut request = serde_json::json!({
        "userName": requester(call), "creationTime": now_text(), "logFilename": log,
        "isProductionManager": call.identity.production,
    });
    let flags = [
        ("dry_run", "dryRun"),
        ("no_child_retry", "noChildRetry"),
        ("resurrect_datasets", "resurrectDS"),
        ("force", "force"),
        ("reproduce_parent", "reproduceParent"),
    ];
    for (arg, key) in flags {
        if call.args.flag(arg) {
            request[key] = Json::Bool(true);
        }
    }
    if let Some(id) = task_id {
        request["jediTaskID"] = Json::from(id);
    }
    if let Some(dataset) = dataset {
        request["ds"] = Json::from(dataset);
    }
    if let Some(Json::Array(files)) = call.args.get("files") {
        let names: Vec<&str> = files.iter().filter_map(Json::as_str).collect();
        request["files"] = Json::from(names.join(","));
    }
    if let Some(n) = call.args.int("reproduce_upto_nth_gen").filter(|n| *n > 0) {
        request["reproduceUptoNthGen"] = Json::from(n);
    }
    if let Err(e) = state.service.store_request("recov", &request).await {
        return Envelope::from_service(e);
    }
    if let Err(e) = state.service.create_cache_file(&log).await {
        return Envelope::from_service(e);
    }
    Envelope {
        success: true,
        message: "The request was stored; this server has no file-recovery agent, so nothing \
                  acts on it yet"
            .into(),
        data: serde_json::json!({"logFileURL": format!("/cache/{log}")}),
    }
}

/// `file_server/upload_workflow_request`: the workflow kept for a workflow processor;
/// synchronous processing (`sync`, `dry_run`) needs that processor, which this server does
/// not have, and is refused with that reason.
pub(crate) async fn upload_workflow_request(state: &AppState, call: &Call) -> Envelope {
    if call.args.flag("sync") || call.args.flag("dry_run") {
        return Envelope::fail(
            "synchronous or dry-run workflow processing needs a workflow processor, which this \
             server does not have",
        );
    }
    let data = match serde_json::from_str::<Json>(call.args.text("data").unwrap_or_default()) {
        Ok(data) => data,
        Err(e) => {
            return Envelope::fail(format!(
                "Cannot upload the workflow request: data is not JSON: {e}"
            ))
        }
    };
    let request = serde_json::json!({
        "userName": requester(call), "creationTime": now_text(), "data": data,
    });
    match state.service.store_request("workflow", &request).await {
        Ok(_) => Envelope::ok_with(
            "The request was stored; this server has no workflow processor, so nothing acts on \
             it yet",
        ),
        Err(e) => Envelope::from_service(e),
    }
}

/// `file_server/upload_event_picking_request`: the request kept for an event-picking agent.
pub(crate) async fn upload_event_picking_request(state: &AppState, call: &Call) -> Envelope {
    let mut request = serde_json::Map::new();
    request.insert("userName".into(), Json::from(requester(call)));
    request.insert("creationTime".into(), Json::from(now_text()));
    for key in EVENT_PICKING_ARGS {
        if let Some(value) = call.args.get(*key) {
            request.insert((*key).into(), value.clone());
        }
    }
    match state
        .service
        .store_request("evp", &Json::Object(request))
        .await
    {
        Ok(_) => Envelope::ok_with(
            "The request was stored; this server has no event-picking agent, so nothing acts \
             on it yet",
        ),
        Err(e) => Envelope::from_service(e),
    }
}

/// The arguments of `upload_event_picking_request`, as upstream names them.
pub(crate) const EVENT_PICKING_ARGS: &[&str] = &[
    "run_event_list",
    "data_type",
    "stream_name",
    "dataset_name",
    "ami_tag",
    "user_dataset_name",
    "locked_by",
    "parameters",
    "input_file_list",
    "n_sites",
    "user_task_name",
    "ei_api",
    "include_guids",
];

/// `file_server/update_jedi_log` (production role): the multipart field `file`, zlib
/// compressed, decompressed as it arrives and appended to the cache file of its name; at most
/// 100 MB either way.
pub(crate) async fn update_jedi_log(state: &AppState, call: &Call, request: Request) -> Response {
    use std::io::Write;
    use tokio::io::AsyncWriteExt;
    let _ = call;
    let Some(boundary) = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| multer::parse_boundary(v).ok())
    else {
        super::discard_body(request, state).await;
        return answer(
            StatusCode::OK,
            Envelope::fail("Argument error: update_jedi_log takes a multipart/form-data body with the field file"),
        );
    };
    let limit = sandbox::JEDI_LOG_LIMIT;
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limit + FORM_OVERHEAD)
            .per_field(FORM_OVERHEAD)
            .for_field("file", limit),
    );
    let mut form = multer::Multipart::with_constraints(
        request.into_body().into_data_stream(),
        boundary,
        constraints,
    );
    let pace = Pace::new(state);
    let too_large = || {
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            Envelope::fail(format!("ERROR: upload failure. Exceeded size limit: a log update may be at most {limit} bytes")),
        )
    };
    loop {
        let mut field = match pace.within(form.next_field()).await {
            Err(timeout) => return timeout,
            Ok(Ok(Some(field))) if field.name() == Some("file") => field,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => {
                return answer(
                    StatusCode::OK,
                    Envelope::fail("Argument error: the form has no field file"),
                )
            }
            Ok(Err(e)) => return answer(StatusCode::BAD_REQUEST, form_error(&e)),
        };
        let name = field.file_name().unwrap_or_default().to_string();
        let mut file = match state.service.open_log_to_append(&name).await {
            Ok(file) => file,
            Err(e) => return answer(StatusCode::OK, Envelope::from_service(e)),
        };
        let mut decoder = flate2::write::ZlibDecoder::new(Vec::new());
        let mut written = 0u64;
        loop {
            let chunk = match pace.within(field.chunk()).await {
                Err(timeout) => return timeout,
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(multer::Error::FieldSizeExceeded { .. })) => return too_large(),
                Ok(Err(e)) => return answer(StatusCode::BAD_REQUEST, form_error(&e)),
            };
            pace.received(chunk.len());
            if decoder.write_all(&chunk).is_err() {
                return answer(
                    StatusCode::OK,
                    Envelope::fail("ERROR: cannot update file: the content is not zlib data"),
                );
            }
            let out = std::mem::take(decoder.get_mut());
            written += out.len() as u64;
            if written > limit {
                return too_large();
            }
            if file.write_all(&out).await.is_err() {
                return answer(StatusCode::OK, Envelope::fail("ERROR: cannot update file"));
            }
        }
        let rest = match decoder.finish() {
            Ok(rest) => rest,
            Err(_) => {
                return answer(
                    StatusCode::OK,
                    Envelope::fail("ERROR: cannot update file: the content is not zlib data"),
                )
            }
        };
        if written + rest.len() as u64 > limit {
            return too_large();
        }
        if file.write_all(&rest).await.is_err() || file.flush().await.is_err() {
            return answer(StatusCode::OK, Envelope::fail("ERROR: cannot update file"));
        }
        return answer(StatusCode::OK, Envelope::ok(Json::Null));
    }
}
