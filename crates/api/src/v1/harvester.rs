//! `harvester`: what Harvester instances report (heartbeats, workers, statistics, metrics,
//! dialogs) and the commands they fetch, in upstream's `harvester_*` tables.
//!
//! Harvester sends datetimes as `"datetime/YYYY-mm-dd HH:MM:SS.ffffff"`; plain
//! `YYYY-mm-dd HH:MM:SS[.f]` is accepted too. Worker keys that are not worker attributes are
//! ignored, as upstream ignores them; a value of the wrong type is refused with its key named.
//! Upstream fails the first heartbeat of a new instance (it answers "no instance record"
//! after inserting it); we answer success, since the instance is recorded.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;
use panda_core::identity::clean_user_id;
use panda_core::{ColumnType, Value};
use panda_store::{ColumnValue, WorkerStat, WorkerUpdate};
use serde_json::{json, Map, Value as Json};

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::AppState;

pub(crate) async fn route(state: &AppState, call: &Call, function: &str) -> Envelope {
    match function {
        "heartbeat" => heartbeat(state, call).await,
        "update_workers" => update_workers(state, call).await,
        "acquire_commands" => acquire_commands(state, call).await,
        "acknowledge_commands" => acknowledge_commands(state, call).await,
        "get_current_worker_id" => current_worker_id(state, call).await,
        "report_worker_statistics" => report_worker_statistics(state, call).await,
        "get_worker_statistics" => worker_statistics(state).await,
        "update_service_metrics" => update_service_metrics(state, call).await,
        _ => add_dialogs(state, call).await,
    }
}

fn harvester_id(call: &Call) -> &str {
    call.args.text("harvester_id").unwrap_or_default()
}

/// A Harvester datetime.
fn parse_time(text: &str) -> Option<NaiveDateTime> {
    let text = text.strip_prefix("datetime/").unwrap_or(text).trim();
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f"))
        .ok()
}

/// Converts a JSON value for a column, cutting text to the column's length.
fn column_value(key: &str, value: &Json, column_type: ColumnType) -> Result<Value, String> {
    let converted = json_to_column(key, value, column_type)?;
    column_type
        .check(&converted)
        .map_err(|why| format!("{key}: {why}"))?;
    Ok(converted)
}

fn json_to_column(key: &str, value: &Json, column_type: ColumnType) -> Result<Value, String> {
    let bad = || format!("{key}: {value} is not a valid {column_type:?} value");
    match (value, column_type) {
        (Json::Null, t) => Ok(t.null()),
        (Json::String(s), ColumnType::Timestamp) => {
            parse_time(s).map(|t| Value::Time(Some(t))).ok_or_else(bad)
        }
        (Json::String(s), ColumnType::VarChar(n)) => {
            Ok(Value::Text(Some(s.chars().take(n as usize).collect())))
        }
        (Json::Number(n), ColumnType::VarChar(_)) => Ok(Value::Text(Some(n.to_string()))),
        (Json::Number(n), ColumnType::Int | ColumnType::BigInt | ColumnType::SmallInt) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                    .map(|f| f as i64)
            })
            .map(|i| Value::Int(Some(i)))
            .ok_or_else(bad),
        (Json::String(s), ColumnType::Int | ColumnType::BigInt | ColumnType::SmallInt) => {
            Value::parse(column_type, s).map_err(|_| bad())
        }
        _ => Err(bad()),
    }
}

/// Columns a heartbeat's `data` may set (upstream uses the keys as column names).
const INSTANCE_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("description", "description", ColumnType::VarChar(200)),
    ("starttime", "starttime", ColumnType::Timestamp),
    ("sw_version", "sw_version", ColumnType::VarChar(50)),
    ("commit_stamp", "commit_stamp", ColumnType::VarChar(100)),
];

