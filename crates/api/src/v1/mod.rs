//! The JSON API, `/api/<version>/<module>/<function>` (`v1`, or `latest` for `v1`).
//!
//! Every function answers upstream's envelope `{"success": bool, "message": str, "data": ...}`,
//! with HTTP 200 even when `success` is false; an unknown function is 403 as upstream. Each
//! function is declared once in [`ENDPOINTS`] with its HTTP method, who may call it and its
//! arguments; [`call`] enforces all three before the handler runs, so handlers read
//! arguments of the declared types. GET arguments come from the query string (or, without
//! one, from a body of form fields or JSON, as Harvester sends them), POST arguments from a
//! JSON object body (gzip accepted with or without `Content-Encoding`).
//!
//! The envelope is JSON when the client asks for JSON (`Accept` or `Content-Type` listing
//! `application/json`), and otherwise upstream's Python rendering of the same dict, which is
//! what upstream sends to such clients.

mod args;
mod creds;
mod errors;
mod event;
mod file_server;
mod harvester;
mod job;
mod pilot;
mod statistics;
mod system;
mod task;
mod workflow;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use panda_core::identity::Identity;
use panda_core::{AttrSet, Record, Value};
use panda_service::statistics::JobStatistics;
use serde::Serialize;
use serde_json::Value as Json;

use crate::body::{read_body, BodyError};
use crate::forbidden_method;
use crate::identity::ClientAddr;
use crate::python::python_repr;
use crate::AppState;
use args::{opt, req, validate, ArgsExt, Param, Ty, ANY_KEYWORD};
pub(crate) use job::{decode_jobs, job_dict as job_description};

/// What a v1 handler gets.
pub(crate) struct Call {
    pub method: Method,
    pub identity: Arc<Identity>,
    pub peer: Option<SocketAddr>,
    /// The arguments, validated against the function's declaration.
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

    /// Success with a message and no data.
    pub fn ok_with(message: impl Into<String>) -> Envelope {
        Envelope {
            success: true,
            message: message.into(),
            data: Json::Null,
        }
    }

    /// The envelope as JSON, or as upstream's Python `str()` of the dict.
    pub fn into_response_as(self, json: bool) -> Response {
        if json {
            let body = serde_json::to_string(&self).unwrap_or_else(|_| {
                r#"{"success":false,"message":"encoding error","data":null}"#.into()
            });
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        } else {
            let dict = serde_json::json!({
                "success": self.success, "message": self.message, "data": self.data,
            });
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                python_repr(&dict),
            )
                .into_response()
        }
    }
}

/// A column value as upstream's JSON encoder writes it: NULL is `null`, a time is
/// `{"__datetime__": "<Python isoformat>"}`, numbers are numbers.
pub(crate) fn value_json(value: &Value) -> Json {
    match value {
        Value::Time(Some(t)) => {
            let iso = if t.and_utc().timestamp_subsec_micros() == 0 {
                t.format("%Y-%m-%dT%H:%M:%S").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
            };
            serde_json::json!({ "__datetime__": iso })
        }
        other if other.is_null() => Json::Null,
        other => crate::job_dict::attr_json(other),
    }
}

/// A record as a dict of attribute names to [`value_json`] values.
pub(crate) fn record_json<A: AttrSet>(record: &Record<A>) -> Json {
    Json::Object(
        record
            .iter()
            .map(|(attr, v)| (attr.name.to_string(), value_json(v)))
            .collect(),
    )
}

/// Which HTTP methods a function takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Any,
}

/// Who may call a function (upstream's `secure` and `production` flags; `TaskOwner` is
/// secure, and the handler checks that the caller owns the task or has the production role).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Open,
    Secure,
    Production,
    TaskOwner,
}

/// One function of the API: its method, its access rule and its arguments, declared here so
/// that the table can be read against upstream's (api.md §7.2).
pub(crate) struct Endpoint {
    pub module: &'static str,
    pub function: &'static str,
    pub verb: Verb,
    pub access: Access,
    pub params: &'static [Param],
    handler: Handle,
}

type Handled<'a, T = Envelope> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
/// A function's handler: its validated call in, its envelope out.
type Handler = for<'a> fn(&'a AppState, &'a Call) -> Handled<'a>;
/// A handler that answers in its own form (a file's text, not an envelope).
type ResponseHandler = for<'a> fn(&'a AppState, &'a Call) -> Handled<'a, Response>;
/// A handler that reads the request body itself (an upload, streamed to disk).
type BodyHandler = for<'a> fn(&'a AppState, &'a Call, Request) -> Handled<'a, Response>;

/// How a function is answered.
#[derive(Clone, Copy)]
pub(crate) enum Handle {
    Envelope(Handler),
    Response(ResponseHandler),
    Body(BodyHandler),
}

/// A [`Handler`] from an `async fn(&AppState, &Call) -> Envelope` (or a closure calling one).
macro_rules! handler {
    ($f:expr) => {{
        fn handle<'a>(state: &'a AppState, call: &'a Call) -> Handled<'a> {
            Box::pin(($f)(state, call))
        }
        Handle::Envelope(handle as Handler)
    }};
    (response $f:expr) => {{
        fn handle<'a>(state: &'a AppState, call: &'a Call) -> Handled<'a, Response> {
            Box::pin(($f)(state, call))
        }
        Handle::Response(handle as ResponseHandler)
    }};
    (body $f:expr) => {{
        fn handle<'a>(
            state: &'a AppState,
            call: &'a Call,
            request: Request,
        ) -> Handled<'a, Response> {
            Box::pin(($f)(state, call, request))
        }
        Handle::Body(handle as BodyHandler)
    }};
}

