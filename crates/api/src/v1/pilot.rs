//! `pilot`: the same job logic as the legacy dispatcher, with `/api/v1` names and envelopes:
//! `acquire_jobs`, `update_job`, `update_jobs_bulk`.

use panda_service::lookups::JobScope;
use panda_service::pilot_report::V1_FIELD_NAMES;
use panda_service::worker_nodes::{CpuNodeReport, GpuNodeReport, NodeRecord, PilotStatus};
use panda_service::{GetJobRequest, GetJobResult, PilotReport, ReportFields, UpdateResult};
use serde_json::{json, Map, Value as Json};

use super::args::{opt, req, validate, ArgsExt, Param, Ty::*};
use super::{Call, Envelope};
use crate::body::legacy_string;
use crate::job_dict::{job_entries, trailing_entries};
use crate::AppState;

/// The declared arguments of `update_job` (the service's `V1_FIELD_NAMES` says which report
/// field each one is).
pub(crate) const UPDATE_PARAMS: &[Param] = &[
    req("job_id", Int),
    req("job_status", Str),
    opt("job_output_report", Str),
    opt("meta_data", Str),
    opt("pilot_log", Str),
    opt("stdout", Str),
    opt("node", Str),
    opt("site_name", Str),
    opt("scheduler_id", Str),
    opt("pilot_id", Str),
    opt("batch_id", Str),
    opt("trans_exit_code", Int),
    opt("pilot_error_code", Int),
    opt("exe_error_code", Int),
    opt("pilot_error_diag", Str),
    opt("exe_error_diag", Str),
    opt("cpu_consumption_time", Float),
    opt("cpu_consumption_unit", Str),
    opt("cpu_conversion_factor", Float),
    opt("cpu_architecture_level", Str),
    opt("pilot_timing", Str),
    opt("start_time", Str),
    opt("end_time", Str),
    opt("n_events", Int),
    opt("n_input_files", Int),
    opt("attempt_nr", Int),
    opt("job_metrics", Str),
    opt("job_sub_status", Str),
    opt("core_count", Int),
    opt("mean_core_count", Float),
    opt("max_rss", Float),
    opt("max_vmem", Float),
    opt("max_swap", Float),
    opt("max_pss", Float),
    opt("avg_rss", Float),
    opt("avg_vmem", Float),
    opt("avg_swap", Float),
    opt("avg_pss", Float),
    opt("tot_rchar", Float),
    opt("tot_wchar", Float),
    opt("tot_rbytes", Float),
    opt("tot_wbytes", Float),
    opt("rate_rchar", Float),
    opt("rate_wchar", Float),
    opt("rate_rbytes", Float),
    opt("rate_wbytes", Float),
    opt("corrupted_files", Str),
    opt("grid", Str),
    opt("source_site", Str),
    opt("destination_site", Str),
    opt("timeout", Int),
];

