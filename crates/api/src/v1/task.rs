//! `task`: registration and bookkeeping of tasks as panda-client, pbook and prun use them.
//!
//! Codes and messages are upstream's: `submit` succeeds with code 0 and
//! `succeeded. new jediTaskID=N` (prun reads the ID from that text; `data` carries it too),
//! `kill`/`finish` succeed when the code is 0 and put the code in `data`, and `retry` always
//! answers `success: true` with the code in `data`, which is what pbook looks at. Task dicts
//! use upstream's camelCase attribute names; datetimes are `{"__datetime__": iso}`.

use chrono::NaiveDateTime;
use panda_core::{split_rule, TaskAttr, TaskSpec, Value};
use panda_service::task_listing::{
    listing_since, task_datasets, DatasetRole, TaskFilter, LISTING_WINDOW_DAYS,
};
use panda_service::{task_code, user_name, TaskCommand, TaskCriterion, TaskOutcome};
use serde_json::{json, Map, Value as Json};

use super::args::ArgsExt;
use super::{record_json, Call, Envelope};
use crate::AppState;

fn task_id(call: &Call) -> i64 {
    call.args.int("task_id").unwrap_or_default()
}

fn not_found(id: i64) -> Envelope {
    Envelope {
        success: false,
        message: format!("jediTaskID={id} not found"),
        data: json!(task_code::NOT_FOUND),
    }
}

/// `task/submit`.
pub(crate) async fn submit(state: &AppState, call: &Call) -> Envelope {
    let parameters = match call.args.get("task_parameters") {
        Some(Json::Object(map)) => map.clone(),
        _ => return Envelope::fail("Type error: task_parameters must be a JSON object"),
    };
    match state
        .service
        .submit_task(&call.identity, parameters, call.args.int("parent_tid"))
        .await
    {
        Ok(TaskOutcome {
            code: task_code::OK,
            message,
            task_id,
        }) => Envelope {
            success: true,
            message,
            data: json!(task_id),
        },
        Ok(TaskOutcome { code, message, .. }) => Envelope {
            success: false,
            message,
            data: json!(code),
        },
        Err(e) => Envelope::from_service(e),
    }
}

async fn load(state: &AppState, id: i64) -> Result<TaskSpec, Envelope> {
    match state.service.task(id).await {
        Ok(Some(task)) => Ok(task),
        Ok(None) => Err(Envelope::fail("Task not found")),
        Err(e) => Err(Envelope::from_service(e)),
    }
}

/// `task/get_status`: the status string.
pub(crate) async fn get_status(state: &AppState, call: &Call) -> Envelope {
    match load(state, task_id(call)).await {
        Ok(task) => Envelope::ok(record_json(&task)["status"].clone()),
        Err(e) => e,
    }
}

async fn parameters(state: &AppState, id: i64) -> Result<Map<String, Json>, Envelope> {
    match state.service.task_parameters(id).await {
        Ok(Some(map)) => Ok(map),
        Ok(None) => Err(Envelope::fail("Task not found")),
        Err(e) => Err(Envelope::from_service(e)),
    }
}

/// `task/get_task_parameters`: the parameters as submitted (with the server's additions).
pub(crate) async fn get_task_parameters(state: &AppState, call: &Call) -> Envelope {
    match parameters(state, task_id(call)).await {
        Ok(map) => Envelope::ok(Json::Object(map)),
        Err(e) => e,
    }
}