const fn ep(
    module: &'static str,
    function: &'static str,
    verb: Verb,
    access: Access,
    params: &'static [Param],
    handler: Handle,
) -> Endpoint {
    Endpoint {
        module,
        function,
        verb,
        access,
        params,
        handler,
    }
}

use Access::{Open, Production, Secure, TaskOwner};
use Ty::{Bool, Dict, DictOrStr, Float, Int, IntList, List, Str, StrList};
use Verb::{Get, Post};

const TIMEOUT: Param = opt("timeout", Int);

/// Every function served. Anything else under `/api/v1` is 403, as upstream.
pub(crate) const ENDPOINTS: &[Endpoint] = &[
    ep(
        "system",
        "is_alive",
        Verb::Any,
        Open,
        &[],
        handler!(|_, _| async { system::is_alive() }),
    ),
    ep(
        "system",
        "get_attributes",
        Verb::Any,
        Secure,
        &[opt(ANY_KEYWORD, Ty::Any)],
        handler!(|_, call| async move { system::get_attributes(call) }),
    ),
    ep(
        "system",
        "get_voms_attributes",
        Get,
        Secure,
        &[],
        handler!(|_, call| async move { system::get_voms_attributes(call) }),
    ),
    ep(
        "system",
        "get_user_attributes",
        Get,
        Secure,
        &[],
        handler!(|_, call| async move { system::get_user_attributes(call) }),
    ),
    // creds: users' secrets, and what operators register (panda_service::credentials)
    ep(
        "creds",
        "set_user_secrets",
        Post,
        Secure,
        &[opt("key", Str), opt("value", Str)],
        handler!(creds::set_user_secrets),
    ),
    ep(
        "creds",
        "get_user_secrets",
        Get,
        Secure,
        &[opt("keys", StrList)],
        handler!(creds::get_user_secrets),
    ),
    ep(
        "creds",
        "get_key_pair",
        Get,
        Secure,
        &[req("public_key_name", Str), req("private_key_name", Str)],
        handler!(creds::get_key_pair),
    ),
    ep(
        "creds",
        "get_proxy",
        Get,
        Secure,
        &[opt("role", Str), opt("dn", Str)],
        handler!(creds::get_proxy),
    ),
    ep(
        "creds",
        "get_access_token",
        Get,
        Secure,
        &[req("client_name", Str), opt("token_key", Str)],
        handler!(creds::get_access_token),
    ),
    ep(
        "creds",
        "get_token_key",
        Get,
        Secure,
        &[req("client_name", Str)],
        handler!(creds::get_token_key),
    ),
    // async_process: no asynchronous workers behind this server
    ep(
        "async_process",
        "submit_grep_request",
        Post,
        Secure,
        &[
            req("pattern", Str),
            req("log_filename", Str),
            opt("service_name", Str),
            opt("machine_name", Str),
        ],
        handler!(|_, call| async move { system::no_async_workers(call) }),
    ),
    ep(
        "async_process",
        "submit_sleep_echo_request",
        Post,
        Production,
        &[
            req("service_name", Str),
            req("message", Str),
            opt("seconds", Int),
        ],
        handler!(|_, call| async move { system::no_async_workers(call) }),
    ),
    ep(
        "async_process",
        "get_result",
        Get,
        Secure,
        &[req("request_id", Str)],
        handler!(|_, call| async move { system::async_result(call) }),
    ),
    // data_carousel: no data carousel behind this server
    ep(
        "data_carousel",
        "change_staging_destination",
        Post,
        Production,
        &[opt("request_id", Int), opt("dataset", Str)],
        handler!(|_, call| async move { system::no_data_carousel(call) }),
    ),
    ep(
        "data_carousel",
        "change_staging_source",
        Post,
        Production,
        &[
            opt("request_id", Int),
            opt("dataset", Str),
            opt("cancel_fts", Bool),
            opt("change_src_expr", Bool),
            opt("source_rse", Str),
        ],
        handler!(|_, call| async move { system::no_data_carousel(call) }),
    ),
    ep(
        "data_carousel",
        "force_to_staging",
        Post,
        Production,
        &[opt("request_id", Int), opt("dataset", Str)],
        handler!(|_, call| async move { system::no_data_carousel(call) }),
    ),
    ep(
        "data_carousel",
        "retire_unused",
        Post,
        Production,
        &[opt("request_id", Int), opt("dataset", Str)],
        handler!(|_, call| async move { system::no_data_carousel(call) }),
    ),
    // event: the event service (panda_service::events; the role is the service's check)
    ep(
        "event",
        "acquire_event_ranges",
        Post,
        Secure,
        &[
            opt("job_id", Int),
            opt("pandaID", Int),
            opt("jobset_id", Int),
            opt("jobsetID", Int),
            opt("task_id", Int),
            opt("taskID", Int),
            opt("n_ranges", Int),
            opt("nRanges", Int),
            opt("timeout", Int),
            opt("scattered", Bool),
            opt("segment_id", Int),
        ],
        handler!(event::acquire_event_ranges),
    ),
    ep(
        "event",
        "update_event_ranges",
        Post,
        Secure,
        &[
            req("event_ranges", Str),
            opt("timeout", Int),
            opt("version", Int),
        ],
        handler!(event::update_event_ranges),
    ),
    ep(
        "event",
        "update_single_event_range",
        Post,
        Secure,
        &[
            req("event_range_id", Str),
            req("event_range_status", Str),
            opt("core_count", Int),
            opt("cpu_consumption_time", Float),
            opt("object_store_id", Int),
            opt("timeout", Int),
        ],
        handler!(event::update_single_event_range),
    ),
    ep(
        "event",
        "get_available_event_range_count",
        Get,
        Secure,
        &[
            opt("job_id", Int),
            opt("jobset_id", Int),
            opt("jobsetID", Int),
            opt("task_id", Int),
            opt("taskID", Int),
            opt("timeout", Int),
        ],
        handler!(event::get_available_event_range_count),
    ),
    ep(
        "event",
        "get_event_range_statuses",
        Get,
        Secure,
        &[req("job_task_ids", Ty::Any)],
        handler!(event::get_event_range_statuses),
    ),
    // workflow: recorded, no engine behind this server
    ep(
        "workflow",
        "submit_workflow",
        Post,
        Secure,
        &[req("workflow_definition", Dict)],
        handler!(workflow::submit_workflow),
    ),
    ep(
        "workflow",
        "submit_workflow_raw_request",
        Post,
        Secure,
        &[req("params", DictOrStr)],
        handler!(workflow::submit_workflow),
    ),
    // idds: no iDDS behind this server
    ep(
        "idds",
        "relay_idds_command",
        Post,
        Secure,
        &[
            req("command_name", Str),
            opt("args", Str),
            opt("kwargs", Str),
            opt("manager", Bool),
            opt("json_outputs", Bool),
        ],
        handler!(|_, call| async move { system::no_idds(call) }),
    ),
    ep(
        "idds",
        "execute_idds_workflow_command",
        Post,
        Secure,
        &[
            req("command_name", Str),
            opt("kwargs", Str),
            opt("json_outputs", Bool),
        ],
        handler!(|_, call| async move { system::no_idds(call) }),
    ),
    // job
    ep(
        "job",
        "submit",
        Post,
        Secure,
        &[req("jobs", Str)],
        handler!(job::submit),
    ),
    ep(
        "job",
        "get_status",
        Get,
        Secure,
        &[req("job_ids", IntList), TIMEOUT],
        handler!(job::get_status),
    ),
    ep(
        "job",
        "get_description",
        Verb::Any,
        Secure,
        &[req("job_ids", IntList)],
        handler!(job::get_description),
    ),
    ep(
        "job",
        "get_description_incl_archive",
        Verb::Any,
        Secure,
        &[req("job_ids", IntList)],
        handler!(job::get_description),
    ),
    ep(
        "job",
        "kill",
        Post,
        Secure,
        &[
            req("job_ids", IntList),
            opt("code", Int),
            opt("use_email_as_id", Bool),
            opt("kill_options", StrList),
        ],
        handler!(job::kill),
    ),
    ep(
        "job",
        "reassign",
        Post,
        Secure,
        &[req("job_ids", IntList)],
        handler!(job::reassign),
    ),
    ep(
        "job",
        "set_command",
        Post,
        Production,
        &[req("job_id", Int), req("command", Str)],
        handler!(job::set_command),
    ),
    ep(
        "job",
        "get_metadata_for_analysis_jobs",
        Get,
        Secure,
        &[req("task_id", Int)],
        handler!(job::get_metadata_for_analysis_jobs),
    ),
    ep(
        "job",
        "generate_offline_execution_script",
        Get,
        Open,
        &[req("job_id", Int), opt("days", Int)],
        handler!(response job::generate_offline_execution_script),
    ),
    ep(
        "job",
        "set_debug_mode",
        Post,
        Production,
        &[req("job_id", Int), req("mode", Bool)],
        handler!(job::set_debug_mode),
    ),
    // pilot
    ep(
        "pilot",
        "acquire_jobs",
        Post,
        Secure,
        pilot::ACQUIRE_PARAMS,
        handler!(pilot::acquire_jobs),
    ),
    ep(
        "pilot",
        "get_job_status",
        Get,
        Secure,
        &[req("job_ids", IntList), TIMEOUT],
        handler!(pilot::get_job_status),
    ),
    ep(
        "pilot",
        "update_job",
        Post,
        Production,
        pilot::UPDATE_PARAMS,
        handler!(pilot::update_job),
    ),
    ep(
        "pilot",
        "update_jobs_bulk",
        Post,
        Production,
        &[req("job_list", List), opt("harvester_id", Str)],
        handler!(pilot::update_jobs_bulk),
    ),
    ep(
        "pilot",
        "update_worker_status",
        Post,
        Production,
        &[
            req("worker_id", Int),
            req("harvester_id", Str),
            req("status", Str),
            TIMEOUT,
            opt("node_id", Str),
        ],
        handler!(pilot::update_worker_status),
    ),
    ep(
        "pilot",
        "update_worker_node",
        Post,
        Production,
        &[
            req("site", Str),
            req("host_name", Str),
            req("cpu_model", Str),
            opt("panda_queue", Str),
            opt("n_logical_cpus", Int),
            opt("n_sockets", Int),
            opt("cores_per_socket", Int),
            opt("threads_per_core", Int),
            opt("cpu_architecture", Str),
            opt("cpu_architecture_level", Str),
            opt("clock_speed", Float),
            opt("total_memory", Int),
            opt("total_local_disk", Int),
            TIMEOUT,
        ],
        handler!(|state, call| pilot::update_worker_node(state, call, false)),
    ),
    ep(
        "pilot",
        "update_worker_node_gpu",
        Post,
        Production,
        &[
            req("site", Str),
            req("host_name", Str),
            req("vendor", Str),
            req("model", Str),
            req("count", Int),
            opt("vram", Int),
            opt("architecture", Str),
            opt("framework", Str),
            opt("framework_version", Str),
            opt("driver_version", Str),
            TIMEOUT,
        ],
        handler!(|state, call| pilot::update_worker_node(state, call, true)),
    ),
    // task
    ep(
        "task",
        "submit",
        Post,
        Secure,
        &[req("task_parameters", Dict), opt("parent_tid", Int)],
        handler!(task::submit),
    ),
    ep(
        "task",
        "get_status",
        Get,
        Secure,
        &[req("task_id", Int)],
        handler!(task::get_status),
    ),
    ep(
        "task",
        "get_details",
        Get,
        Secure,
        &[
            req("task_id", Int),
            opt("include_parameters", Bool),
            opt("include_status", Bool),
        ],
        handler!(task::get_details),
    ),
    ep(
        "task",
        "get_task_parameters",
        Get,
        Secure,
        &[req("task_id", Int)],
        handler!(task::get_task_parameters),
    ),
    ep(
        "task",
        "get_job_ids",
        Get,
        Secure,
        &[req("task_id", Int)],
        handler!(task::get_job_ids),
    ),
    ep(
        "task",
        "kill",
        Post,
        TaskOwner,
        &[req("task_id", Int), opt("broadcast", Bool)],
        handler!(task::kill),
    ),
    ep(
        "task",
        "finish",
        Post,
        TaskOwner,
        &[
            req("task_id", Int),
            opt("soft", Bool),
            opt("broadcast", Bool),
        ],
        handler!(task::finish),
    ),
    ep(
        "task",
        "retry",
        Post,
        TaskOwner,
        &[
            req("task_id", Int),
            opt("new_parameters", DictOrStr),
            opt("no_child_retry", Bool),
            opt("discard_events", Bool),
            opt("disable_staging_mode", Bool),
            opt("keep_gshare_priority", Bool),
            opt("ignore_hard_exhausted", Bool),
        ],
        handler!(task::retry),
    ),
    ep(
        "task",
        "pause",
        Post,
        Production,
        &[req("task_id", Int)],
        handler!(task::pause),
    ),
    ep(
        "task",
        "resume",
        Post,
        Production,
        &[req("task_id", Int)],
        handler!(task::resume),
    ),
    ep(
        "task",
        "enable_job_cloning",
        Post,
        Production,
        &[
            req("jedi_task_id", Int),
            opt("mode", Str),
            opt("multiplicity", Int),
            opt("num_sites", Int),
        ],
        handler!(task::enable_job_cloning),
    ),
    ep(
        "task",
        "disable_job_cloning",
        Post,
        Production,
        &[req("jedi_task_id", Int)],
        handler!(task::disable_job_cloning),
    ),
    ep(
        "task",
        "enable_jumbo_jobs",
        Post,
        Production,
        &[
            req("task_id", Int),
            req("jumbo_jobs_total", Int),
            opt("jumbo_jobs_per_site", Int),
        ],
        handler!(task::enable_jumbo_jobs),
    ),
    ep(
        "task",
        "get_jumbo_job_datasets",
        Get,
        Secure,
        &[req("from_offset", Int), opt("to_offset", Int)],
        handler!(task::get_jumbo_job_datasets),
    ),
    ep(
        "task",
        "reassign_global_share",
        Post,
        Production,
        &[
            req("task_id_list", IntList),
            req("share", Str),
            req("reassign_running_jobs", Bool),
        ],
        handler!(task::reassign_global_share),
    ),
    ep(
        "task",
        "reload_input",
        Post,
        TaskOwner,
        &[req("task_id", Int), opt("ignore_hard_exhausted", Bool)],
        handler!(task::reload_input),
    ),
    ep(
        "task",
        "release",
        Post,
        Production,
        &[req("task_id", Int)],
        handler!(task::release),
    ),
    ep(
        "task",
        "avalanche",
        Post,
        Production,
        &[req("task_id", Int)],
        handler!(task::avalanche),
    ),
    ep(
        "task",
        "change_attribute",
        Post,
        Production,
        &[
            req("task_id", Int),
            req("attribute_name", Str),
            req("value", Int),
        ],
        handler!(task::change_attribute),
    ),
    ep(
        "task",
        "change_split_rule",
        Post,
        Production,
        &[
            req("task_id", Int),
            req("attribute_name", Str),
            req("value", Ty::Any),
        ],
        handler!(task::change_split_rule),
    ),
    ep(
        "task",
        "reassign",
        Post,
        TaskOwner,
        &[
            req("task_id", Int),
            opt("site", Str),
            opt("cloud", Str),
            opt("nucleus", Str),
            opt("mode", Str),
        ],
        handler!(task::reassign),
    ),
    ep(
        "task",
        "change_priority",
        Post,
        Production,
        &[req("task_id", Int), req("priority", Int)],
        handler!(task::change_priority),
    ),
    ep(
        "task",
        "change_modification_time",
        Post,
        Production,
        &[req("task_id", Int), req("hour_offset", Int)],
        handler!(task::change_modification_time),
    ),
    ep(
        "task",
        "increase_attempts",
        Post,
        Production,
        &[req("task_id", Int), req("increase", Int)],
        handler!(task::increase_attempts),
    ),
    ep(
        "task",
        "reactivate",
        Post,
        Production,
        &[
            req("task_id", Int),
            opt("keep_attempt_nr", Bool),
            opt("trigger_job_generation", Bool),
        ],
        handler!(task::reactivate),
    ),
    ep(
        "task",
        "kill_unfinished_jobs",
        Post,
        Secure,
        &[
            req("task_id", Int),
            opt("code", Int),
            opt("use_email_as_id", Bool),
        ],
        handler!(task::kill_unfinished_jobs),
    ),
    ep(
        "task",
        "get_datasets_and_files",
        Get,
        Secure,
        &[
            req("task_id", Int),
            opt("dataset_types", Ty::Any),
            opt("dataset_only", Bool),
        ],
        handler!(task::get_datasets_and_files),
    ),
    ep(
        "task",
        "get_detailed_info",
        Get,
        Secure,
        &[req("task_id", Int)],
        handler!(task::get_detailed_info),
    ),
    ep(
        "task",
        "get_parent_detailed_info",
        Get,
        Secure,
        &[req("task_id", Int)],
        handler!(task::get_parent_detailed_info),
    ),
    ep(
        "task",
        "get_job_descriptions",
        Get,
        Secure,
        &[req("task_id", Int), opt("unsuccessful_only", Bool)],
        handler!(task::get_job_descriptions),
    ),
    ep(
        "task",
        "get_tasks_modified_since",
        Get,
        Secure,
        &[
            req("since", Str),
            opt("dn", Str),
            opt("full", Bool),
            opt("min_task_id", Int),
            opt("prod_source_label", Str),
        ],
        handler!(task::get_tasks_modified_since),
    ),
    ep(
        "task",
        "get_tasks_detailed_info_since",
        Get,
        Secure,
        &[opt("since", Str), opt("filters", Str), opt("n_tasks", Int)],
        handler!(task::get_tasks_detailed_info_since),
    ),
    // file_server
    ep(
        "file_server",
        "validate_cache_file",
        Post,
        Secure,
        &[req("file_size", Int), req("checksum", Ty::Any)],
        handler!(file_server::validate_cache_file),
    ),
    ep(
        "file_server",
        "upload_cache_file",
        Post,
        Secure,
        &[],
        handler!(body file_server::upload_cache_file),
    ),
    ep(
        "file_server",
        "touch_cache_file",
        Post,
        Secure,
        &[req("file_name", Str)],
        handler!(file_server::touch_cache_file),
    ),
    ep(
        "file_server",
        "delete_cache_file",
        Post,
        Secure,
        &[req("file_name", Str)],
        handler!(file_server::delete_cache_file),
    ),
    ep(
        "file_server",
        "register_cache_file",
        Post,
        Production,
        &[
            req("user_name", Str),
            req("file_name", Str),
            req("file_size", Int),
            req("checksum", Str),
        ],
        handler!(file_server::register_cache_file),
    ),
    ep(
        "file_server",
        "upload_jedi_log",
        Post,
        Production,
        &[],
        handler!(body file_server::upload_jedi_log),
    ),
    ep(
        "file_server",
        "update_jedi_log",
        Post,
        Production,
        &[],
        handler!(body file_server::update_jedi_log),
    ),
    ep(
        "file_server",
        "upload_hpo_checkpoint",
        Post,
        Secure,
        &[],
        handler!(body file_server::upload_hpo_checkpoint),
    ),
    ep(
        "file_server",
        "delete_hpo_checkpoint",
        Post,
        Secure,
        &[req("task_id", Ty::Any), req("sub_id", Ty::Any)],
        handler!(file_server::delete_hpo_checkpoint),
    ),
    ep(
        "file_server",
        "upload_file_recovery_request",
        Post,
        Secure,
        &[
            opt("task_id", Int),
            opt("dry_run", Bool),
            opt("dataset", Str),
            opt("files", StrList),
            opt("no_child_retry", Bool),
            opt("resurrect_datasets", Bool),
            opt("force", Bool),
            opt("reproduce_parent", Bool),
            opt("reproduce_upto_nth_gen", Int),
        ],
        handler!(file_server::upload_file_recovery_request),
    ),
    ep(
        "file_server",
        "upload_workflow_request",
        Post,
        Secure,
        &[req("data", Str), opt("dry_run", Bool), opt("sync", Bool)],
        handler!(file_server::upload_workflow_request),
    ),
    ep(
        "file_server",
        "upload_event_picking_request",
        Post,
        Secure,
        &[
            opt("run_event_list", Str),
            opt("data_type", Str),
            opt("stream_name", Str),
            opt("dataset_name", Str),
            opt("ami_tag", Str),
            opt("user_dataset_name", Str),
            opt("locked_by", Str),
            opt("parameters", Str),
            opt("input_file_list", Str),
            opt("n_sites", Str),
            opt("user_task_name", Str),
            opt("ei_api", Str),
            opt("include_guids", Bool),
        ],
        handler!(file_server::upload_event_picking_request),
    ),
    ep(
        "file_server",
        "download_jedi_log",
        Get,
        Open,
        &[req("log_name", Str), opt("offset", Int)],
        handler!(response file_server::download_jedi_log),
    ),
    // harvester
    ep(
        "harvester",
        "heartbeat",
        Post,
        Secure,
        &[req("harvester_id", Str), opt("data", Dict)],
        handler!(harvester::heartbeat),
    ),
    ep(
        "harvester",
        "update_workers",
        Post,
        Secure,
        &[req("harvester_id", Str), req("workers", List)],
        handler!(harvester::update_workers),
    ),
    ep(
        "harvester",
        "update_service_metrics",
        Post,
        Secure,
        &[req("harvester_id", Str), req("metrics", List)],
        handler!(harvester::update_service_metrics),
    ),
    ep(
        "harvester",
        "add_dialogs",
        Post,
        Secure,
        &[req("harvester_id", Str), req("dialogs", List)],
        handler!(harvester::add_dialogs),
    ),
    ep(
        "harvester",
        "report_worker_statistics",
        Post,
        Secure,
        &[
            req("harvester_id", Str),
            req("panda_queue", Str),
            req("statistics", Str),
        ],
        handler!(harvester::report_worker_statistics),
    ),
    ep(
        "harvester",
        "acquire_commands",
        Post,
        Production,
        &[req("harvester_id", Str), req("n_commands", Int), TIMEOUT],
        handler!(harvester::acquire_commands),
    ),
    ep(
        "harvester",
        "acknowledge_commands",
        Post,
        Production,
        &[req("command_ids", IntList), TIMEOUT],
        handler!(harvester::acknowledge_commands),
    ),
    ep(
        "harvester",
        "add_sweep_command",
        Post,
        Production,
        &[
            req("panda_queue", Str),
            req("status_list", StrList),
            req("ce_list", Ty::Any),
            req("submission_host_list", StrList),
        ],
        handler!(harvester::add_sweep_command),
    ),
    ep(
        "harvester",
        "add_target_slots",
        Post,
        Production,
        &[
            req("panda_queue", Str),
            req("slots", Int),
            opt("global_share", Str),
            opt("resource_type", Str),
            opt("expiration_date", Ty::Any),
        ],
        handler!(harvester::add_target_slots),
    ),
    ep(
        "harvester",
        "get_current_worker_id",
        Get,
        Secure,
        &[req("harvester_id", Str)],
        handler!(harvester::current_worker_id),
    ),
    ep(
        "harvester",
        "get_worker_statistics",
        Get,
        Secure,
        &[],
        handler!(harvester::worker_statistics),
    ),
    // metaconfig
    ep(
        "metaconfig",
        "get_resource_types",
        Get,
        Secure,
        &[],
        handler!(|state, _| resource_types(state)),
    ),
    ep(
        "metaconfig",
        "get_banned_users",
        Get,
        Secure,
        &[],
        handler!(|state, _| banned_users(state)),
    ),
    ep(
        "metaconfig",
        "get_site_specs",
        Get,
        Open,
        &[opt("type", Str)],
        handler!(site_specs),
    ),
    // statistics
    ep(
        "statistics",
        "job_stats_by_cloud",
        Get,
        Open,
        &[opt("type", Str)],
        handler!(|state, call| statistics::counts(
            state,
            call,
            JobStatistics::ByCloud { analysis: false }
        )),
    ),
    ep(
        "statistics",
        "production_job_stats_by_cloud_and_processing_type",
        Get,
        Open,
        &[],
        handler!(|state, call| statistics::counts(
            state,
            call,
            JobStatistics::ProductionByCloudAndProcessingType
        )),
    ),
    ep(
        "statistics",
        "active_job_stats_by_site",
        Get,
        Open,
        &[],
        handler!(|state, call| statistics::counts(state, call, JobStatistics::ActiveBySite)),
    ),
    ep(
        "statistics",
        "active_job_detailed_stats_by_site",
        Get,
        Open,
        &[],
        handler!(|state, call| statistics::counts(
            state,
            call,
            JobStatistics::ActiveDetailedBySite
        )),
    ),
    ep(
        "statistics",
        "job_stats_by_site_and_resource_type",
        Get,
        Open,
        &[opt("time_window", Int)],
        handler!(|state, call| statistics::counts(
            state,
            call,
            JobStatistics::BySiteAndResourceType
        )),
    ),
    ep(
        "statistics",
        "job_stats_by_site_share_and_resource_type",
        Get,
        Open,
        &[opt("time_window", Int)],
        handler!(|state, call| statistics::counts(
            state,
            call,
            JobStatistics::BySiteShareAndResourceType
        )),
    ),
];