async fn heartbeat(state: &AppState, call: &Call) -> Envelope {
    let data = call
        .args
        .get("data")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    let mut fields: Vec<ColumnValue> = Vec::new();
    let mut commands = Vec::new();
    for (key, value) in &data {
        if key == "commands" {
            for item in value.as_array().into_iter().flatten() {
                let get = |k: &str| item.get(k).and_then(Json::as_str).map(str::to_string);
                match (get("command"), get("computingSite"), get("resourceType")) {
                    (Some(c), Some(s), Some(r)) => commands.push((c, s, r)),
                    _ => return Envelope::fail(
                        "data.commands: each entry needs command, computingSite and resourceType",
                    ),
                }
            }
            continue;
        }
        let lower = key.to_ascii_lowercase();
        let Some((_, column, column_type)) = INSTANCE_COLUMNS.iter().find(|(k, ..)| *k == lower)
        else {
            return Envelope::fail(format!("data: {key} is not a harvester instance attribute"));
        };
        match column_value(key, value, *column_type) {
            Ok(v) => fields.push((column, v)),
            Err(e) => return Envelope::fail(format!("Type error: data.{e}")),
        }
    }
    let owner = call
        .identity
        .dn
        .as_deref()
        .map(clean_user_id)
        .unwrap_or_default();
    let host = call.peer.map(|p| p.ip().to_string()).unwrap_or_default();
    match state
        .service
        .store()
        .harvester_heartbeat(harvester_id(call), &owner, &host, &fields, &commands)
        .await
    {
        Ok(_) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e.into()),
    }
}

/// Worker attributes (upstream's `WorkerSpec`) and their `harvester_workers` columns.
const WORKER_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("batchID", "batchid", ColumnType::VarChar(80)),
    ("queueName", "queuename", ColumnType::VarChar(80)),
    ("status", "status", ColumnType::VarChar(80)),
    ("computingSite", "computingsite", ColumnType::VarChar(128)),
    ("nCore", "ncore", ColumnType::Int),
    ("nodeID", "nodeid", ColumnType::VarChar(80)),
    ("submitTime", "submittime", ColumnType::Timestamp),
    ("startTime", "starttime", ColumnType::Timestamp),
    ("endTime", "endtime", ColumnType::Timestamp),
    ("stdOut", "stdout", ColumnType::VarChar(250)),
    ("stdErr", "stderr", ColumnType::VarChar(250)),
    ("batchLog", "batchlog", ColumnType::VarChar(250)),
    ("jdl", "jdl", ColumnType::VarChar(250)),
    ("resourceType", "resourcetype", ColumnType::VarChar(56)),
    ("nativeExitCode", "nativeexitcode", ColumnType::Int),
    ("nativeStatus", "nativestatus", ColumnType::VarChar(80)),
    ("diagMessage", "diagmessage", ColumnType::VarChar(500)),
    ("nJobs", "njobs", ColumnType::Int),
    (
        "computingElement",
        "computingelement",
        ColumnType::VarChar(128),
    ),
    ("submissionHost", "submissionhost", ColumnType::VarChar(128)),
    ("harvesterHost", "harvesterhost", ColumnType::VarChar(128)),
    ("jobType", "jobtype", ColumnType::VarChar(52)),
    ("minRamCount", "minramcount", ColumnType::Int),
    ("errorCode", "errorcode", ColumnType::Int),
];

fn worker_update(index: usize, worker: &Json) -> Result<WorkerUpdate, String> {
    let Some(map) = worker.as_object() else {
        return Err(format!("workers[{index}] is not an object"));
    };
    let worker_id = match map.get("workerID") {
        Some(Json::Number(n)) => n.as_i64(),
        Some(Json::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("workers[{index}] needs an integer workerID"))?;
    let mut columns = Vec::new();
    for (key, column, column_type) in WORKER_COLUMNS {
        if let Some(value) = map.get(*key) {
            let value = column_value(key, value, *column_type)
                .map_err(|e| format!("Type error: workers[{index}].{e}"))?;
            columns.push((*column, value));
        }
    }
    let panda_ids = match map.get("pandaid_list") {
        None | Some(Json::Null) => None,
        Some(Json::Array(ids)) => Some(
            ids.iter()
                .map(Json::as_i64)
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| format!("workers[{index}].pandaid_list must hold PandaIDs"))?,
        ),
        Some(_) => return Err(format!("workers[{index}].pandaid_list must be a list")),
    };
    Ok(WorkerUpdate {
        worker_id,
        columns,
        panda_ids,
    })
}