/// Validated `update_job` arguments as a pilot report's fields, by their legacy names; JSON
/// values read as upstream's parser reads them.
struct ReportArgs(Vec<(&'static str, String)>);

impl ReportArgs {
    fn new(args: &Map<String, Json>) -> ReportArgs {
        ReportArgs(
            V1_FIELD_NAMES
                .iter()
                .filter_map(|(v1, legacy)| args.get(*v1).map(|v| (*legacy, legacy_string(v))))
                .collect(),
        )
    }
}

impl ReportFields for ReportArgs {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The declared arguments of `acquire_jobs`. `resourceType` is what Harvester's job fetcher
/// sends (upstream rejects it); it is read as `resource_type`.
pub(crate) const ACQUIRE_PARAMS: &[Param] = &[
    req("site_name", Str),
    opt("timeout", Int),
    opt("memory", Int),
    opt("disk_space", Int),
    opt("prod_source_label", Str),
    opt("node", Str),
    opt("computing_element", Str),
    opt("prod_user_id", Str),
    opt("get_proxy_key", Str),
    opt("task_id", Int),
    opt("n_jobs", Int),
    opt("background", Bool),
    opt("resource_type", Str),
    opt("resourceType", Str),
    opt("harvester_id", Str),
    opt("worker_id", Int),
    opt("scheduler_id", Str),
    opt("job_type", Str),
    opt("via_topic", Bool),
    opt("remaining_time", Int),
];

/// A text argument; an empty string counts as absent.
fn text(args: &Map<String, Json>, name: &str) -> Option<String> {
    args.text(name)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

pub(crate) async fn acquire_jobs(state: &AppState, call: &Call) -> Envelope {
    let args = &call.args;
    let Some(site) = text(args, "site_name") else {
        return Envelope::fail("Argument error: site_name must not be empty");
    };
    let request = GetJobRequest {
        site: site.clone(),
        prod_source_label: text(args, "prod_source_label"),
        memory: args.int("memory").map(|m| m.max(0)),
        disk: args.int("disk_space").map(|d| d.max(0)),
        node: text(args, "node"),
        computing_element: text(args, "computing_element"),
        scheduler_id: text(args, "scheduler_id"),
        prod_user_id: text(args, "prod_user_id"),
        task_id: args.int("task_id"),
        resource_type: text(args, "resource_type").or_else(|| text(args, "resourceType")),
        remaining_time: args.int("remaining_time"),
        background: args.flag("background"),
        n_jobs: Some(args.int("n_jobs").unwrap_or(1).clamp(1, 1000) as usize),
    };
    match state.service.get_jobs(&call.identity, &request).await {
        Ok(GetJobResult::Jobs(out)) => {
            let list: Vec<Json> = out
                .jobs
                .iter()
                .map(|job| {
                    let mut map = Map::new();
                    map.insert("StatusCode".into(), json!(0));
                    map.extend(job_entries(job, &out.queue.data));
                    map.extend(trailing_entries(job, &out));
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

/// One update_job, from validated `/api/v1` arguments.
async fn update_one(state: &AppState, call: &Call, args: &Map<String, Json>) -> Envelope {
    let update = match PilotReport::decode(&ReportArgs::new(args)) {
        Ok(update) => update,
        Err(e) => return Envelope::from_pilot_call(e),
    };
    let reported = update.state.clone();
    match state.service.update_job(&call.identity, update).await {
        // No command is the text "NULL", as upstream says it.
        Ok(UpdateResult::Done { command }) => {
            Envelope::ok(json!({"StatusCode": 0, "command": command}))
        }
        Ok(UpdateResult::Ignored) => Envelope {
            success: false,
            message: format!("Invalid job status: {reported}"),
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
    let list = call
        .args
        .get("job_list")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let mut answers = Vec::with_capacity(list.len());
    for item in &list {
        let answer = match item {
            Json::Object(raw) => match validate(UPDATE_PARAMS, raw, false) {
                Ok(args) => update_one(state, call, &args).await,
                Err(e) => Envelope::fail(e),
            },
            _ => Envelope::fail("Argument error: each job update must be an object"),
        };
        answers.push(serde_json::to_value(&answer).unwrap_or(Json::Null));
    }
    Envelope::ok(Json::Array(answers))
}

/// `pilot/get_job_status`: `{"job_id", "status", "attempt_number"}` per PandaID; `not found`
/// for a job in no table.
pub(crate) async fn get_job_status(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("job_ids");
    let states = match state.service.job_states(&ids, JobScope::Everywhere).await {
        Ok(states) => states,
        Err(e) => return Envelope::from_service(e),
    };
    let data: Vec<Json> = ids
        .iter()
        .map(|id| match states.get(id) {
            Some(s) => json!({"job_id": id, "status": s.status, "attempt_number": s.attempt_nr}),
            None => json!({"job_id": id, "status": "not found", "attempt_number": 0}),
        })
        .collect();
    Envelope::ok(Json::Array(data))
}

/// `pilot/update_worker_status`: a pilot under Harvester reports its worker `started` or
/// `finished`, as the legacy `updateWorkerPilotStatus`.
pub(crate) async fn update_worker_status(state: &AppState, call: &Call) -> Envelope {
    let args = &call.args;
    let text = args.text("status").unwrap_or_default();
    let Some(status) = PilotStatus::parse(text) else {
        return Envelope::fail(format!(
            "invalid worker status {text:?}: it must be started or finished"
        ));
    };
    let worker_id = args.int("worker_id").unwrap_or_default();
    let harvester_id = args.text("harvester_id").unwrap_or_default();
    match state
        .service
        .set_worker_pilot_status(harvester_id, worker_id, status, args.text("node_id"))
        .await
    {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e),
    }
}

/// `pilot/update_worker_node` (`gpu` false) and `update_worker_node_gpu` (`gpu` true): the
/// node's hardware (`panda_service::worker_nodes` has the rules).
pub(crate) async fn update_worker_node(state: &AppState, call: &Call, gpu: bool) -> Envelope {
    let args = &call.args;
    let text = |name: &str| args.text(name).unwrap_or_default().to_string();
    let some_text = |name: &str| args.text(name).map(str::to_string);
    let recorded = if gpu {
        let report = GpuNodeReport {
            site: text("site"),
            host_name: text("host_name"),
            vendor: text("vendor"),
            model: text("model"),
            count: args.int("count"),
            vram: args.int("vram"),
            architecture: some_text("architecture"),
            framework: some_text("framework"),
            framework_version: some_text("framework_version"),
            driver_version: some_text("driver_version"),
        };
        state.service.update_worker_node_gpu(&report).await
    } else {
        let report = CpuNodeReport {
            site: text("site"),
            host_name: text("host_name"),
            cpu_model: text("cpu_model"),
            panda_queue: some_text("panda_queue"),
            n_logical_cpus: args.int("n_logical_cpus"),
            n_sockets: args.int("n_sockets"),
            cores_per_socket: args.int("cores_per_socket"),
            threads_per_core: args.int("threads_per_core"),
            cpu_architecture: some_text("cpu_architecture"),
            cpu_architecture_level: some_text("cpu_architecture_level"),
            clock_speed: args.float("clock_speed"),
            total_memory: args.int("total_memory"),
            total_local_disk: args.int("total_local_disk"),
        };
        state.service.update_worker_node(&report).await
    };
    let what = if gpu {
        "worker node GPU"
    } else {
        "worker node"
    };
    match recorded {
        Ok(NodeRecord::Inserted) => Envelope::ok_with(format!("Inserted new {what}.")),
        Ok(NodeRecord::Updated) => Envelope::ok_with(format!("Updated existing {what}.")),
        Err(e) => Envelope::from_service(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_update_job_argument_is_a_report_field() {
        let declared: Vec<&str> = UPDATE_PARAMS.iter().map(|p| p.name).collect();
        let mapped: Vec<&str> = V1_FIELD_NAMES.iter().map(|(v1, _)| *v1).collect();
        assert_eq!(declared, mapped);
    }
}
