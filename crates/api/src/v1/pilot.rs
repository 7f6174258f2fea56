//! `pilot`: the same job logic as the legacy dispatcher, with `/api/v1` names and envelopes:
//! `acquire_jobs`, `update_job`, `update_jobs_bulk`.

use panda_service::{GetJobRequest, GetJobResult, UpdateResult};
use serde_json::{json, Map, Value as Json};

use super::{Call, Envelope};
use crate::body::LegacyParams;
use crate::legacy::job_dict::job_entries;
use crate::legacy::pilot::job_update;
use crate::legacy::LegacyError;
use crate::AppState;

/// `/api/v1` argument names of update_job and their legacy names.
const UPDATE_NAMES: &[(&str, &str)] = &[
    ("job_id", "jobId"),
    ("job_status", "state"),
    ("job_output_report", "xml"),
    ("meta_data", "metaData"),
    ("pilot_log", "pilotLog"),
    ("stdout", "stdout"),
    ("node", "node"),
    ("site_name", "siteName"),
    ("scheduler_id", "schedulerID"),
    ("pilot_id", "pilotID"),
    ("batch_id", "batchID"),
    ("trans_exit_code", "transExitCode"),
    ("pilot_error_code", "pilotErrorCode"),
    ("exe_error_code", "exeErrorCode"),
    ("pilot_error_diag", "pilotErrorDiag"),
    ("exe_error_diag", "exeErrorDiag"),
    ("cpu_consumption_time", "cpuConsumptionTime"),
    ("cpu_consumption_unit", "cpuConsumptionUnit"),
    ("cpu_conversion_factor", "cpuConversionFactor"),
    ("cpu_architecture_level", "cpu_architecture_level"),
    ("pilot_timing", "pilotTiming"),
    ("start_time", "startTime"),
    ("end_time", "endTime"),
    ("n_events", "nEvents"),
    ("n_input_files", "nInputFiles"),
    ("attempt_nr", "attemptNr"),
    ("job_metrics", "jobMetrics"),
    ("job_sub_status", "jobSubStatus"),
    ("core_count", "coreCount"),
    ("mean_core_count", "meanCoreCount"),
    ("max_rss", "maxRSS"),
    ("max_vmem", "maxVMEM"),
    ("max_swap", "maxSWAP"),
    ("max_pss", "maxPSS"),
    ("avg_rss", "avgRSS"),
    ("avg_vmem", "avgVMEM"),
    ("avg_swap", "avgSWAP"),
    ("avg_pss", "avgPSS"),
    ("tot_rchar", "totRCHAR"),
    ("tot_wchar", "totWCHAR"),
    ("tot_rbytes", "totRBYTES"),
    ("tot_wbytes", "totWBYTES"),
    ("rate_rchar", "rateRCHAR"),
    ("rate_wchar", "rateWCHAR"),
    ("rate_rbytes", "rateRBYTES"),
    ("rate_wbytes", "rateWBYTES"),
    ("corrupted_files", "corruptedFiles"),
    ("grid", "grid"),
    ("source_site", "source_site"),
    ("destination_site", "destination_site"),
    ("timeout", "timeout"),
];

const ACQUIRE_NAMES: &[&str] = &[
    "site_name",
    "timeout",
    "memory",
    "disk_space",
    "prod_source_label",
    "node",
    "computing_element",
    "prod_user_id",
    "get_proxy_key",
    "task_id",
    "n_jobs",
    "background",
    "resource_type",
    "harvester_id",
    "worker_id",
    "scheduler_id",
    "job_type",
    "via_topic",
    "remaining_time",
];

fn unknown_argument(args: &Map<String, Json>, known: &[&str]) -> Option<Envelope> {
    args.keys()
        .find(|k| !known.contains(&k.as_str()))
        .map(|k| Envelope::fail(format!("Argument error: unexpected keyword argument '{k}'")))
}

fn text(args: &Map<String, Json>, name: &str) -> Option<String> {
    match args.get(name)? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(args: &Map<String, Json>, name: &str) -> Result<Option<i64>, Envelope> {
    match args.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Number(n)) => Ok(n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))),
        Some(Json::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(|f| Some(f as i64))
            .map_err(|_| Envelope::fail(format!("Type error: {name} must be an integer"))),
        Some(_) => Err(Envelope::fail(format!(
            "Type error: {name} must be an integer"
        ))),
    }
}

fn legacy_failure(error: LegacyError) -> Envelope {
    match error {
        LegacyError::BadRequest(m) => Envelope::fail(format!("Argument error: {m}")),
        LegacyError::Unavailable(_) | LegacyError::Failed { .. } => Envelope {
            success: false,
            message: "database error in the PanDA server".into(),
            data: json!({"StatusCode": 30}),
        },
    }
}