/// The declaration of `module/function`, if it is served.
pub(crate) fn endpoint(module: &str, function: &str) -> Option<&'static Endpoint> {
    ENDPOINTS
        .iter()
        .find(|e| e.module == module && e.function == function)
}

/// The query string as upstream reads it: a repeated key is a list.
fn query_args(query: Option<&str>) -> Result<serde_json::Map<String, Json>, String> {
    let pairs: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| format!("Argument error: the query string cannot be decoded: {e}"))?,
        None => Vec::new(),
    };
    let mut args = serde_json::Map::new();
    for (key, value) in pairs {
        match args.get_mut(&key) {
            Some(Json::Array(items)) => items.push(Json::String(value)),
            Some(first) => *first = Json::Array(vec![first.take(), Json::String(value)]),
            None => {
                args.insert(key, Json::String(value));
            }
        }
    }
    Ok(args)
}

pub async fn dispatch(
    State(state): State<AppState>,
    Path((version, module, function)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    if version != "v1" && version != "latest" {
        return forbidden_method(&function);
    }
    let Some(endpoint) = endpoint(&module, &function) else {
        return forbidden_method(&function);
    };
    let json_out = wants_json(request.headers());
    match call(state, endpoint, request).await {
        Ok(Answer::Envelope(envelope)) => envelope.into_response_as(json_out),
        Ok(Answer::Response(response)) => response,
        Err(e) => e.into_response(),
    }
}

/// What a call answers: the envelope, or a response its handler made.
enum Answer {
    Envelope(Envelope),
    Response(Response),
}

impl From<Envelope> for Answer {
    fn from(envelope: Envelope) -> Answer {
        Answer::Envelope(envelope)
    }
}

/// JSON when the client lists `application/json` in `Accept` or sends JSON; otherwise
/// upstream's Python rendering of the envelope.
fn wants_json(headers: &axum::http::HeaderMap) -> bool {
    let lists_json = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("application/json"))
    };
    lists_json(header::ACCEPT) || lists_json(header::CONTENT_TYPE)
}

