//! The pilot's calls on the legacy dispatcher.

use panda_service::lookups::JobScope;
use panda_service::worker_nodes::PilotStatus;
use panda_service::{pilot_report, GetJobRequest, GetJobResult, PilotReport, UpdateResult};
use serde_json::{json, Value as Json};

use super::protocol::{json_response, text_response, Protocol, SC_NO_JOBS, SC_ROLE, SC_SUCCESS};
use super::{LegacyCall, LegacyError, LegacyResult};
use crate::body::LegacyParams;
use crate::job_dict::{job_entries, trailing_entries};
use crate::AppState;

/// Upstream's errorDialog for a caller without the production or pilot role.
const NO_ROLE: &str = "no production/pilot role in VOMS FQANs or non pilot owner";

/// `int(float(value))`, as upstream converts numeric parameters.
fn number(params: &LegacyParams, name: &str) -> Result<Option<i64>, LegacyError> {
    Ok(pilot_report::number(name, params.get(name))?)
}

fn text(params: &LegacyParams, name: &str) -> Option<String> {
    params.value(name).map(str::to_string)
}

pub(crate) async fn get_job(state: &AppState, call: &LegacyCall) -> LegacyResult {
    let p = &call.params;
    let site = text(p, "siteName")
        .ok_or_else(|| LegacyError::BadRequest("missing parameter siteName".into()))?;
    let request = GetJobRequest {
        site: site.clone(),
        prod_source_label: text(p, "prodSourceLabel"),
        memory: number(p, "mem")?.map(|m| m.max(0)),
        disk: number(p, "diskSpace")?.map(|d| d.max(0)),
        node: text(p, "node"),
        computing_element: text(p, "computingElement"),
        scheduler_id: text(p, "schedulerID"),
        prod_user_id: text(p, "prodUserID"),
        task_id: number(p, "taskID")?,
        resource_type: text(p, "resourceType"),
        remaining_time: number(p, "remaining_time")?,
        background: p.get("background") == Some("True"),
        n_jobs: number(p, "nJobs")?.map(|n| n.max(1) as usize),
    };
    let bulk = request.n_jobs.is_some();
    let result = state
        .service
        .get_jobs(&call.identity, &request)
        .await
        .map_err(LegacyError::from)?;
    tracing::info!(target: "panda::pilot_requests", method = "getJob", site = %site,
        node = request.node.as_deref().unwrap_or(""),
        label = request.prod_source_label.as_deref().unwrap_or(""),
        jobs = match &result { GetJobResult::Jobs(out) => out.jobs.len(), _ => 0 });
    let out = match result {
        GetJobResult::Jobs(out) => out,
        GetJobResult::NoJobs(reason) => {
            return Ok(
                Protocol::with_dialog(SC_NO_JOBS, &reason, call.json).into_response(call.json)
            )
        }
        GetJobResult::NoRole(_) => {
            return Ok(Protocol::with_dialog(SC_ROLE, NO_ROLE, call.json).into_response(call.json))
        }
    };
    let mut dicts: Vec<Protocol> = out
        .jobs
        .iter()
        .map(|job| {
            let mut response = Protocol::new(SC_SUCCESS);
            response.extend(job_entries(job, &out.queue.data));
            response.extend(trailing_entries(job, &out));
            response
        })
        .collect();
    if !bulk {
        return Ok(dicts.remove(0).into_response(call.json));
    }
    let list = Json::Array(dicts.iter().map(Protocol::to_json).collect());
    let mut response = Protocol::new(SC_SUCCESS);
    if call.json {
        response.push("jobs", list);
    } else {
        response.push("jobs", json!(list.to_string()));
    }
    Ok(response.into_response(call.json))
}

