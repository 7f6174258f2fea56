//! `harvester`: the wire side of what Harvester instances report and fetch. Decoding of the
//! arguments, the answers' shapes; the rules (columns, types, conversions) are the service's
//! (`panda_service::harvester`).

use panda_core::identity::clean_user_id;
use serde_json::{json, Value as Json};

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::AppState;

fn harvester_id(call: &Call) -> &str {
    call.args.text("harvester_id").unwrap_or_default()
}

/// A list argument, empty when absent.
fn list<'a>(call: &'a Call, name: &str) -> &'a [Json] {
    call.args
        .get(name)
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

pub(crate) async fn heartbeat(state: &AppState, call: &Call) -> Envelope {
    let data = call
        .args
        .get("data")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    let owner = call
        .identity
        .dn
        .as_deref()
        .map(clean_user_id)
        .unwrap_or_default();
    let host = call.peer.map(|p| p.ip().to_string()).unwrap_or_default();
    match state
        .service
        .harvester_heartbeat(harvester_id(call), &owner, &host, &data)
        .await
    {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn update_workers(state: &AppState, call: &Call) -> Envelope {
    match state
        .service
        .update_harvester_workers(harvester_id(call), list(call, "workers"))
        .await
    {
        Ok(n) => Envelope::ok(json!(vec![true; n])),
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn acquire_commands(state: &AppState, call: &Call) -> Envelope {
    let n = call.args.int("n_commands").unwrap_or(0);
    match state
        .service
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
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn acknowledge_commands(state: &AppState, call: &Call) -> Envelope {
    let ids = call.args.ints("command_ids");
    match state.service.acknowledge_harvester_commands(&ids).await {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn current_worker_id(state: &AppState, call: &Call) -> Envelope {
    match state.service.current_worker_id(harvester_id(call)).await {
        Ok(id) => Envelope::ok(json!(id)),
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn report_worker_statistics(state: &AppState, call: &Call) -> Envelope {
    let site = call.args.text("panda_queue").unwrap_or_default();
    let statistics = call.args.text("statistics").unwrap_or_default();
    match state
        .service
        .report_worker_statistics(harvester_id(call), site, statistics)
        .await
    {
        Ok(()) => Envelope {
            success: true,
            message: "OK".into(),
            data: Json::Null,
        },
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn worker_statistics(state: &AppState, _call: &Call) -> Envelope {
    match state.service.worker_statistics().await {
        Ok(stats) => Envelope::ok(json!(stats)),
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn update_service_metrics(state: &AppState, call: &Call) -> Envelope {
    match state
        .service
        .add_harvester_metrics(harvester_id(call), list(call, "metrics"))
        .await
    {
        Ok(()) => Envelope::ok(json!([true])),
        Err(e) => Envelope::from_service(e),
    }
}

pub(crate) async fn add_dialogs(state: &AppState, call: &Call) -> Envelope {
    match state
        .service
        .add_harvester_dialogs(harvester_id(call), list(call, "dialogs"))
        .await
    {
        Ok(()) => Envelope::ok(Json::Null),
        Err(e) => Envelope::from_service(e),
    }
}

/// `harvester/add_sweep_command` (production role): a `KILL_WORKERS` command for the
/// instance serving `panda_queue`. `ce_list` is a list, or `"ALL"`.
pub(crate) async fn add_sweep_command(state: &AppState, call: &Call) -> Envelope {
    let strings = |key: &str| -> Vec<String> {
        match call.args.get(key) {
            Some(Json::Array(items)) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    };
    let ces = match call.args.get("ce_list") {
        Some(Json::String(all)) if all == "ALL" => None,
        Some(Json::Array(items)) if items.iter().all(Json::is_string) => Some(strings("ce_list")),
        _ => return Envelope::fail("ce_list must be a list of computing elements, or \"ALL\""),
    };
    match state
        .service
        .sweep_queue(
            call.args.text("panda_queue").unwrap_or_default(),
            &strings("status_list"),
            ces.as_deref(),
            &strings("submission_host_list"),
        )
        .await
    {
        Ok(_) => Envelope {
            success: true,
            message: String::new(),
            data: Json::Null,
        },
        Err(e) => Envelope::from_service(e),
    }
}

/// `harvester/add_target_slots` (production role): the target slots of a queue, for a share
/// and resource type or the whole queue; `expiration_date` is a number of days (upstream
/// reads it so), as a number or its text.
pub(crate) async fn add_target_slots(state: &AppState, call: &Call) -> Envelope {
    let days = match call.args.get("expiration_date") {
        None | Some(Json::Null) => None,
        Some(value) => match value
            .as_i64()
            .or_else(|| value.as_str().and_then(|t| t.trim().parse().ok()))
        {
            Some(days) => Some(days),
            None => return Envelope::fail("expiration_date must be a number of days"),
        },
    };
    match state
        .service
        .set_target_slots(
            call.args.text("panda_queue").unwrap_or_default(),
            call.args.int("slots").unwrap_or_default(),
            call.args.text("global_share"),
            call.args.text("resource_type"),
            days,
        )
        .await
    {
        Ok(said) => Envelope::ok_with(said),
        Err(e) => Envelope::from_service(e),
    }
}