/// Why the caller may not call this function this way, before anything else is read: the
/// credential first, then the role, then the HTTP method, as upstream checks them.
fn refusal(endpoint: &Endpoint, identity: &Identity, method: &Method) -> Option<Envelope> {
    if endpoint.access != Open && !identity.is_authenticated() {
        return Some(Envelope::fail("SSL secure connection is required"));
    }
    if endpoint.access != Open && identity.limited_proxy {
        return Some(Envelope::fail(
            "SSL secure connection is required (a limited proxy is not accepted here)",
        ));
    }
    if endpoint.access == Production && !identity.production {
        return Some(Envelope::fail("production or pilot role required"));
    }
    let allowed = match endpoint.verb {
        Verb::Any => true,
        Verb::Get => method == Method::GET || method == Method::HEAD,
        Verb::Post => method == Method::POST,
    };
    if !allowed {
        let expected = if endpoint.verb == Get { "GET" } else { "POST" };
        return Some(Envelope::fail(format!(
            "expecting {expected}, received {method}"
        )));
    }
    None
}

/// Drops a body that will not be used, within an anonymous caller's limit and time.
async fn discard_body(request: Request, state: &AppState) {
    if declares_body(request.headers()) {
        crate::body::discard(
            request.into_body(),
            state.limits.anonymous_max_body_bytes,
            &state.limits,
        )
        .await;
    }
}

