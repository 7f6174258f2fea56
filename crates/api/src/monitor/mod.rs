//! The embedded monitor: BigPanDA's everyday pages (`/jobs/`, `/job/<pandaid>/`, `/tasks/`,
//! `/task/<id>/`, `/errors/`, `/dash/`, `/sites/`, `/site/<queue>/`, `/harvester/workers/`,
//! `/user/<name>/`) as server-rendered HTML, and the same data as JSON in BigPanDA's shapes
//! (`?json` or `Accept: application/json`), which scripts such as pandamonium read.
//!
//! Who may look: any caller with a verified identity (certificate, proxy or token, and local
//! mode's operator), as the API decides it; everyone when the operator opens the monitor
//! (`monitor_open`). Nothing here changes anything: the routes answer GET and HEAD only, and
//! no page has a form that posts. What a look costs is bounded by the service's rules
//! (`panda_service::monitor`): known filters only, short values, every list limited, the
//! archive read within a window.

mod page;

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{Duration, NaiveDateTime, Timelike};
use panda_core::{
    AttrSet, Attribute, DatasetAttr, FileAttr, JobAttr, JobSpec, Record, TaskAttr, Value,
};
use panda_service::monitor::{self as rules, MonitorQuery, TaskView};
use panda_service::ServiceError;
use serde_json::{json, Map, Value as Json};

use crate::{AppState, Identity};
use page::{stacked_bars, Body, Cell, Header, Page, Plot, Table};

/// Who may see the monitor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MonitorAccess {
    /// Everyone, verified or not (`monitor_open`).
    pub open: bool,
}

/// The monitor's routes, to merge into a router whose state is [`AppState`].
pub fn routes() -> Router<AppState> {
    let mut router = Router::new().route("/", get(index));
    for (path, handler) in [
        ("/jobs", get(jobs)),
        ("/tasks", get(tasks)),
        ("/errors", get(errors)),
        ("/dash", get(dash)),
        ("/sites", get(sites)),
        ("/harvester/workers", get(workers)),
    ] {
        router = router
            .route(path, handler.clone())
            .route(&format!("{path}/"), handler);
    }
    for (path, handler) in [
        ("/job/{id}", get(job)),
        ("/job/{id}/log", get(job_log)),
        ("/job/{id}/log/download", get(job_log_download)),
        ("/task/{id}", get(task)),
        ("/site/{name}", get(site)),
        ("/user/{name}", get(user)),
    ] {
        router = router
            .route(path, handler.clone())
            .route(&format!("{path}/"), handler);
    }
    router.layer(axum::middleware::map_response(uncached_and_negotiated))
}

/// No shared cache keeps a monitor answer (they are for verified identities), and every page
/// answers HTML or JSON by the `Accept` header, which a cache must key on.
async fn uncached_and_negotiated(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    headers.append(header::VARY, header::HeaderValue::from_static("Accept"));
    response
}

/// What a handler answers when it cannot answer the page.
enum Refusal {
    /// 400: the request names something wrongly; the message says what.
    Bad(String),
    /// 403: no verified identity and the monitor is not open.
    Forbidden,
    /// 404: no such job, task, site or user.
    NotFound(String),
    /// 503: the database cannot answer now.
    Unavailable,
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        match e {
            ServiceError::BadRequest(m) => Refusal::Bad(m),
            ServiceError::Forbidden(m) => Refusal::Bad(m),
            ServiceError::Store(e) => {
                tracing::error!(error = %e, "monitor: the store failed");
                Refusal::Unavailable
            }
        }
    }
}

/// How the caller wants the answer.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Html,
    Json,
}

fn format_of(query: &MonitorQuery, headers: &HeaderMap) -> Format {
    let accepts_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    match query.has("json") || accepts_json {
        true => Format::Json,
        false => Format::Html,
    }
}

/// The request as the handlers see it: who, the checked query, the format, now.
struct Look {
    query: MonitorQuery,
    format: Format,
    now: NaiveDateTime,
}

fn look(
    state: &AppState,
    identity: &Identity,
    raw: Option<String>,
    headers: &HeaderMap,
) -> Result<Look, (Format, Refusal)> {
    let pairs: Vec<(String, String)> = match raw.as_deref() {
        None | Some("") => Vec::new(),
        Some(text) => serde_urlencoded::from_str(text).map_err(|_| {
            (
                Format::Html,
                Refusal::Bad("the query string is not URL-encoded pairs".into()),
            )
        })?,
    };
    let json_asked = pairs.iter().any(|(n, _)| n == "json");
    let early = match json_asked {
        true => Format::Json,
        false => format_of(&MonitorQuery::default(), headers),
    };
    if !identity.is_authenticated() && !state.monitor.access.open {
        return Err((early, Refusal::Forbidden));
    }
    let query = MonitorQuery::new(pairs).map_err(|e| (early, e.into()))?;
    Ok(Look {
        format: format_of(&query, headers),
        query,
        now: panda_core::time::now(),
    })
}