/// One updateJob, as a protocol answer (shared with updateJobsInBulk).
async fn update_one(
    state: &AppState,
    call: &LegacyCall,
    params: &LegacyParams,
) -> Result<Protocol, LegacyError> {
    if !call.authorized {
        return Ok(Protocol::with_dialog(SC_ROLE, NO_ROLE, call.json));
    }
    if params.get("jobId") == Some("NULL") {
        return Ok(Protocol::new(SC_SUCCESS));
    }
    if params.get("state").is_none() {
        return Err(LegacyError::BadRequest("missing parameter state".into()));
    }
    let update = PilotReport::decode(params)?;
    let state_name = update.state.clone();
    let panda_id = update.panda_id;
    let result = state
        .service
        .update_job(&call.identity, update)
        .await
        .map_err(LegacyError::from)?;
    tracing::info!(target: "panda::pilot_requests", method = "updateJob", panda_id,
        state = %state_name, result = ?result);
    Ok(match result {
        UpdateResult::Done { command } => {
            let mut response = Protocol::new(SC_SUCCESS);
            response.push("command", json!(command));
            response
        }
        UpdateResult::Ignored => Protocol::new(SC_SUCCESS),
        UpdateResult::NoRole(_) => Protocol::with_dialog(SC_ROLE, NO_ROLE, call.json),
    })
}

pub(crate) async fn update_job(state: &AppState, call: &LegacyCall) -> LegacyResult {
    let response = update_one(state, call, &call.params).await?;
    Ok(response.into_response(call.json))
}

/// `jobList` is a JSON list of updateJob parameter sets; the answer is
/// `[true, [<each updateJob answer as its client would receive it>]]`, always text.
pub(crate) async fn update_jobs_in_bulk(state: &AppState, call: &LegacyCall) -> LegacyResult {
    let harvester = call
        .params
        .get("harvester_id")
        .unwrap_or("None")
        .to_string();
    let fail = |what: String| {
        text_response(
            json!([
                false,
                format!("updateJobsInBulk {harvester} failed with {what}")
            ])
            .to_string(),
        )
    };
    let Some(list) = call.params.get("jobList") else {
        return Ok(fail("KeyError 'jobList'".into()));
    };
    if let Err(e) = crate::body::check_json_shape(
        list.as_bytes(),
        state.limits.max_json_values,
        state.limits.max_json_depth,
    ) {
        return Err(LegacyError::BadRequest(format!("jobList: {}", e.message())));
    }
    let jobs: Vec<serde_json::Map<String, Json>> = match serde_json::from_str(list) {
        Ok(jobs) => jobs,
        Err(e) => return Ok(fail(format!("ValueError {e}"))),
    };
    if jobs.len() > crate::MAX_IDS {
        return Err(LegacyError::BadRequest(format!(
            "jobList: {} jobs, more than the limit of {}",
            jobs.len(),
            crate::MAX_IDS
        )));
    }
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let params = LegacyParams::from_json_object(job);
        for key in ["jobId", "state"] {
            if params.get(key).is_none() {
                return Ok(fail(format!("KeyError '{key}'")));
            }
        }
        let answer = match update_one(state, call, &params).await {
            Ok(response) => response,
            Err(LegacyError::BadRequest(m)) => return Ok(fail(format!("ValueError {m}"))),
            Err(other) => return Err(other),
        };
        answers.push(if call.json {
            json!({"type": "json", "content": answer.to_json().to_string()})
        } else {
            json!(answer.to_urlencoded())
        });
    }
    Ok(text_response(json!([true, answers]).to_string()))
}

fn ids(text: &str, separator: Option<char>) -> Result<Vec<Option<i64>>, LegacyError> {
    let parts: Vec<&str> = match separator {
        Some(c) => text.split(c).take(crate::MAX_IDS + 1).collect(),
        None => text.split_whitespace().take(crate::MAX_IDS + 1).collect(),
    };
    if parts.len() > crate::MAX_IDS {
        return Err(LegacyError::BadRequest(format!(
            "ids: more than the limit of {} IDs",
            crate::MAX_IDS
        )));
    }
    Ok(parts
        .into_iter()
        .filter(|p| separator.is_none() || !p.trim().is_empty() || text.trim().is_empty())
        .map(|p| p.trim().parse::<i64>().ok())
        .collect())
}