/// The decoding half of [`call`] for the fuzz target (`hot::decode_v1_args`).
pub(crate) fn fuzz_decode(body: &[u8], query: &str) -> usize {
    let limits = crate::Limits::default();
    let from_body = match crate::body::parse_json(body, &limits) {
        Ok(Json::Object(map)) => Some(map),
        _ => None,
    };
    let from_query = query_args(Some(query)).ok();
    ENDPOINTS
        .iter()
        .map(|e| {
            let a = from_body
                .as_ref()
                .is_some_and(|raw| validate(e.params, raw, false).is_ok());
            let b = from_query
                .as_ref()
                .is_some_and(|raw| validate(e.params, raw, true).is_ok());
            usize::from(a) + usize::from(b)
        })
        .sum()
}

/// Whether a request says it carries a body (a non-zero length, or chunks).
fn declares_body(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim() == "application/json")
}

/// Checks the caller, the method and the arguments, in upstream's order, then runs the
/// handler.
async fn call(
    state: AppState,
    endpoint: &'static Endpoint,
    request: Request,
) -> Result<Answer, BodyError> {
    let method = request.method().clone();
    let identity = request
        .extensions()
        .get::<Arc<Identity>>()
        .cloned()
        .unwrap_or_else(|| Arc::new(Identity::anonymous()));
    if let Some(refused) = refusal(endpoint, &identity, &method) {
        discard_body(request, &state).await;
        return Ok(refused.into());
    }
    let peer = request.extensions().get::<ClientAddr>().and_then(|c| c.0);
    let mut raw = match query_args(request.uri().query()) {
        Ok(args) => args,
        Err(e) => return Ok(Envelope::fail(e).into()),
    };
    if let Handle::Body(handler) = endpoint.handler {
        // The handler reads the body itself, within its own bounds.
        let args = match validate(endpoint.params, &raw, true) {
            Ok(args) => args,
            Err(e) => return Ok(Envelope::fail(e).into()),
        };
        let call = Call {
            method,
            identity,
            peer,
            args,
        };
        return Ok(Answer::Response(handler(&state, &call, request).await));
    }
    let mut from_query = true;
    let posted = method == Method::POST || method == Method::PUT;
    // Nothing is read that the function does not take.
    if endpoint.params.is_empty() {
        discard_body(request, &state).await;
    } else if posted {
        let content_type = crate::body::content_type(request.headers());
        // JSON only from a JSON content type: a browser's cross-site form (text/plain,
        // form-urlencoded, multipart) carries no arguments here, and is not even read.
        if !is_json_type(&content_type) && (declares_body(request.headers()) || !raw.is_empty()) {
            discard_body(request, &state).await;
            return Ok(Envelope::fail(format!(
                "Argument error: POST arguments must be a JSON object sent with Content-Type: \
                 application/json, not {:?}",
                content_type.split(';').next().unwrap_or("")
            ))
            .into());
        }
        let limit = state.limits.body_limit_for(&identity);
        let body = read_body(request, limit, &state.limits).await?;
        let has_body = !body.bytes.iter().all(u8::is_ascii_whitespace);
        if has_body {
            match crate::body::parse_json(&body.bytes, &state.limits) {
                Ok(Json::Object(map)) => {
                    raw = map;
                    from_query = false;
                }
                Ok(_) => {
                    return Ok(
                        Envelope::fail("Argument error: the body must be a JSON object").into(),
                    )
                }
                Err(e) => return Ok(Envelope::fail(e.message()).into()),
            }
        }
    } else if raw.is_empty() && declares_body(request.headers()) {
        // Harvester's client sends a GET's arguments as a form body (labelled JSON): with no
        // query, such a body is read, within the caller's limit, as a JSON object or as
        // form fields. (A browser cannot send a GET with a body.)
        let limit = state.limits.body_limit_for(&identity);
        let body = read_body(request, limit, &state.limits).await?;
        let bytes = &body.bytes;
        match crate::body::parse_json(bytes, &state.limits) {
            Ok(Json::Object(map)) => {
                raw = map;
                from_query = false;
            }
            _ => match std::str::from_utf8(bytes)
                .map_err(|e| e.to_string())
                .and_then(|t| query_args(Some(t.trim())))
            {
                Ok(args) => raw = args,
                Err(_) => {
                    return Ok(Envelope::fail(
                        "Argument error: a GET body must be a JSON object or form fields",
                    )
                    .into())
                }
            },
        }
    } else {
        // A GET's arguments are its query; a body beside a query is not read.
        discard_body(request, &state).await;
    }
    // A worker only now that the request is whole: a slow sender holds none.
    let _worker = state.stats.worker().await;
    let args = match validate(endpoint.params, &raw, from_query) {
        Ok(args) => args,
        Err(e) => return Ok(Envelope::fail(e).into()),
    };
    let call = Call {
        method,
        identity,
        peer,
        args,
    };
    Ok(match endpoint.handler {
        Handle::Envelope(handler) => handler(&state, &call).await.into(),
        Handle::Response(handler) => Answer::Response(handler(&state, &call).await),
        Handle::Body(handler) => Answer::Response(handler(&state, &call, Request::default()).await),
    })
}

