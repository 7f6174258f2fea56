//! The legacy event-service methods, as upstream's dispatcher answered them before it dropped
//! them (the pilot's event-service communicator still calls the first two):
//!
//! - `getEventRanges` (`pandaID`, `jobsetID`, `taskID`, `nRanges`): `StatusCode` 0 and
//!   `eventRanges`, a JSON list for a JSON client and the list's JSON text otherwise;
//! - `updateEventRanges` (`eventRanges`, a JSON text, and `version`): `StatusCode`, `Returns`
//!   (one `true`/`false`/`null` per range) and `Command` (`{PandaID: command}`), both as JSON
//!   texts for version 0 and as JSON values for versions 1 and 2, as upstream;
//! - `updateEventRange` (one range: `eventRangeID`, `eventStatus`, ...): always urlencoded,
//!   `StatusCode` 0 when accepted (also for `running`, where upstream says 30 though nothing
//!   failed), 30 when refused, and `Command`;
//! - `checkEventsAvailability` (`pandaID`, `jobsetID`, `taskID`): always JSON,
//!   `nEventRanges`;
//! - `get_events_status` (`ids`, a JSON list of `{"task_id", "panda_id"}`): a bare JSON map
//!   `{PandaID: {eventRangeID: {"status", "error", "dialog"}}}`, no `StatusCode`.
//!
//! The rules (who, how many, what a consumer's report may change) are the service's
//! (`panda_service::events`); a caller without the role gets `StatusCode` 60.

use panda_service::events::{ranges_wanted, RangeReply};
use panda_service::events::{AcquiredRange, RangeStatus};
use serde_json::{json, Map, Value as Json};

use super::protocol::{json_response, SC_FAILED, SC_ROLE, SC_SUCCESS};
use super::{LegacyCall, LegacyError, LegacyResult, Protocol};
use crate::AppState;

const NO_ROLE: &str = "production or pilot role required";

fn refused_role(call: &LegacyCall) -> LegacyResult {
    Ok(Protocol::with_dialog(SC_ROLE, NO_ROLE, true).into_response(call.json))
}

/// A required integer argument, or a 400 naming it.
fn int_arg(call: &LegacyCall, name: &str) -> Result<i64, LegacyError> {
    let raw = call
        .params
        .value(name)
        .ok_or_else(|| LegacyError::BadRequest(format!("{name} is required")))?;
    raw.trim()
        .parse::<i64>()
        .map_err(|_| LegacyError::BadRequest(format!("{name} must be an integer")))
}

/// A range as the pilot reads it.
pub(crate) fn range_json(range: &AcquiredRange) -> Json {
    json!({
        "eventRangeID": range.id.to_string(),
        "startEvent": range.first_event,
        "lastEvent": range.last_event,
        "LFN": range.lfn,
        "GUID": range.guid,
        "scope": range.scope,
    })
}

/// `getEventRanges`.
pub(crate) async fn get_event_ranges(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return refused_role(call);
    }
    let panda_id = int_arg(call, "pandaID")?;
    let n = ranges_wanted(call.params.value("nRanges"));
    let ranges = state
        .service
        .acquire_event_ranges(&call.identity, panda_id, n)
        .await?;
    let list = Json::Array(ranges.iter().map(range_json).collect());
    let mut response = Protocol::new(SC_SUCCESS);
    match call.json {
        true => response.push("eventRanges", list),
        false => response.push("eventRanges", json!(list.to_string())),
    }
    Ok(response.into_response(call.json))
}

/// `updateEventRanges`.
pub(crate) async fn update_event_ranges(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return refused_role(call);
    }
    let text = call
        .params
        .value("eventRanges")
        .ok_or_else(|| LegacyError::BadRequest("eventRanges is required".into()))?;
    let version = call
        .params
        .value("version")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let reply = state
        .service
        .report_event_ranges(&call.identity, text, version)
        .await?;
    let returns = Json::Array(reply.returns.iter().map(|r| r.to_json()).collect());
    let commands = reply.commands_json();
    let mut response = Protocol::new(SC_SUCCESS);
    if version == 1 || version == 2 {
        response.push("Returns", returns);
        response.push("Command", commands);
    } else {
        response.push("Returns", json!(returns.to_string()));
        response.push("Command", json!(commands.to_string()));
    }
    Ok(response.into_response(call.json))
}