async fn update_workers(state: &AppState, call: &Call) -> Envelope {
    let list = call
        .args
        .get("workers")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let workers = match list
        .iter()
        .enumerate()
        .map(|(i, w)| worker_update(i, w))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(workers) => workers,
        Err(e) => return Envelope::fail(e),
    };
    match state
        .service
        .store()
        .update_workers(harvester_id(call), &workers)
        .await
    {
        Ok(()) => Envelope::ok(json!(vec![true; workers.len()])),
        Err(e) => Envelope::from_service(e.into()),
    }
}

async fn acquire_commands(state: &AppState, call: &Call) -> Envelope {
    let n = call.args.int("n_commands").unwrap_or(0).clamp(0, 1000);
    match state
        .service
        .store()
        .acquire_harvester_commands(harvester_id(call), n)
        .await
    {
        Ok(commands) => Envelope::ok(Json::Array(
            commands
                .into_iter()
                .map(|c| {
                    json!({
                        "command_id": c.command_id,
                        "command": c.command,
                        "params": c.params.and_then(|p| serde_json::from_str::<Json>(&p).ok()),
                        "ack_requested": c.ack_requested,
                        "creation_date": c.creation_date
                            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
                    })
                })
                .collect(),
        )),
        Err(e) => Envelope::from_service(e.into()),
    }
}

async fn acknowledge_commands(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("command_ids");
    match state
        .service
        .store()
        .acknowledge_harvester_commands(&ids)
        .await
    {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e.into()),
    }
}

async fn current_worker_id(state: &AppState, call: &Call) -> Envelope {
    match state
        .service
        .store()
        .max_worker_id(harvester_id(call))
        .await
    {
        Ok(Some(id)) => Envelope::ok(json!(id)),
        Ok(None) => Envelope::fail(format!(
            "no workers known for harvester_id={}",
            harvester_id(call)
        )),
        Err(e) => Envelope::from_service(e.into()),
    }
}

async fn report_worker_statistics(state: &AppState, call: &Call) -> Envelope {
    let site = call.args.text("panda_queue").unwrap_or_default();
    let text = call.args.text("statistics").unwrap_or_default();
    let parsed: Map<String, Json> = match serde_json::from_str(text) {
        Ok(Json::Object(map)) => map,
        _ => {
            return Envelope::fail(
                "statistics must be a JSON object {jobType: {resourceType: {status: n}}}",
            )
        }
    };
    let mut stats = Vec::new();
    for (job_type, by_resource) in &parsed {
        for (resource_type, by_status) in by_resource.as_object().into_iter().flatten() {
            if resource_type == "Undefined" {
                continue;
            }
            for (status, n) in by_status.as_object().into_iter().flatten() {
                let Some(n) = n.as_i64() else {
                    return Envelope::fail(format!(
                        "statistics: {job_type}.{resource_type}.{status} is not a count"
                    ));
                };
                stats.push(WorkerStat {
                    harvester_id: harvester_id(call).to_string(),
                    computing_site: site.to_string(),
                    resource_type: resource_type.clone(),
                    status: status.clone(),
                    job_type: job_type.clone(),
                    n_workers: n,
                });
            }
        }
    }
    match state
        .service
        .store()
        .replace_worker_stats(harvester_id(call), site, &stats)
        .await
    {
        Ok(()) => Envelope {
            success: true,
            message: "OK".into(),
            data: Json::Null,
        },
        Err(e) => Envelope::from_service(e.into()),
    }
}