/// `metaconfig/get_resource_types`: the `resource_types` rows.
async fn resource_types(state: &AppState) -> Envelope {
    match state.service.resource_types().await {
        Ok(types) => Envelope::ok(Json::Array(
            types
                .into_iter()
                .map(|t| {
                    serde_json::json!({"resource_name": t.name, "mincore": t.min_core, "maxcore": t.max_core,
                        "minrampercore": t.min_ram_per_core, "maxrampercore": t.max_ram_per_core})
                })
                .collect(),
        )),
        Err(e) => Envelope::from_service(e),
    }
}

/// `metaconfig/get_banned_users`: the users whose `users.status` is `disabled`, as upstream's
/// `{name: false}` map. Secure, as upstream; the list is the operators' ban list.
async fn banned_users(state: &AppState) -> Envelope {
    match state.service.banned_users().await {
        Ok(names) => Envelope::ok(Json::Object(
            names.into_iter().map(|n| (n, Json::Bool(false))).collect(),
        )),
        Err(e) => Envelope::from_service(e),
    }
}

/// `metaconfig/get_site_specs`: the queues of one type (`analysis` by default; `production`,
/// `unified` or `all`) as upstream's SiteSpec dicts, read from their CRIC records.
async fn site_specs(state: &AppState, call: &Call) -> Envelope {
    let wanted = call.args.text("type").unwrap_or("analysis");
    match state.service.site_specs(wanted).await {
        Ok(specs) => Envelope::ok(Json::Object(specs)),
        Err(e) => Envelope::from_service(e),
    }
}