/// `task/get_job_ids`: the PandaIDs of the task's jobs.
pub(crate) async fn get_job_ids(state: &AppState, call: &Call) -> Envelope {
    match state.service.task_job_ids(task_id(call)).await {
        Ok(ids) => Envelope::ok(json!(ids)),
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/get_details`: input and output datasets, job statistics and PandaIDs.
pub(crate) async fn get_details(state: &AppState, call: &Call) -> Envelope {
    let id = task_id(call);
    let task = match load(state, id).await {
        Ok(task) => task,
        Err(_) => return Envelope::fail("Task not found or error retrieving the details"),
    };
    let params = parameters(state, id).await.unwrap_or_default();
    let service = &state.service;
    let (ids, counts) = match (
        service.task_job_ids(id).await,
        service.task_job_counts(id).await,
    ) {
        (Ok(ids), Ok(counts)) => (ids, counts),
        (Err(e), _) | (_, Err(e)) => return Envelope::from_service(e),
    };
    let statistics = counts
        .iter()
        .map(|(status, n)| format!("{status}*{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut data = json!({
        "inDS": task_datasets(&params, DatasetRole::Input).join(","),
        "outDS": task_datasets(&params, DatasetRole::Output).join(","),
        "statistics": statistics,
        "PandaID": ids,
        "mergeStatus": null,
        "mergePandaID": [],
    });
    if call.args.flag("include_status") {
        data["status"] = record_json(&task)["status"].clone();
    }
    if call.args.flag("include_parameters") {
        data["cliParams"] = params.get("cliParams").cloned().unwrap_or(json!(""));
    }
    Envelope::ok(data)
}

/// Why the caller may not change task `id`: it does not exist, or the caller neither owns it
/// nor has the production role.
pub(super) async fn refuse_unless_owner(
    state: &AppState,
    call: &Call,
    id: i64,
) -> Option<Envelope> {
    match state.service.may_change_task(&call.identity, id).await {
        Ok(Some(true)) => None,
        Ok(Some(false)) => Some(Envelope::fail("not the task owner or no production role")),
        Ok(None) => Some(not_found(id)),
        Err(e) => Some(Envelope::from_service(e)),
    }
}

async fn command(state: &AppState, call: &Call, command: TaskCommand) -> Envelope {
    let id = task_id(call);
    if let Some(refused) = refuse_unless_owner(state, call, id).await {
        return refused;
    }
    match state
        .service
        .task_command(&call.identity, id, command)
        .await
    {
        Ok(outcome) => Envelope {
            // retry answers success whatever the code, as upstream; pbook reads `data`.
            success: outcome.code == task_code::OK || command == TaskCommand::Retry,
            message: outcome.message,
            data: json!(outcome.code),
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/kill`.
pub(crate) async fn kill(state: &AppState, call: &Call) -> Envelope {
    command(state, call, TaskCommand::Kill).await
}

/// `task/finish`.
pub(crate) async fn finish(state: &AppState, call: &Call) -> Envelope {
    let soft = call.args.flag("soft");
    command(state, call, TaskCommand::Finish { soft }).await
}

/// `task/retry`. With `new_parameters` (an object, or its JSON text) the task is
/// re-executed with them (code 3), or a running task's parameters updated (5); upstream
/// answers `success: true` whatever the code, and pbook reads `data`.
pub(crate) async fn retry(state: &AppState, call: &Call) -> Envelope {
    let new = match call.args.get("new_parameters") {
        None | Some(Json::Null) => None,
        Some(Json::Object(map)) if map.is_empty() => None,
        Some(Json::Object(map)) => Some(map.clone()),
        Some(Json::String(text)) => match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(map)) if map.is_empty() => None,
            Ok(Json::Object(map)) => Some(map),
            _ => {
                return Envelope {
                    success: false,
                    message: "new parameter conversion failed: new_parameters is not a JSON object"
                        .into(),
                    data: json!(task_code::FAILED),
                }
            }
        },
        Some(_) => return Envelope::fail("new_parameters must be a JSON object"),
    };
    let Some(new) = new else {
        return command(state, call, TaskCommand::Retry).await;
    };
    let id = task_id(call);
    if let Some(refused) = refuse_unless_owner(state, call, id).await {
        return refused;
    }
    match state.service.retry_task_with_parameters(id, &new).await {
        Ok(outcome) => Envelope {
            success: true,
            message: outcome.message,
            data: json!(outcome.code),
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/reload_input`: a finished task re-executed, files added to its input dataset since
/// taken in (the owner or the production role).
pub(crate) async fn reload_input(state: &AppState, call: &Call) -> Envelope {
    let id = task_id(call);
    if let Some(refused) = refuse_unless_owner(state, call, id).await {
        return refused;
    }
    coded(state.service.reload_task_input(id).await)
}

/// `since` of a listing, within the service's window.
fn since(call: &Call, window_days: i64) -> Result<NaiveDateTime, Envelope> {
    listing_since(call.args.text("since"), window_days).map_err(Envelope::from_service)
}

/// A task as `get_tasks_detailed_info_since` lists it: every attribute, the parameters, and
/// the file counts of its master input (what pbook shows as progress).
fn detailed_info(
    task: &TaskSpec,
    params: Map<String, Json>,
    files: panda_service::FileCounts,
) -> Json {
    let mut info = record_json(task);
    if let Json::Object(map) = &mut info {
        // Shown by name, as upstream's task details show it (`ES=5` is `nEventsPerWorker=5`).
        if let Some(rules) = task.get_str(TaskAttr::splitRule) {
            map.insert("splitRule".into(), json!(split_rule::decode(rules)));
        }
        map.insert("job_execution_params".into(), Json::Null);
        map.insert(
            "task_creation_arguments".into(),
            params.get("cliParams").cloned().unwrap_or(Json::Null),
        );
        map.insert("raw_task_params".into(), Json::Object(params));
        let percent = |n: i64| match files.total {
            0 => 0,
            total => n * 100 / total,
        };
        for (key, value) in [
            ("nFiles", files.total),
            ("nFilesFinished", files.finished),
            ("nFilesFailed", files.failed),
            ("nFilesMissing", 0),
            ("pctFinished", percent(files.finished)),
            ("pctFailed", percent(files.failed)),
        ] {
            map.insert(key.into(), json!(value));
        }
    }
    info
}

/// `task/get_tasks_detailed_info_since`: the caller's tasks (or `userName`'s), filtered by
/// attribute values given as a JSON object of strings; a value with regex characters is
/// matched as a regular expression.
pub(crate) async fn get_tasks_detailed_info_since(state: &AppState, call: &Call) -> Envelope {
    let since = match since(call, LISTING_WINDOW_DAYS) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let filters: Map<String, Json> = match call.args.text("filters") {
        None => Map::new(),
        Some(text) => match serde_json::from_str(text) {
            Ok(Json::Object(map)) => map,
            Ok(_) => return Envelope::fail("filters must be a JSON object"),
            Err(_) => return Envelope::fail("filters is not valid JSON"),
        },
    };
    let filter = match TaskFilter::parse(&user_name(&call.identity), &filters) {
        Ok(filter) => filter,
        Err(e) => return Envelope::from_service(e),
    };
    let limit = call.args.int("n_tasks").unwrap_or(500).clamp(1, 10_000);
    let ids = match state.service.task_ids(&filter.criteria, since, limit).await {
        Ok(ids) => ids,
        Err(e) => return Envelope::from_service(e),
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let info = match task_details(state, id).await {
            Ok(Some(info)) => info,
            Ok(None) => continue,
            Err(e) => return e,
        };
        if info
            .as_object()
            .is_some_and(|listed| filter.matches(listed))
        {
            out.push(info);
        }
    }
    Envelope::ok(Json::Array(out))
}

/// `task/get_tasks_modified_since`: the caller's (or `dn`'s) tasks modified since a time,
/// keyed by `reqID` as upstream keys them (JEDI sets it when it refines a task; a task not
/// yet refined has none and is keyed by its jediTaskID, where upstream would file every such
/// task under one `null` key), with the basic attributes (all with `full`).
pub(crate) async fn get_tasks_modified_since(state: &AppState, call: &Call) -> Envelope {
    let since = match since(call, 30) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let user = match call.args.text("dn") {
        Some(dn) => panda_core::identity::clean_user_id(dn),
        None => user_name(&call.identity),
    };
    let mut criteria = vec![TaskCriterion::Equals(
        TaskAttr::userName,
        Value::Text(Some(user)),
    )];
    let label = call.args.text("prod_source_label").unwrap_or("user");
    criteria.push(TaskCriterion::Equals(
        TaskAttr::prodSourceLabel,
        Value::Text(Some(label.into())),
    ));
    let ids = match state.service.task_ids(&criteria, since, 10_000).await {
        Ok(ids) => ids,
        Err(e) => return Envelope::from_service(e),
    };
    let min_id = call.args.int("min_task_id").unwrap_or(0);
    let full = call.args.flag("full");
    const BASIC: &[&str] = &[
        "jediTaskID",
        "modificationTime",
        "status",
        "processingType",
        "transUses",
        "transHome",
        "architecture",
        "reqID",
        "creationDate",
        "site",
        "cloud",
        "taskName",
    ];
    let mut out = Map::new();
    for id in ids.into_iter().filter(|id| *id >= min_id) {
        let task = match state.service.task(id).await {
            Ok(Some(task)) => task,
            Ok(None) => continue,
            Err(e) => return Envelope::from_service(e),
        };
        let mut dict = record_json(&task);
        if let (false, Json::Object(map)) = (full, &mut dict) {
            map.retain(|k, _| BASIC.contains(&k.as_str()));
        }
        let key = task.get_i64(TaskAttr::reqID).unwrap_or(id);
        out.insert(key.to_string(), dict);
    }
    Envelope::ok(Json::Object(out))
}

/// `task/pause` (production role).
pub(crate) async fn pause(state: &AppState, call: &Call) -> Envelope {
    command(state, call, TaskCommand::Pause).await
}

/// `task/resume` (production role).
pub(crate) async fn resume(state: &AppState, call: &Call) -> Envelope {
    command(state, call, TaskCommand::Resume).await
}

/// Upstream's answer to an attribute change: `<n> tasks changed`, or `Task not found`.
fn changed(result: Result<bool, panda_service::ServiceError>) -> Envelope {
    match result {
        Ok(true) => Envelope::ok_with("1 tasks changed"),
        Ok(false) => Envelope::fail("Task not found"),
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/change_priority` (production role): the task's and its waiting jobs' priority.
pub(crate) async fn change_priority(state: &AppState, call: &Call) -> Envelope {
    let priority = call.args.int("priority").unwrap_or_default();
    changed(
        state
            .service
            .change_task_priority(task_id(call), priority)
            .await,
    )
}

/// `task/change_modification_time` (production role): now plus `hour_offset` hours.
pub(crate) async fn change_modification_time(state: &AppState, call: &Call) -> Envelope {
    let offset = call.args.int("hour_offset").unwrap_or_default();
    changed(
        state
            .service
            .change_task_modification_time(task_id(call), offset)
            .await,
    )
}

/// An outcome with its code in `data`, success when the code is 0.
fn coded(result: Result<TaskOutcome, panda_service::ServiceError>) -> Envelope {
    match result {
        Ok(outcome) => Envelope {
            success: outcome.code == task_code::OK,
            message: outcome.message,
            data: json!(outcome.code),
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/increase_attempts` (production role).
pub(crate) async fn increase_attempts(state: &AppState, call: &Call) -> Envelope {
    let increase = call.args.int("increase").unwrap_or_default();
    coded(
        state
            .service
            .increase_task_attempts(task_id(call), increase)
            .await,
    )
}

/// `task/reactivate` (production role).
pub(crate) async fn reactivate(state: &AppState, call: &Call) -> Envelope {
    let keep = call.args.flag("keep_attempt_nr");
    coded(state.service.reactivate_task(task_id(call), keep).await)
}

/// `task/kill_unfinished_jobs`: kills the task's jobs that are still defined or active, as
/// `job/kill` would (each job only by its owner or the production role); one boolean per job.
pub(crate) async fn kill_unfinished_jobs(state: &AppState, call: &Call) -> Envelope {
    let id = task_id(call);
    let ids = match state.service.task_job_ids(id).await {
        Ok(ids) => ids,
        Err(e) => return Envelope::from_service(e),
    };
    match state
        .service
        .kill_jobs(&call.identity, &ids, call.args.int("code"))
        .await
    {
        Ok(results) => Envelope::ok(json!(results)),
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/get_datasets_and_files`: `[{"dataset": {"name", "id"}, "files": [{"lfn", "scope",
/// "id", "status"}]}]` for datasets of the given types (input and pseudo input by default).
pub(crate) async fn get_datasets_and_files(state: &AppState, call: &Call) -> Envelope {
    let kinds: Vec<String> = match call.args.get("dataset_types") {
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect(),
        Some(Json::String(text)) => text.split(',').map(|t| t.trim().to_string()).collect(),
        _ => vec!["input".into(), "pseudo_input".into()],
    };
    match state
        .service
        .task_datasets_and_files(task_id(call), &kinds)
        .await
    {
        Ok(datasets) if datasets.is_empty() => Envelope::fail("No data found for the task"),
        Ok(datasets) => Envelope::ok(Json::Array(
            datasets
                .into_iter()
                .map(|d| {
                    json!({
                        "dataset": {"name": d.name, "id": d.id},
                        "files": d.files.into_iter().map(|f| json!({
                            "lfn": f.lfn, "scope": f.scope, "id": f.id, "status": f.status,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )),
        Err(e) => Envelope::from_service(e),
    }
}

/// The detailed view of one task (as listed by `get_tasks_detailed_info_since`), with the
/// job-parameter template.
async fn task_details(state: &AppState, id: i64) -> Result<Option<Json>, Envelope> {
    let task = match state.service.task(id).await {
        Ok(Some(task)) => task,
        Ok(None) => return Ok(None),
        Err(e) => return Err(Envelope::from_service(e)),
    };
    let files = state
        .service
        .task_file_counts(id)
        .await
        .map_err(Envelope::from_service)?;
    let mut info = detailed_info(
        &task,
        parameters(state, id).await.unwrap_or_default(),
        files,
    );
    if let Ok(Some(template)) = state.service.job_parameters_template(id).await {
        info["job_execution_params"] = json!(template);
    }
    Ok(Some(info))
}

/// `task/get_detailed_info`.
pub(crate) async fn get_detailed_info(state: &AppState, call: &Call) -> Envelope {
    match task_details(state, task_id(call)).await {
        Ok(Some(info)) => Envelope::ok(info),
        Ok(None) => Envelope::fail("Task not found or error retrieving task info"),
        Err(e) => e,
    }
}

/// `task/get_parent_detailed_info`: the detailed view of the task's parent.
pub(crate) async fn get_parent_detailed_info(state: &AppState, call: &Call) -> Envelope {
    let id = task_id(call);
    let parent = match state.service.task(id).await {
        Ok(Some(task)) => task.get_i64(TaskAttr::parent_tid),
        Ok(None) => return Envelope::fail("Child task not found"),
        Err(e) => return Envelope::from_service(e),
    };
    let Some(parent) = parent.filter(|p| *p != id) else {
        return Envelope::fail("No parent task found");
    };
    match task_details(state, parent).await {
        Ok(Some(info)) => Envelope::ok(info),
        Ok(None) => Envelope::fail("Parent task not found"),
        Err(e) => e,
    }
}

/// `task/get_job_descriptions`: the task's jobs as `job/get_description` gives them (the
/// unsuccessful ones only with `unsuccessful_only`), at most 5,500.
pub(crate) async fn get_job_descriptions(state: &AppState, call: &Call) -> Envelope {
    let ids = match state.service.task_job_ids(task_id(call)).await {
        Ok(ids) => ids,
        Err(e) => return Envelope::from_service(e),
    };
    let unsuccessful = call.args.flag("unsuccessful_only");
    let mut out = Vec::new();
    for id in ids.into_iter().take(crate::MAX_IDS) {
        match state.service.job(id).await {
            Ok(Some(job)) => {
                let failed = matches!(
                    job.get_str(panda_core::JobAttr::jobStatus),
                    Some("failed" | "cancelled" | "closed")
                );
                if !unsuccessful || failed {
                    out.push(super::job_description(&job));
                }
            }
            Ok(None) => {}
            Err(e) => return Envelope::from_service(e),
        }
    }
    Envelope::ok(Json::Array(out))
}

/// `task/release` (production role).
pub(crate) async fn release(state: &AppState, call: &Call) -> Envelope {
    command(state, call, TaskCommand::Release).await
}

/// `task/avalanche` (production role).
pub(crate) async fn avalanche(state: &AppState, call: &Call) -> Envelope {
    command(state, call, TaskCommand::Avalanche).await
}

/// `task/change_attribute` (production role): ramCount, wallTime, cpuTime or coreCount.
pub(crate) async fn change_attribute(state: &AppState, call: &Call) -> Envelope {
    let name = call.args.text("attribute_name").unwrap_or_default();
    let value = call.args.int("value").unwrap_or_default();
    changed(
        state
            .service
            .change_task_attribute(task_id(call), name, value)
            .await,
    )
}

/// `task/change_split_rule` (production role): a rule by its two-letter tag.
pub(crate) async fn change_split_rule(state: &AppState, call: &Call) -> Envelope {
    let tag = call.args.text("attribute_name").unwrap_or_default();
    let value = match call.args.get("value") {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    match state
        .service
        .change_task_split_rule(task_id(call), tag, &value)
        .await
    {
        Err(panda_service::ServiceError::BadRequest(m)) if m.contains("not a valid attribute") => {
            Envelope {
                success: false,
                message: m,
                data: json!(2),
            }
        }
        other => changed(other),
    }
}

/// `task/reassign`: the task to a site (or nucleus, or cloud), its unfinished jobs killed as
/// `mode` says (`kill`, `soft`, `nokill`). Only the task's owner or the production role.
pub(crate) async fn reassign(state: &AppState, call: &Call) -> Envelope {
    let id = task_id(call);
    if let Some(refused) = refuse_unless_owner(state, call, id).await {
        return refused;
    }
    let mode = match panda_service::task_admin::ReassignMode::parse(call.args.text("mode")) {
        Ok(mode) => mode,
        Err(e) => return Envelope::from_service(e),
    };
    coded(
        state
            .service
            .reassign_task(
                &call.identity,
                id,
                call.args.text("site"),
                call.args.text("cloud"),
                call.args.text("nucleus"),
                mode,
            )
            .await,
    )
}

/// `task/enable_job_cloning` (production role; the task is `jedi_task_id`, as upstream).
pub(crate) async fn enable_job_cloning(state: &AppState, call: &Call) -> Envelope {
    let id = call.args.int("jedi_task_id").unwrap_or_default();
    match state
        .service
        .enable_job_cloning(
            id,
            call.args.text("mode"),
            call.args.int("multiplicity"),
            call.args.int("num_sites"),
        )
        .await
    {
        Ok(true) => Envelope::ok(Json::Null),
        Ok(false) => Envelope::fail("task not found"),
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/disable_job_cloning` (production role).
pub(crate) async fn disable_job_cloning(state: &AppState, call: &Call) -> Envelope {
    let id = call.args.int("jedi_task_id").unwrap_or_default();
    match state.service.disable_job_cloning(id).await {
        Ok(true) => Envelope::ok(Json::Null),
        Ok(false) => Envelope::fail("task not found"),
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/enable_jumbo_jobs` (production role).
pub(crate) async fn enable_jumbo_jobs(state: &AppState, call: &Call) -> Envelope {
    coded(
        state
            .service
            .enable_jumbo_jobs(
                task_id(call),
                call.args.int("jumbo_jobs_total").unwrap_or_default(),
                call.args.int("jumbo_jobs_per_site"),
            )
            .await,
    )
}

/// `task/reassign_global_share` (production role).
pub(crate) async fn reassign_global_share(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("task_id_list");
    let share = call.args.text("share").unwrap_or_default();
    match state
        .service
        .reassign_global_share(&ids, share, call.args.flag("reassign_running_jobs"))
        .await
    {
        Ok(changed) => Envelope {
            success: true,
            message: format!("{changed} tasks changed"),
            data: json!(0),
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `task/get_jumbo_job_datasets`: `{jediTaskID: {"status", "datasets"}}`.
pub(crate) async fn get_jumbo_job_datasets(state: &AppState, call: &Call) -> Envelope {
    let from = call.args.int("from_offset").unwrap_or_default();
    let to = call.args.int("to_offset").unwrap_or(0);
    match state.service.jumbo_job_datasets(from, to).await {
        Ok(tasks) => Envelope::ok(Json::Object(
            tasks
                .into_iter()
                .map(|(id, status, datasets)| {
                    (
                        id.to_string(),
                        json!({"status": status, "datasets": datasets}),
                    )
                })
                .collect(),
        )),
        Err(e) => Envelope::from_service(e),
    }
}
