//! `event`: the event service's five functions (`panda_service::events` holds the rules).
//!
//! Where upstream's server and its client disagree, these answer what the client reads
//! (docs/API.md, "Event service"): Harvester sends `acquire_event_ranges` the legacy
//! argument names (`pandaID`, `jobsetID`, `taskID`, `nRanges`) and reads
//! `data["StatusCode"]` and `data["eventRanges"]`, so both names are taken and `data` is that
//! map; `update_event_ranges` answers `data` as the map Harvester reads (`StatusCode`,
//! `Returns`) with upstream's documented `Commands`, where upstream's own code builds a set.

use panda_service::events::{ranges_wanted, RangeReply};
use serde_json::{json, Value as Json};

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::legacy::events::{range_json, status_query_ids, statuses_json};
use crate::AppState;

/// The first of several names an integer argument may come under.
fn int_of(call: &Call, names: &[&str]) -> Option<i64> {
    names.iter().find_map(|n| call.args.int(n))
}

/// `event/acquire_event_ranges`.
pub(crate) async fn acquire_event_ranges(state: &AppState, call: &Call) -> Envelope {
    let Some(panda_id) = int_of(call, &["job_id", "pandaID"]) else {
        return Envelope::fail("Argument error: job_id (or pandaID) is required");
    };
    let requested = int_of(call, &["n_ranges", "nRanges"]).map(|n| n.to_string());
    let n = ranges_wanted(requested.as_deref());
    match state
        .service
        .acquire_event_ranges(&call.identity, panda_id, n)
        .await
    {
        Ok(ranges) => Envelope::ok(json!({
            "StatusCode": 0,
            "eventRanges": ranges.iter().map(range_json).collect::<Vec<_>>(),
        })),
        Err(e) => Envelope::from_service(e),
    }
}

/// `event/update_event_ranges`.
pub(crate) async fn update_event_ranges(state: &AppState, call: &Call) -> Envelope {
    let Some(text) = call.args.text("event_ranges") else {
        return Envelope::fail("Argument error: event_ranges is required");
    };
    let version = call.args.int("version").unwrap_or(0);
    match state
        .service
        .report_event_ranges(&call.identity, text, version)
        .await
    {
        Ok(reply) => Envelope::ok(json!({
            "StatusCode": 0,
            "Returns": reply.returns.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
            "Commands": reply.commands_json(),
        })),
        Err(e) => Envelope::from_service(e),
    }
}

/// `event/update_single_event_range`: `data` is `{"Command": ...}`; a refused range is a
/// failed envelope.
pub(crate) async fn update_single_event_range(state: &AppState, call: &Call) -> Envelope {
    let (Some(id), Some(status)) = (
        call.args.text("event_range_id"),
        call.args.text("event_range_status"),
    ) else {
        return Envelope::fail(
            "Argument error: event_range_id and event_range_status are required",
        );
    };
    let mut range = json!({"eventRangeID": id, "eventStatus": status});
    if let Some(objstore) = call.args.int("object_store_id") {
        range["objstoreID"] = json!(objstore);
    }
    let text = Json::Array(vec![range]).to_string();
    match state
        .service
        .report_event_ranges(&call.identity, &text, 0)
        .await
    {
        Ok(reply) => match reply.returns.first() {
            Some(RangeReply::Refused) | None => Envelope::fail(format!(
                "event range {id} was not updated: malformed, an unknown status, or its job \
                 is not an active event-service job"
            )),
            Some(_) => Envelope::ok(json!({"Command": reply.commands_json()})),
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `event/get_available_event_range_count`: `data` is the count (what Harvester reads).
pub(crate) async fn get_available_event_range_count(state: &AppState, call: &Call) -> Envelope {
    let (Some(task_id), Some(jobset_id)) = (
        int_of(call, &["task_id", "taskID"]),
        int_of(call, &["jobset_id", "jobsetID"]),
    ) else {
        return Envelope::fail("Argument error: task_id and jobset_id are required");
    };
    match state
        .service
        .available_event_ranges(&call.identity, task_id, jobset_id)
        .await
    {
        Ok(n) => Envelope::ok(json!(n)),
        Err(e) => Envelope::from_service(e),
    }
}

/// `event/get_event_range_statuses`: `job_task_ids` a list (or its JSON text) of
/// `{"task_id", "panda_id"}` (`job_id` also taken, as upstream documents it).
pub(crate) async fn get_event_range_statuses(state: &AppState, call: &Call) -> Envelope {
    let value = match call.args.get("job_task_ids") {
        Some(Json::String(text)) => match serde_json::from_str::<Json>(text) {
            Ok(v) => v,
            Err(e) => return Envelope::fail(format!("Type error: job_task_ids is not JSON: {e}")),
        },
        Some(other) => other.clone(),
        None => return Envelope::fail("Argument error: job_task_ids is required"),
    };
    let ids = match status_query_ids(&value) {
        Ok(ids) => ids,
        Err(m) => return Envelope::fail(format!("Type error: {m}")),
    };
    match state.service.event_range_statuses(&ids).await {
        Ok(statuses) => Envelope::ok(statuses_json(statuses)),
        Err(e) => Envelope::from_service(e),
    }
}