fn refuse(format: Format, refusal: Refusal) -> Response {
    let (status, message) = match refusal {
        Refusal::Bad(m) => (StatusCode::BAD_REQUEST, m),
        Refusal::Forbidden => (
            StatusCode::FORBIDDEN,
            "the monitor needs a verified identity (a grid certificate, a proxy or a token); \
             the operator can open it to everyone with monitor_open"
                .to_string(),
        ),
        Refusal::NotFound(m) => (StatusCode::NOT_FOUND, m),
        Refusal::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database cannot answer now; try again later".to_string(),
        ),
    };
    match format {
        Format::Json => (status, axum::Json(json!({ "error": message }))).into_response(),
        Format::Html => {
            let mut page = Page::new(status.canonical_reason().unwrap_or("Error"), "");
            page.section("", Body::Error(message));
            (status, html(page)).into_response()
        }
    }
}

fn html(page: Page) -> Response {
    match page.render() {
        Ok(text) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            text,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "monitor: a page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page did not render").into_response()
        }
    }
}

fn answer(format: Format, data: impl FnOnce() -> Json, page: impl FnOnce() -> Page) -> Response {
    match format {
        Format::Json => axum::Json(data()).into_response(),
        Format::Html => html(page()),
    }
}

/// The common start of every handler.
macro_rules! look_or_refuse {
    ($state:expr, $identity:expr, $raw:expr, $headers:expr) => {
        match look(&$state, &$identity, $raw, &$headers) {
            Ok(look) => look,
            Err((format, refusal)) => return refuse(format, refusal),
        }
    };
}

/// The value of a result, or the handler answers its refusal (a `Refusal` or a
/// `ServiceError`) in the caller's format.
macro_rules! or_refuse {
    ($format:expr, $result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) => return refuse($format, Refusal::from(e)),
        }
    };
}

/// The one thing a service call found, or 404 with `missing`'s words.
fn one_or_404<T>(
    answer: Result<Option<T>, ServiceError>,
    missing: impl FnOnce() -> String,
) -> Result<T, Refusal> {
    match answer {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(Refusal::NotFound(missing())),
        Err(e) => Err(e.into()),
    }
}

fn no_log(panda_id: i64) -> String {
    format!("job {panda_id} has no log tarball on the local storage element")
}

/// A path's ID, or a 400 naming it.
fn path_id(what: &str, text: &str) -> Result<i64, Refusal> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            let shown: String = text.chars().take(40).collect();
            Refusal::Bad(format!("{what} {shown:?} is not a positive number"))
        })
}

/// A record's attributes as BigPanDA's dicts: lower-case column names, JSON values.
fn record_json<A: panda_core::AttrSet>(
    record: &Record<A>,
    fields: Option<&[String]>,
) -> Map<String, Json> {
    let mut out = Map::new();
    for (attribute, value) in record.iter() {
        let name = attribute.column();
        if fields.is_some_and(|f| !f.contains(&name)) {
            continue;
        }
        out.insert(name, value_json(value));
    }
    out
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::Int(Some(i)) => json!(i),
        Value::Float(Some(f)) => json!(f),
        Value::Text(Some(s)) => json!(s),
        Value::Time(Some(t)) => json!(t.format("%Y-%m-%dT%H:%M:%S").to_string()),
        _ => Json::Null,
    }
}