/// Always urlencoded: `StatusCode=0&status=running%2Bnotfound&attemptNr=1%2B0`.
pub(crate) async fn get_status(state: &AppState, call: &LegacyCall) -> LegacyResult {
    let requested = ids(call.params.get("ids").unwrap_or(""), None)?;
    let known: Vec<i64> = requested.iter().flatten().copied().collect();
    let states = state
        .service
        .job_states(&known, JobScope::Dispatched)
        .await?;
    let (mut statuses, mut attempts) = (Vec::new(), Vec::new());
    for id in &requested {
        match id.and_then(|i| states.get(&i)) {
            Some(s) => {
                statuses.push(s.status.clone());
                attempts.push(s.attempt_nr.to_string());
            }
            None => {
                statuses.push("notfound".to_string());
                attempts.push("0".to_string());
            }
        }
    }
    let mut response = Protocol::new(SC_SUCCESS);
    response.push("status", json!(statuses.join("+")));
    response.push("attemptNr", json!(attempts.join("+")));
    Ok(text_response(response.to_urlencoded()))
}

/// Always JSON: `{"StatusCode": 0, "data": [{"command": ..., "status": ...}, ...]}`; archived
/// jobs count for an hour after they end.
pub(crate) async fn check_job_status(state: &AppState, call: &LegacyCall) -> LegacyResult {
    let requested = ids(call.params.get("ids").unwrap_or(""), Some(','))?;
    let known: Vec<i64> = requested.iter().flatten().copied().collect();
    let checks = state
        .service
        .job_checks(&known, JobScope::Dispatched)
        .await?;
    let data: Vec<Json> = requested
        .iter()
        .map(|id| match id {
            None => json!({"command": null, "status": null}),
            Some(i) => match checks.get(i) {
                Some(c) => json!({"command": c.command, "status": c.status}),
                None => json!({"command": "tobekilled", "status": "unknown"}),
            },
        })
        .collect();
    Ok(json_response(
        json!({"StatusCode": SC_SUCCESS, "data": data}).to_string(),
    ))
}

pub(crate) async fn get_resource_types(state: &AppState, call: &LegacyCall) -> LegacyResult {
    let types: Vec<Json> = state
        .service
        .resource_types()
        .await?
        .into_iter()
        .map(|t| {
            json!({"resource_name": t.name, "mincore": t.min_core, "maxcore": t.max_core,
                   "minrampercore": t.min_ram_per_core, "maxrampercore": t.max_ram_per_core})
        })
        .collect();
    let mut response = Protocol::new(SC_SUCCESS);
    response.push("Returns", json!(0));
    response.push("ResourceTypes", Json::Array(types));
    Ok(response.into_response(call.json))
}

pub(crate) async fn update_worker_pilot_status(
    state: &AppState,
    call: &LegacyCall,
) -> LegacyResult {
    let p = &call.params;
    if call.identity.dn.is_none() {
        return Ok(text_response("failed to retrieve DN".into()));
    }
    if !call.authorized {
        return Ok(text_response("production or pilot role is required".into()));
    }
    let missing = ["site", "workerID", "harvesterID", "status"]
        .into_iter()
        .find(|k| p.get(k).is_none());
    if let Some(key) = missing {
        return Err(LegacyError::BadRequest(format!("missing parameter {key}")));
    }
    let Some(status) = PilotStatus::parse(p.get("status").unwrap_or("")) else {
        return Ok(text_response(
            "Invalid worker state. The worker state has to be in ('started', 'finished')".into(),
        ));
    };
    let worker_id = number(p, "workerID")?
        .ok_or_else(|| LegacyError::BadRequest("workerID is empty".into()))?;
    let harvester_id = p.get("harvesterID").unwrap_or("");
    state
        .service
        .set_worker_pilot_status(harvester_id, worker_id, status, p.value("node_id"))
        .await?;
    Ok(Protocol::new(SC_SUCCESS).into_response(call.json))
}