/// `updateEventRange`: one range, as a version-0 report of one.
pub(crate) async fn update_event_range(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return refused_role(call);
    }
    let p = &call.params;
    let id = p
        .value("eventRangeID")
        .ok_or_else(|| LegacyError::BadRequest("eventRangeID is required".into()))?;
    let status = p
        .value("eventStatus")
        .ok_or_else(|| LegacyError::BadRequest("eventStatus is required".into()))?;
    let mut range = Map::new();
    range.insert("eventRangeID".into(), json!(id));
    range.insert("eventStatus".into(), json!(status));
    if let Some(objstore) = p.value("objstoreID") {
        range.insert("objstoreID".into(), json!(objstore));
    }
    let text = Json::Array(vec![Json::Object(range)]).to_string();
    let reply = state
        .service
        .report_event_ranges(&call.identity, &text, 0)
        .await?;
    let code = match reply.returns.first() {
        Some(RangeReply::Refused) | None => SC_FAILED,
        Some(_) => SC_SUCCESS,
    };
    let mut response = Protocol::new(code);
    response.push("Command", json!(reply.commands_json().to_string()));
    Ok(response.into_response(false))
}

/// `checkEventsAvailability`.
pub(crate) async fn check_events_availability(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return refused_role(call);
    }
    let task_id = int_arg(call, "taskID")?;
    let jobset_id = int_arg(call, "jobsetID")?;
    let n = state
        .service
        .available_event_ranges(&call.identity, task_id, jobset_id)
        .await?;
    let mut response = Protocol::new(SC_SUCCESS);
    response.push("nEventRanges", json!(n));
    Ok(response.into_response(true))
}

/// The `(task, PandaID)` pairs of a status query: a JSON list of `{"task_id", "panda_id"}`
/// (`job_id` taken for `panda_id`, as upstream's v1 documents it).
pub(crate) fn status_query_ids(value: &Json) -> Result<Vec<(i64, i64)>, String> {
    let items = value
        .as_array()
        .ok_or("ids must be a JSON list of {\"task_id\": ..., \"panda_id\": ...}")?;
    items
        .iter()
        .map(|item| {
            let num = |key: &str| {
                item.get(key).and_then(|v| match v {
                    Json::Number(n) => n.as_i64(),
                    Json::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
            };
            let task = num("task_id").ok_or("each entry needs an integer task_id")?;
            let job = num("panda_id")
                .or_else(|| num("job_id"))
                .ok_or("each entry needs an integer panda_id")?;
            Ok((task, job))
        })
        .collect()
}

/// The statuses as upstream answers them: `{PandaID: {eventRangeID: {...}}}`.
pub(crate) fn statuses_json(statuses: Vec<(i64, Vec<RangeStatus>)>) -> Json {
    let mut out = Map::new();
    for (panda_id, ranges) in statuses {
        let mut by_id = Map::new();
        for range in ranges {
            by_id.insert(
                range.id.to_string(),
                json!({
                    "status": range.status.map(|s| s.name()),
                    "error": range.error_code,
                    "dialog": range.error_diag,
                }),
            );
        }
        out.insert(panda_id.to_string(), Json::Object(by_id));
    }
    Json::Object(out)
}

/// `get_events_status`.
pub(crate) async fn get_events_status(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return Ok(Protocol::with_dialog(
            super::protocol::SC_PERMS,
            "a verified certificate or token is required",
            true,
        )
        .into_response(true));
    }
    let text = call
        .params
        .value("ids")
        .ok_or_else(|| LegacyError::BadRequest("ids is required".into()))?;
    let parsed: Json = serde_json::from_str(text)
        .map_err(|e| LegacyError::BadRequest(format!("ids is not valid JSON: {e}")))?;
    let ids = status_query_ids(&parsed).map_err(LegacyError::BadRequest)?;
    let statuses = state.service.event_range_statuses(&ids).await?;
    Ok(json_response(statuses_json(statuses).to_string()))
}