fn attribute_pairs<A: panda_core::AttrSet>(record: &Record<A>) -> Vec<(String, Cell)> {
    record
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(a, v): (&Attribute, &Value)| (a.name.to_string(), Cell::for_column(&a.column(), v)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Pages

async fn index(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    answer(
        look.format,
        || json!({ "pages": page::NAV.iter().map(|(_, h)| *h).collect::<Vec<_>>() }),
        || {
            let mut page = Page::new("PanDA", "/");
            page.section(
                "",
                Body::Links(
                    page::NAV
                        .iter()
                        .map(|(l, h)| (l.to_string(), h.to_string()))
                        .collect(),
                ),
            );
            page
        },
    )
}

/// The columns `/jobs/` shows, in order.
const JOB_LIST_COLUMNS: &[(&str, JobAttr)] = &[
    ("PandaID", JobAttr::PandaID),
    ("Task", JobAttr::jediTaskID),
    ("Owner", JobAttr::prodUserName),
    ("Label", JobAttr::prodSourceLabel),
    ("Status", JobAttr::jobStatus),
    ("Site", JobAttr::computingSite),
    ("Attempt", JobAttr::attemptNr),
    ("Created", JobAttr::creationTime),
    ("Modified", JobAttr::modificationTime),
    ("Transformation", JobAttr::transformation),
];

fn sort_name(attr: JobAttr) -> Option<&'static str> {
    Some(match attr {
        JobAttr::PandaID => "pandaid",
        JobAttr::jobStatus => "jobstatus",
        JobAttr::computingSite => "computingsite",
        JobAttr::prodUserName => "produsername",
        JobAttr::attemptNr => "attemptnr",
        JobAttr::creationTime => "creationtime",
        JobAttr::modificationTime => "modificationtime",
        _ => return None,
    })
}

/// `path?query` with `sortby` replaced.
fn sorted_link(path: &str, raw: &[(String, String)], sort: &str) -> String {
    let mut pairs: Vec<(String, String)> =
        raw.iter().filter(|(n, _)| n != "sortby").cloned().collect();
    pairs.push(("sortby".into(), sort.into()));
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

fn job_table(
    jobs: &[JobSpec],
    path: &str,
    query: &MonitorQuery,
    raw: &[(String, String)],
    shown: usize,
) -> Table {
    let current = query.get("sortby").unwrap_or("modificationtime-desc");
    let headers = JOB_LIST_COLUMNS
        .iter()
        .map(|(label, attr)| Header {
            label: label.to_string(),
            href: sort_name(*attr).map(|name| {
                let next = match current == format!("{name}-desc") || current == name {
                    true => format!("{name}-asc"),
                    false => format!("{name}-desc"),
                };
                sorted_link(path, raw, &next)
            }),
        })
        .collect();
    let rows = jobs
        .iter()
        .take(shown)
        .map(|job| {
            JOB_LIST_COLUMNS
                .iter()
                .map(|(_, attr)| {
                    let column = panda_core::job::JOB_ATTRIBUTES[attr.index()].column();
                    Cell::for_column(&column, job.get(*attr))
                })
                .collect()
        })
        .collect();
    let note = match jobs.len() > shown {
        true => format!(
            "{} of {} jobs shown; display_limit shows more, json lists all",
            shown,
            jobs.len()
        ),
        false => format!("{} jobs", jobs.len()),
    };
    Table {
        headers,
        rows,
        note,
    }
}

fn wants_metastruct(fields: &Option<Vec<String>>) -> bool {
    fields
        .as_ref()
        .is_some_and(|f| f.iter().any(|name| name == "metastruct"))
}

/// The jobs as BigPanDA lists them; with `fields`, only those keys, and `metastruct` (the
/// pilot's metadata as JSON, `{}` when it sent none or it is not JSON) when named.
fn jobs_json(view: &rules::JobsView, fields: Option<&[String]>) -> Json {
    let with_meta = fields.is_some_and(|f| f.iter().any(|n| n == "metastruct"));
    Json::Array(
        view.jobs
            .iter()
            .map(|job| {
                let mut row = record_json(&job.attrs, fields);
                if with_meta {
                    let meta = view
                        .metadata
                        .get(&job.panda_id())
                        .and_then(|text| serde_json::from_str::<Json>(text).ok())
                        .filter(Json::is_object)
                        .unwrap_or_else(|| json!({}));
                    row.insert("metastruct".into(), meta);
                }
                Json::Object(row)
            })
            .collect(),
    )
}

fn summary_json(view: &rules::JobsView) -> Json {
    Json::Array(
        view.summary
            .iter()
            .map(|(field, counts)| {
                json!({
                    "field": field,
                    "list": counts.iter().map(|(k, n)| json!({"kname": k, "kvalue": n})).collect::<Vec<_>>(),
                    "stats": {"sum": counts.iter().map(|(_, n)| n).sum::<i64>()},
                })
            })
            .collect(),
    )
}

fn errors_json(view: &rules::JobsView) -> Json {
    Json::Array(
        view.errors
            .iter()
            .map(|e| json!({"error": e.component, "codeval": e.code, "count": e.count, "diag": e.diag}))
            .collect(),
    )
}

fn jobs_sections(page: &mut Page, view: &rules::JobsView, table: Table) {
    let summary: Vec<(String, Cell)> = view
        .summary
        .iter()
        .filter(|(_, counts)| !counts.is_empty())
        .map(|(field, counts)| {
            let text = counts
                .iter()
                .take(12)
                .map(|(k, n)| format!("{k} ({n})"))
                .collect::<Vec<_>>()
                .join(", ");
            (field.to_string(), Cell::text(text))
        })
        .collect();
    if !summary.is_empty() {
        page.section("Summary", Body::Pairs(summary));
    }
    if !view.errors.is_empty() {
        let mut errors = Table::with_headers(&["Error", "Count", "Diagnostic"]);
        errors.rows = view
            .errors
            .iter()
            .map(|e| {
                vec![
                    Cell::text(format!("{}:{}", e.component, e.code)),
                    Cell::number(e.count),
                    Cell::text(e.diag.clone()),
                ]
            })
            .collect();
        page.section("Errors", Body::Table(errors));
    }
    page.section("Jobs", Body::Table(table));
}

fn raw_pairs(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .and_then(|r| serde_urlencoded::from_str(r).ok())
        .unwrap_or_default()
}

fn shown_rows(query: &MonitorQuery) -> usize {
    query
        .get("display_limit")
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(rules::DEFAULT_LIMIT)
        .clamp(1, 1000)
}

async fn jobs(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw.clone(), headers);
    let request = or_refuse!(look.format, rules::jobs_request(&look.query, look.now));
    let view = or_refuse!(
        look.format,
        state
            .service
            .monitor_jobs(&request.listing, wants_metastruct(&request.fields))
            .await
    );
    let pairs = raw_pairs(&raw);
    answer(
        look.format,
        || {
            json!({
                "selectionsummary": summary_json(&view),
                "jobs": jobs_json(&view, request.fields.as_deref()),
                "errsByCount": errors_json(&view),
            })
        },
        || {
            let mut page = Page::new("Jobs", "/jobs/");
            let window = match request.listing.since {
                Some(since) => format!("modified since {} UTC", since.format("%Y-%m-%d %H:%M")),
                None => "of any age".into(),
            };
            page.section(
                "",
                Body::Text(format!(
                    "Jobs {window}; the latest changed first unless sorted."
                )),
            );
            let table = job_table(
                &view.jobs,
                "/jobs/",
                &look.query,
                &pairs,
                shown_rows(&look.query),
            );
            jobs_sections(&mut page, &view, table);
            page
        },
    )
}

async fn job(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let panda_id = or_refuse!(look.format, path_id("the PandaID", &id));
    let view = or_refuse!(
        look.format,
        one_or_404(state.service.monitor_job(panda_id).await, || format!(
            "no job {panda_id}"
        ))
    );
    let panda_id = view.job.panda_id();
    answer(
        look.format,
        || {
            let mut job = record_json(&view.job.attrs, None);
            job.remove("jobparameters");
            job.remove("metadata");
            json!({
                "job": job,
                "files": view.job.files.iter().map(|f| Json::Object(record_json(f, None))).collect::<Vec<_>>(),
                "dsfiles": [],
                "statuslog": view.status_log.iter().map(|e| json!({
                    "modificationtime": e.time.map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string()),
                    "jobstatus": e.status, "computingsite": e.site, "modificationhost": e.host,
                })).collect::<Vec<_>>(),
                "retries": view.retries,
            })
        },
        || {
            let mut page = Page::new(format!("Job {panda_id}"), "/jobs/");
            let status = view.job.get_str(JobAttr::jobStatus).unwrap_or_default();
            let mut head = vec![
                ("Status".to_string(), Cell::state(status)),
                (
                    "Site".to_string(),
                    Cell::for_column("computingsite", view.job.get(JobAttr::computingSite)),
                ),
                (
                    "Task".to_string(),
                    Cell::for_column("jeditaskid", view.job.get(JobAttr::jediTaskID)),
                ),
                (
                    "Owner".to_string(),
                    Cell::for_column("produsername", view.job.get(JobAttr::prodUserName)),
                ),
            ];
            for (component, code, diag) in rules::job_errors(&view.job) {
                head.push((
                    format!("{component} error"),
                    Cell::text(format!("{code}: {diag}")),
                ));
            }
            page.section("", Body::Pairs(head));
            let mut log = Table::with_headers(&["Time (UTC)", "Status", "Site", "Host"]);
            log.rows = view
                .status_log
                .iter()
                .map(|e| {
                    vec![
                        Cell::text(
                            e.time
                                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                                .unwrap_or_default(),
                        ),
                        Cell::state(&e.status),
                        Cell::for_column("computingsite", &Value::Text(Some(e.site.clone()))),
                        Cell::text(e.host.clone()),
                    ]
                })
                .collect();
            if log.rows.is_empty() {
                log.note = "no status changes recorded".into();
            }
            page.section("Status log", Body::Table(log));
            let mut files =
                Table::with_headers(&["LFN", "Type", "Status", "Scope", "Dataset", "Size", "GUID"]);
            files.rows = view
                .job
                .files
                .iter()
                .map(|f| {
                    let text = |a: FileAttr| Cell::text(f.get(a).render().replace("NULL", ""));
                    vec![
                        text(FileAttr::lfn),
                        text(FileAttr::r#type),
                        Cell::state(f.get_str(FileAttr::status).unwrap_or_default()),
                        text(FileAttr::scope),
                        text(FileAttr::dataset),
                        Cell::for_column("fsize", f.get(FileAttr::fsize)),
                        text(FileAttr::GUID),
                    ]
                })
                .collect();
            page.section("Files", Body::Table(files));
            match &view.log {
                Some(log) if log.path.is_some() => page.section(
                    "Log tarball",
                    Body::Links(vec![
                        (
                            format!("{} ({} bytes): contents", log.lfn, log.size.unwrap_or(0)),
                            format!("/job/{panda_id}/log/"),
                        ),
                        ("download".into(), format!("/job/{panda_id}/log/download")),
                    ]),
                ),
                Some(log) => page.section(
                    "Log tarball",
                    Body::Text(format!("{} is not on the local storage element", log.lfn)),
                ),
                None => page.section("Log tarball", Body::Text("the job has no log file".into())),
            };
            if !view.retries.is_empty() {
                page.section(
                    "Retries",
                    Body::Links(
                        view.retries
                            .iter()
                            .map(|id| (id.to_string(), format!("/job/{id}/")))
                            .collect(),
                    ),
                );
            }
            let mut attrs = attribute_pairs(&view.job.attrs);
            attrs.retain(|(name, _)| name != "jobParameters" && name != "metadata");
            page.section("Attributes", Body::Pairs(attrs));
            if let Some(parameters) = view.job.get_str(JobAttr::jobParameters) {
                page.section("Job parameters", Body::Pre(parameters.to_string()));
            }
            page
        },
    )
}

async fn job_log(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let panda_id = or_refuse!(look.format, path_id("the PandaID", &id));
    let (log, entries) = or_refuse!(
        look.format,
        one_or_404(state.service.log_listing(panda_id).await, || no_log(
            panda_id
        ))
    );
    answer(
        look.format,
        || json!({"lfn": log.lfn, "scope": log.scope, "size": log.size, "files": entries.iter().map(|(n, s)| json!({"name": n, "size": s})).collect::<Vec<_>>()}),
        || {
            let mut page = Page::new(format!("Log of job {panda_id}"), "/jobs/");
            page.section(
                "",
                Body::Links(vec![
                    (format!("job {panda_id}"), format!("/job/{panda_id}/")),
                    (
                        format!("download {}", log.lfn),
                        format!("/job/{panda_id}/log/download"),
                    ),
                ]),
            );
            let mut table = Table::with_headers(&["File", "Size"]);
            table.rows = entries
                .iter()
                .map(|(n, s)| vec![Cell::text(n.clone()), Cell::number(*s as i64)])
                .collect();
            if entries.len() >= rules::MAX_LOG_ENTRIES {
                table.note = format!("the first {} entries", rules::MAX_LOG_ENTRIES);
            }
            page.section("Contents", Body::Table(table));
            page
        },
    )
}

async fn job_log_download(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let panda_id = or_refuse!(look.format, path_id("the PandaID", &id));
    let log = or_refuse!(
        look.format,
        one_or_404(state.service.log_file(panda_id).await, || no_log(panda_id))
    );
    let Some(path) = log.path else {
        return refuse(look.format, Refusal::NotFound("no log tarball".into()));
    };
    use tower::ServiceExt;
    let served = tower_http::services::ServeFile::new(&path)
        .oneshot(request)
        .await;
    match served {
        Ok(response) => {
            let mut response = response.into_response();
            let name: String = log
                .lfn
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                .collect();
            if let Ok(value) = format!("attachment; filename=\"{name}\"").parse() {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "monitor: serving a log tarball failed");
            refuse(look.format, Refusal::Unavailable)
        }
    }
}

/// The columns `/tasks/` shows.
const TASK_LIST_COLUMNS: &[(&str, TaskAttr)] = &[
    ("Task", TaskAttr::jediTaskID),
    ("Name", TaskAttr::taskName),
    ("Status", TaskAttr::status),
    ("Owner", TaskAttr::userName),
    ("Type", TaskAttr::taskType),
    ("Site", TaskAttr::site),
    ("Created", TaskAttr::creationDate),
    ("Modified", TaskAttr::modificationTime),
];

fn task_json(view: &TaskView, with_datasets: bool) -> Json {
    let mut task = record_json(&view.task, None);
    let p = &view.progress;
    task.insert(
        "dsinfo".into(),
        json!({
            "nfiles": p.nfiles, "nfilesfinished": p.nfilesfinished, "nfilesfailed": p.nfilesfailed,
            "pctfinished": p.pctfinished, "pctfailed": p.pctfailed,
        }),
    );
    if with_datasets {
        task.insert(
            "datasets".into(),
            Json::Array(
                view.datasets
                    .iter()
                    .map(|d| Json::Object(record_json(d, None)))
                    .collect(),
            ),
        );
    }
    Json::Object(task)
}

fn task_table(views: &[TaskView], shown: usize) -> Table {
    let mut labels: Vec<&str> = TASK_LIST_COLUMNS.iter().map(|(l, _)| *l).collect();
    labels.insert(3, "Done");
    let mut table = Table::with_headers(&labels);
    table.rows = views
        .iter()
        .take(shown)
        .map(|view| {
            let mut row: Vec<Cell> = TASK_LIST_COLUMNS
                .iter()
                .map(|(_, attr)| {
                    let column = panda_core::task::TASK_ATTRIBUTES[attr.index()].column();
                    Cell::for_column(&column, view.task.get(*attr))
                })
                .collect();
            row.insert(
                3,
                Cell {
                    text: format!("{}%", view.progress.pctfinished),
                    class: "num".into(),
                    href: None,
                },
            );
            row
        })
        .collect();
    table.note = format!("{} tasks", views.len());
    table
}

async fn tasks(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let listing = or_refuse!(look.format, rules::tasks_request(&look.query, look.now));
    let views = or_refuse!(look.format, state.service.monitor_tasks(&listing).await);
    let with_datasets = look.query.flag("datasets");
    answer(
        look.format,
        || Json::Array(views.iter().map(|v| task_json(v, with_datasets)).collect()),
        || {
            let mut page = Page::new("Tasks", "/tasks/");
            page.section(
                "Tasks",
                Body::Table(task_table(&views, shown_rows(&look.query))),
            );
            page
        },
    )
}

/// Hour buckets from `since` to `now` and the points of a plot of `hourly`.
fn hourly_plot(
    title: &str,
    hourly: &[rules::HourCount],
    since: NaiveDateTime,
    now: NaiveDateTime,
) -> Plot {
    let start = since
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(since);
    let mut buckets = Vec::new();
    let mut t = start;
    while t <= now && buckets.len() < 24 * 31 {
        buckets.push(t);
        t += Duration::hours(1);
    }
    let labels: Vec<String> = buckets
        .iter()
        .map(|b| b.format("%m-%d %H:00").to_string())
        .collect();
    let points: Vec<(usize, String, i64)> = hourly
        .iter()
        .filter_map(|h| {
            let i = buckets.iter().position(|b| *b == h.hour)?;
            Some((i, h.status.clone(), h.count))
        })
        .collect();
    let total: i64 = points.iter().map(|p| p.2).sum();
    let mut by_state: Vec<(String, i64)> = Vec::new();
    for (_, s, n) in &points {
        match by_state.iter_mut().find(|(k, _)| k == s) {
            Some(e) => e.1 += n,
            None => by_state.push((s.clone(), *n)),
        }
    }
    let caption = match total {
        0 => format!(
            "{title}: no jobs ended since {} UTC",
            start.format("%Y-%m-%d %H:00")
        ),
        _ => format!(
            "{title} since {} UTC: {}",
            start.format("%Y-%m-%d %H:00"),
            by_state
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Plot {
        svg: stacked_bars(title, &labels, &points),
        caption,
    }
}

async fn task(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let task_id = or_refuse!(look.format, path_id("the task ID", &id));
    let found = or_refuse!(
        look.format,
        one_or_404(
            state.service.monitor_task(task_id, look.now).await,
            || format!("no task {task_id}")
        )
    );
    answer(
        look.format,
        || {
            json!({
                "task": task_json(&found.view, false),
                "datasets": found.view.datasets.iter().map(|d| Json::Object(record_json(d, None))).collect::<Vec<_>>(),
                "jobsummary": found.job_counts.iter().map(|(s, n)| json!({"name": s, "count": n})).collect::<Vec<_>>(),
                "statuslog": found.status_log.iter().map(|(t, s, r)| json!({
                    "modificationtime": t.map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string()), "status": s, "reason": r,
                })).collect::<Vec<_>>(),
            })
        },
        || {
            let task = &found.view.task;
            let name = task.get_str(TaskAttr::taskName).unwrap_or_default();
            let mut page = Page::new(format!("Task {task_id}"), "/tasks/");
            page.section(
                "",
                Body::Pairs(vec![
                    ("Name".into(), Cell::text(name)),
                    (
                        "Status".into(),
                        Cell::state(task.get_str(TaskAttr::status).unwrap_or_default()),
                    ),
                    (
                        "Owner".into(),
                        Cell::for_column("username", task.get(TaskAttr::userName)),
                    ),
                    (
                        "Done".into(),
                        Cell::text(format!(
                            "{}% of {} files ({}% failed)",
                            found.view.progress.pctfinished,
                            found.view.progress.nfiles,
                            found.view.progress.pctfailed
                        )),
                    ),
                ]),
            );
            let mut datasets = Table::with_headers(&[
                "Dataset", "Type", "Stream", "Status", "Files", "Finished", "Failed", "Site",
            ]);
            datasets.rows = found
                .view
                .datasets
                .iter()
                .map(|d| {
                    let text = |a: DatasetAttr| Cell::text(d.get_str(a).unwrap_or_default());
                    let n = |a: DatasetAttr| Cell::number(d.get_i64(a).unwrap_or(0));
                    vec![
                        text(DatasetAttr::datasetName),
                        text(DatasetAttr::r#type),
                        text(DatasetAttr::streamName),
                        Cell::state(d.get_str(DatasetAttr::status).unwrap_or_default()),
                        n(DatasetAttr::nFiles),
                        n(DatasetAttr::nFilesFinished),
                        n(DatasetAttr::nFilesFailed),
                        text(DatasetAttr::site),
                    ]
                })
                .collect();
            page.section("Datasets", Body::Table(datasets));
            let mut jobs = Table::with_headers(&["State", "Jobs"]);
            jobs.rows = found
                .job_counts
                .iter()
                .map(|(s, n)| {
                    vec![
                        Cell::link(
                            s.clone(),
                            format!("/jobs/?jeditaskid={task_id}&jobstatus={}", page::encode(s)),
                        ),
                        Cell::number(*n),
                    ]
                })
                .collect();
            page.section("Jobs by state", Body::Table(jobs));
            page.section(
                "",
                Body::Links(vec![(
                    "all its jobs".into(),
                    format!("/jobs/?jeditaskid={task_id}"),
                )]),
            );
            let since = task
                .get(TaskAttr::creationDate)
                .as_time()
                .unwrap_or(look.now - Duration::hours(rules::PLOT_HOURS));
            let since = since.max(look.now - Duration::days(rules::TASK_PLOT_DAYS));
            page.section(
                "Jobs ended per hour",
                Body::Plot(hourly_plot(
                    &format!("Jobs of task {task_id} ended per hour"),
                    &found.hourly,
                    since,
                    look.now,
                )),
            );
            let mut log = Table::with_headers(&["Time (UTC)", "Status", "Reason"]);
            log.rows = found
                .status_log
                .iter()
                .map(|(t, s, r)| {
                    vec![
                        Cell::text(
                            t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                                .unwrap_or_default(),
                        ),
                        Cell::state(s),
                        Cell::text(r.clone()),
                    ]
                })
                .collect();
            page.section("Status log", Body::Table(log));
            page.section("Attributes", Body::Pairs(attribute_pairs(task)));
            page
        },
    )
}

fn window_of(look: &Look, default_hours: i64) -> Result<Duration, Refusal> {
    Ok(look
        .query
        .window()?
        .unwrap_or(Duration::hours(default_hours)))
}

/// Refuses every parameter but the presentation ones.
fn no_filters(look: &Look) -> Result<(), Refusal> {
    rules::presentation_only(&look.query).map_err(Refusal::from)
}

async fn errors(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let window = or_refuse!(
        look.format,
        no_filters(&look).and_then(|()| window_of(&look, rules::DEFAULT_JOB_HOURS))
    );
    let since = look.now - window;
    let groups = or_refuse!(
        look.format,
        state.service.monitor_errors(window, look.now).await
    );
    answer(
        look.format,
        || {
            json!({"errors": groups.iter().map(|g| json!({
                "computingsite": g.site,
                "codes": g.codes.iter().map(|(c, v, d)| json!({"error": c, "codeval": v, "diag": d})).collect::<Vec<_>>(),
                "count": g.count,
            })).collect::<Vec<_>>()})
        },
        || {
            let mut page = Page::new("Errors", "/errors/");
            page.section(
                "",
                Body::Text(format!(
                    "Failed jobs modified since {} UTC, by site and error codes.",
                    since.format("%Y-%m-%d %H:%M")
                )),
            );
            let mut table = Table::with_headers(&["Site", "Errors", "Diagnostic", "Jobs"]);
            table.rows = groups
                .iter()
                .map(|g| {
                    let codes = g
                        .codes
                        .iter()
                        .map(|(c, v, _)| format!("{c}:{v}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let diag = g
                        .codes
                        .first()
                        .map(|(_, _, d)| d.clone())
                        .unwrap_or_default();
                    vec![
                        Cell::for_column("computingsite", &Value::Text(Some(g.site.clone()))),
                        Cell::text(if codes.is_empty() {
                            "no code".to_string()
                        } else {
                            codes
                        }),
                        Cell::text(diag),
                        Cell::link(
                            g.count.to_string(),
                            format!(
                                "/jobs/?computingsite={}&jobstatus=failed",
                                page::encode(&g.site)
                            ),
                        ),
                    ]
                })
                .collect();
            if table.rows.is_empty() {
                table.note = "no failed jobs".into();
            }
            page.section("Failed jobs", Body::Table(table));
            page
        },
    )
}

/// The states `/dash/` shows as columns, in a job's order.
const DASH_STATES: &[&str] = &[
    "defined",
    "assigned",
    "waiting",
    "activated",
    "sent",
    "starting",
    "running",
    "holding",
    "transferring",
    "merging",
    "finished",
    "failed",
    "cancelled",
    "closed",
];

async fn dash(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let window = or_refuse!(
        look.format,
        no_filters(&look).and_then(|()| window_of(&look, rules::DEFAULT_JOB_HOURS))
    );
    let since = look.now - window;
    let counts = or_refuse!(
        look.format,
        state.service.site_state_counts(window, look.now).await
    );
    let mut sites: Vec<String> = counts.iter().map(|c| c.site.clone()).collect();
    sites.dedup();
    answer(
        look.format,
        || {
            json!({"sites": sites.iter().map(|s| {
                let states: Map<String, Json> = counts.iter().filter(|c| &c.site == s).map(|c| (c.status.clone(), json!(c.count))).collect();
                json!({"computingsite": s, "states": states})
            }).collect::<Vec<_>>()})
        },
        || {
            let mut page = Page::new("Jobs by site and state", "/dash/");
            page.section(
                "",
                Body::Text(format!(
                    "Active jobs, and jobs archived since {} UTC.",
                    since.format("%Y-%m-%d %H:%M")
                )),
            );
            let mut labels = vec!["Site"];
            labels.extend_from_slice(DASH_STATES);
            labels.push("All");
            let mut table = Table::with_headers(&labels);
            table.rows = sites
                .iter()
                .map(|s| {
                    let mut row = vec![Cell::for_column(
                        "computingsite",
                        &Value::Text(Some(s.clone())),
                    )];
                    let mut all = 0;
                    for state in DASH_STATES {
                        let n: i64 = counts
                            .iter()
                            .filter(|c| &c.site == s && c.status == *state)
                            .map(|c| c.count)
                            .sum();
                        all += n;
                        row.push(match n {
                            0 => Cell::default(),
                            n => Cell {
                                class: "num".into(),
                                ..Cell::link(
                                    n.to_string(),
                                    format!(
                                        "/jobs/?computingsite={}&jobstatus={state}",
                                        page::encode(s)
                                    ),
                                )
                            },
                        });
                    }
                    row.push(Cell::number(all));
                    row
                })
                .collect();
            page.section("", Body::Table(table));
            page
        },
    )
}

async fn sites(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    if let Err(r) = no_filters(&look) {
        return refuse(look.format, r);
    }
    let (queues, counts) = match (
        state.service.monitor_sites().await,
        state
            .service
            .site_state_counts(Duration::hours(rules::DEFAULT_JOB_HOURS), look.now)
            .await,
    ) {
        (Ok(q), Ok(c)) => (q, c),
        (Err(e), _) | (_, Err(e)) => return refuse(look.format, e.into()),
    };
    let field = |record: &Json, key: &str| {
        record
            .get(key)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string()
    };
    answer(
        look.format,
        || {
            Json::Array(queues.iter().map(|(name, record)| json!({
                "siteid": name, "status": field(record, "status"), "type": field(record, "type"),
                "cloud": field(record, "cloud"), "atlas_site": field(record, "atlas_site"),
                "jobs": counts.iter().filter(|c| &c.site == name).map(|c| (c.status.clone(), json!(c.count))).collect::<Map<String, Json>>(),
            })).collect())
        },
        || {
            let mut page = Page::new("Sites", "/sites/");
            let mut table = Table::with_headers(&[
                "Queue",
                "Status",
                "Type",
                "Site",
                "Running",
                "Activated",
                "Finished",
                "Failed",
            ]);
            table.rows = queues
                .iter()
                .map(|(name, record)| {
                    let n = |s: &str| {
                        Cell::number(
                            counts
                                .iter()
                                .filter(|c| &c.site == name && c.status == s)
                                .map(|c| c.count)
                                .sum(),
                        )
                    };
                    vec![
                        Cell::for_column("computingsite", &Value::Text(Some(name.clone()))),
                        Cell::state(&field(record, "status")),
                        Cell::text(field(record, "type")),
                        Cell::text(field(record, "atlas_site")),
                        n("running"),
                        n("activated"),
                        n("finished"),
                        n("failed"),
                    ]
                })
                .collect();
            table.note = format!(
                "{} queues; finished and failed jobs of the last {} hours",
                queues.len(),
                rules::DEFAULT_JOB_HOURS
            );
            page.section("", Body::Table(table));
            page
        },
    )
}

async fn site(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    if let Err(r) = no_filters(&look) {
        return refuse(look.format, r);
    }
    if name.chars().count() > rules::MAX_VALUE_LEN {
        return refuse(
            look.format,
            Refusal::Bad(format!(
                "a queue name of {} characters; at most {}",
                name.chars().count(),
                rules::MAX_VALUE_LEN
            )),
        );
    }
    let found = or_refuse!(
        look.format,
        one_or_404(
            state.service.monitor_site(&name, look.now).await,
            || format!("no queue {name:?}")
        )
    );
    answer(
        look.format,
        || json!({"site": found.record, "jobs": found.counts.iter().map(|(s, n)| (s.clone(), json!(n))).collect::<Map<String, Json>>()}),
        || {
            let mut page = Page::new(format!("Queue {}", found.name), "/sites/");
            let mut jobs = Table::with_headers(&["State", "Jobs"]);
            jobs.rows = found
                .counts
                .iter()
                .map(|(s, n)| {
                    vec![
                        Cell::link(
                            s.clone(),
                            format!(
                                "/jobs/?computingsite={}&jobstatus={}",
                                page::encode(&found.name),
                                page::encode(s)
                            ),
                        ),
                        Cell::number(*n),
                    ]
                })
                .collect();
            page.section("Jobs by state", Body::Table(jobs));
            let since = look.now - Duration::hours(rules::PLOT_HOURS);
            page.section(
                "Jobs ended per hour",
                Body::Plot(hourly_plot(
                    &format!("Jobs of {} ended per hour", found.name),
                    &found.hourly,
                    since,
                    look.now,
                )),
            );
            page.section(
                "",
                Body::Links(vec![(
                    "its workers".into(),
                    format!(
                        "/harvester/workers/?computingsite={}",
                        page::encode(&found.name)
                    ),
                )]),
            );
            let pretty = serde_json::to_string_pretty(&found.record).unwrap_or_default();
            page.section("Queue record", Body::Pre(pretty));
            page
        },
    )
}

async fn workers(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw, headers);
    let rows = or_refuse!(
        look.format,
        state.service.monitor_workers(&look.query, look.now).await
    );
    answer(
        look.format,
        || json!({"workers": rows.rows.iter().map(|row| rows.columns.iter().zip(row).map(|(c, v)| (c.to_string(), value_json(v))).collect::<Map<String, Json>>()).collect::<Vec<_>>()}),
        || {
            let mut page = Page::new("Harvester workers", "/harvester/workers/");
            let mut table = Table::with_headers(&rows.columns);
            table.rows = rows
                .rows
                .iter()
                .map(|row| {
                    rows.columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| Cell::for_column(c, v))
                        .collect()
                })
                .collect();
            table.note = format!("{} workers", rows.rows.len());
            page.section("", Body::Table(table));
            page
        },
    )
}

async fn user(
    State(state): State<AppState>,
    Extension(identity): Extension<Arc<Identity>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    let look = look_or_refuse!(state, identity, raw.clone(), headers);
    if name.chars().count() > rules::MAX_VALUE_LEN {
        return refuse(
            look.format,
            Refusal::Bad(format!(
                "a user name of {} characters; at most {}",
                name.chars().count(),
                rules::MAX_VALUE_LEN
            )),
        );
    }
    let (jobs_request, tasks_request) = or_refuse!(
        look.format,
        rules::user_requests(&look.query, &name, look.now)
    );
    let (view, tasks) = match (
        state
            .service
            .monitor_jobs(
                &jobs_request.listing,
                wants_metastruct(&jobs_request.fields),
            )
            .await,
        state.service.monitor_tasks(&tasks_request).await,
    ) {
        (Ok(v), Ok(t)) => (v, t),
        (Err(e), _) | (_, Err(e)) => return refuse(look.format, e.into()),
    };
    let pairs = raw_pairs(&raw);
    answer(
        look.format,
        || {
            json!({
                "user": name,
                "jobs": jobs_json(&view, jobs_request.fields.as_deref()),
                "tasks": tasks.iter().map(|t| task_json(t, false)).collect::<Vec<_>>(),
            })
        },
        || {
            let mut page = Page::new(format!("User {name}"), "");
            page.section(
                "Tasks",
                Body::Table(task_table(&tasks, shown_rows(&look.query))),
            );
            let path = format!("/user/{}/", page::encode(&name));
            let table = job_table(
                &view.jobs,
                &path,
                &look.query,
                &pairs,
                shown_rows(&look.query),
            );
            jobs_sections(&mut page, &view, table);
            page
        },
    )
}