async fn worker_statistics(state: &AppState) -> Envelope {
    let stats = match state.service.store().worker_stats().await {
        Ok(stats) => stats,
        Err(e) => return Envelope::from_service(e.into()),
    };
    type Nested = BTreeMap<
        String,
        BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<String, i64>>>>,
    >;
    let mut out: Nested = BTreeMap::new();
    for s in stats {
        *out.entry(s.computing_site)
            .or_default()
            .entry(s.harvester_id)
            .or_default()
            .entry(s.job_type)
            .or_default()
            .entry(s.resource_type)
            .or_default()
            .entry(s.status)
            .or_default() += s.n_workers;
    }
    Envelope::ok(json!(out))
}

async fn update_service_metrics(state: &AppState, call: &Call) -> Envelope {
    let list = call
        .args
        .get("metrics")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let parts = entry.as_array().map(Vec::as_slice).unwrap_or_default();
        let (Some(time), Some(host), Some(metrics)) = (
            parts.first().and_then(Json::as_str).and_then(parse_time),
            parts.get(1).and_then(Json::as_str),
            parts.get(2),
        ) else {
            return Envelope::fail(format!(
                "metrics[{i}] must be [creation time, host, metrics]"
            ));
        };
        let text = match metrics {
            Json::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push((time, host.to_string(), text));
    }
    match state
        .service
        .store()
        .add_harvester_metrics(harvester_id(call), &rows)
        .await
    {
        Ok(()) => Envelope::ok(json!([true])),
        Err(e) => Envelope::from_service(e.into()),
    }
}

const DIALOG_COLUMNS: &[(&str, &str, ColumnType)] = &[
    ("diagID", "diagid", ColumnType::BigInt),
    ("moduleName", "modulename", ColumnType::VarChar(100)),
    ("identifier", "identifier", ColumnType::VarChar(100)),
    ("creationTime", "creationtime", ColumnType::Timestamp),
    ("messageLevel", "messagelevel", ColumnType::VarChar(10)),
    ("diagMessage", "diagmessage", ColumnType::VarChar(500)),
];

async fn add_dialogs(state: &AppState, call: &Call) -> Envelope {
    let list = call
        .args
        .get("dialogs")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut dialogs = Vec::with_capacity(list.len());
    for (i, dialog) in list.iter().enumerate() {
        let Some(map) = dialog.as_object() else {
            return Envelope::fail(format!("dialogs[{i}] is not an object"));
        };
        let mut row: Vec<ColumnValue> = Vec::new();
        for (key, column, column_type) in DIALOG_COLUMNS {
            let value = match map.get(*key) {
                Some(v) => match column_value(key, v, *column_type) {
                    Ok(v) => v,
                    Err(e) => return Envelope::fail(format!("Type error: dialogs[{i}].{e}")),
                },
                None if matches!(*key, "diagID" | "creationTime") => {
                    return Envelope::fail(format!("dialogs[{i}] needs {key}"));
                }
                None => continue,
            };
            row.push((*column, value));
        }
        dialogs.push(row);
    }
    match state
        .service
        .store()
        .add_harvester_dialogs(harvester_id(call), &dialogs)
        .await
    {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harvester_datetimes_parse_with_and_without_the_prefix() {
        assert!(parse_time("datetime/2026-11-25 10:00:00.123456").is_some());
        assert!(parse_time("2026-11-25 10:00:00").is_some());
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn worker_values_are_typed_and_cut() {
        let long = "x".repeat(300);
        let v = column_value("stdOut", &json!(long), ColumnType::VarChar(250)).expect("text");
        assert_eq!(v.as_str().map(str::len), Some(250));
        let err = column_value("nCore", &json!("eight"), ColumnType::Int).expect_err("bad");
        assert!(err.starts_with("nCore"), "{err}");
    }
}