pub(crate) async fn acquire_jobs(state: &AppState, call: &Call) -> Envelope {
    if !call.identity.is_authenticated() {
        return Envelope::fail("SSL secure connection is required");
    }
    if let Some(e) = unknown_argument(&call.args, ACQUIRE_NAMES) {
        return e;
    }
    let Some(site) = text(&call.args, "site_name") else {
        return Envelope::fail("Argument error: missing required argument 'site_name'");
    };
    let numbers = (|| -> Result<_, Envelope> {
        Ok((
            int(&call.args, "memory")?,
            int(&call.args, "disk_space")?,
            int(&call.args, "task_id")?,
            int(&call.args, "n_jobs")?,
            int(&call.args, "remaining_time")?,
        ))
    })();
    let (memory, disk, task_id, n_jobs, remaining_time) = match numbers {
        Ok(n) => n,
        Err(e) => return e,
    };
    let request = GetJobRequest {
        site: site.clone(),
        prod_source_label: text(&call.args, "prod_source_label"),
        memory: memory.map(|m| m.max(0)),
        disk: disk.map(|d| d.max(0)),
        node: text(&call.args, "node"),
        computing_element: text(&call.args, "computing_element"),
        scheduler_id: text(&call.args, "scheduler_id"),
        prod_user_id: text(&call.args, "prod_user_id"),
        task_id,
        resource_type: text(&call.args, "resource_type"),
        remaining_time,
        background: call.args.get("background") == Some(&Json::Bool(true)),
        n_jobs: Some(n_jobs.unwrap_or(1).max(1) as usize),
    };
    match state.service.get_jobs(&call.identity, &request).await {
        Ok(GetJobResult::Jobs(jobs)) => {
            let queue: Json = state
                .service
                .store()
                .queue_json(&site)
                .await
                .ok()
                .flatten()
                .and_then(|q| serde_json::from_str(&q).ok())
                .unwrap_or(Json::Null);
            let list: Vec<Json> = jobs
                .iter()
                .map(|job| {
                    let mut map = Map::new();
                    map.insert("StatusCode".into(), json!(0));
                    map.extend(job_entries(job, &queue));
                    Json::Object(map)
                })
                .collect();
            Envelope::ok(json!({"StatusCode": 0, "jobs": list}))
        }
        Ok(GetJobResult::NoJobs(_)) => Envelope::fail("No jobs in PanDA"),
        Ok(GetJobResult::NoRole(m)) => Envelope::fail(m),
        Err(e) => Envelope::from_service(e),
    }
}

/// One update_job, from `/api/v1` arguments.
async fn update_one(state: &AppState, call: &Call, args: &Map<String, Json>) -> Envelope {
    if !call.identity.is_authenticated() {
        return Envelope::fail("SSL secure connection is required");
    }
    if !call.identity.production {
        return Envelope::fail("production or pilot role required");
    }
    let known: Vec<&str> = UPDATE_NAMES.iter().map(|(v1, _)| *v1).collect();
    if let Some(e) = unknown_argument(args, &known) {
        return e;
    }
    for required in ["job_id", "job_status"] {
        if !args.contains_key(required) {
            return Envelope::fail(format!(
                "Argument error: missing required argument '{required}'"
            ));
        }
    }
    let renamed: Map<String, Json> = args
        .iter()
        .filter_map(|(k, v)| {
            UPDATE_NAMES
                .iter()
                .find(|(v1, _)| v1 == k)
                .map(|(_, legacy)| (legacy.to_string(), v.clone()))
        })
        .collect();
    let update = match job_update(&LegacyParams::from_json_object(renamed)) {
        Ok(update) => update,
        Err(e) => return legacy_failure(e),
    };
    match state.service.update_job(&call.identity, update).await {
        Ok(UpdateResult::Done { command }) => {
            let command = if command == "NULL" {
                Json::Null
            } else {
                json!(command)
            };
            Envelope::ok(json!({"StatusCode": 0, "command": command}))
        }
        Ok(UpdateResult::Ignored) => Envelope {
            success: false,
            message: "invalid job_status".into(),
            data: json!({"StatusCode": 50}),
        },
        Ok(UpdateResult::NoRole(m)) => Envelope::fail(m),
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn update_job(state: &AppState, call: &Call) -> Envelope {
    update_one(state, call, &call.args).await
}

pub(crate) async fn update_jobs_bulk(state: &AppState, call: &Call) -> Envelope {
    let Some(Json::Array(list)) = call.args.get("job_list") else {
        return Envelope::fail("Argument error: job_list must be a list of job updates");
    };
    let mut answers = Vec::with_capacity(list.len());
    for item in list {
        let answer = match item {
            Json::Object(args) => update_one(state, call, args).await,
            _ => Envelope::fail("Argument error: each job update must be an object"),
        };
        answers.push(serde_json::to_value(&answer).unwrap_or(Json::Null));
    }
    Envelope::ok(Json::Array(answers))
}
