//! `system`: health and the caller's attributes.

use panda_core::identity::{
    clean_user_id, primary_production_working_group, production_working_groups,
};
use serde_json::{json, Map, Value};

use super::args::ArgsExt;
use super::{Call, Envelope};

/// The load balancer's probe; touches nothing.
pub(crate) fn is_alive() -> Envelope {
    Envelope::ok(Value::Null)
}

/// Echoes the request parameters and the identity environment upstream's handlers see
/// (`SSL_CLIENT_S_DN`, `GRST_CRED_*`). Requires an authenticated caller, as upstream.
pub(crate) fn get_attributes(call: &Call) -> Envelope {
    let mut environment = Map::new();
    if let Some(dn) = &call.identity.dn {
        environment.insert("SSL_CLIENT_S_DN".into(), json!(dn));
    }
    environment.extend(grid_credentials(call));
    environment.insert(
        "PANDA_AUTH_METHOD".into(),
        json!(format!("{:?}", call.identity.method)),
    );
    environment.insert(
        "PANDA_PRODUCTION_ROLE".into(),
        json!(call.identity.production),
    );
    if let Some(peer) = call.peer {
        environment.insert("REMOTE_ADDR".into(), json!(peer.ip().to_string()));
    }
    environment.insert("REQUEST_METHOD".into(), json!(call.method.as_str()));
    let parameters = call.args.clone();
    let mut text = String::from("===== parameters =====\n");
    for (k, v) in &parameters {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text.push_str("\n====== env ======\n");
    for (k, v) in &environment {
        text.push_str(&format!("{k} : {v}\n"));
    }
    Envelope {
        success: true,
        message: text,
        data: json!({"parameters": parameters, "environment": environment}),
    }
}

/// The `GRST_CRED_<n>` variables of the caller's FQANs, one per FQAN in the order the
/// credential carries them (mod_gridsite's names, which upstream's handlers read).
fn grid_credentials(call: &Call) -> Map<String, Value> {
    call.identity
        .fqans
        .iter()
        .enumerate()
        .map(|(i, fqan)| {
            (
                format!("GRST_CRED_{}", i + 1),
                json!(format!("VOMS {fqan}")),
            )
        })
        .collect()
}

/// `system/get_voms_attributes`: the caller's `GRST_CRED_*` variables, as a dict and as
/// `key : value` lines in key order. Secure (any verified credential), as upstream; the
/// answer is bounded by the FQANs one credential carries.
pub(crate) fn get_voms_attributes(call: &Call) -> Envelope {
    let attributes = grid_credentials(call);
    let mut keys: Vec<&String> = attributes.keys().collect();
    keys.sort();
    let text: Vec<String> = keys
        .iter()
        .map(|k| format!("{k} : {}", attributes[k.as_str()].as_str().unwrap_or("")))
        .collect();
    Envelope {
        success: true,
        message: text.join("\n"),
        data: Value::Object(attributes),
    }
}

/// `system/get_user_attributes`: who the server takes the caller for (its DN raw and clean,
/// FQANs, production role, the working groups it may file production tasks under), for
/// debugging credentials. Secure, as upstream. Upstream looks the e-mail address up in
/// Rucio; with no Rucio behind this server it is `None`.
pub(crate) fn get_user_attributes(call: &Call) -> Envelope {
    let identity = &call.identity;
    let raw = identity.dn.clone().unwrap_or_default();
    let clean = clean_user_id(&raw);
    let groups = production_working_groups(&identity.fqans);
    let primary = primary_production_working_group(&identity.fqans);
    let python_list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let python_bool = |b: bool| if b { "True" } else { "False" };
    let message = format!(
        "User DN (raw): {raw}\nUser DN (bare): {raw}\nUser DN (clean): {clean}\n\
         Email address: None\nFQANs: {}\nProduction user: {}\n\
         Production working groups: {}\nPrimary production working group: {}\n",
        python_list(&identity.fqans),
        python_bool(identity.production),
        python_list(&groups),
        primary.as_deref().unwrap_or("None"),
    );
    Envelope {
        success: true,
        message,
        data: json!({
            "user_dn_raw": raw,
            "user_dn_clean": clean,
            "fqans": identity.fqans,
            "is_production_user": identity.production,
            "production_working_groups": groups,
            "primary_working_group": primary,
        }),
    }
}

/// `idds/relay_idds_command` and `idds/execute_idds_workflow_command`: upstream relays the
/// command to its iDDS server; this server has none, so the command is refused with that
/// reason (not relayed, nothing stored). Secure POST, as upstream.
pub(crate) fn no_idds(call: &Call) -> Envelope {
    let command = call.args.text("command_name").unwrap_or_default();
    let command: String = command.chars().take(100).collect();
    Envelope::fail(format!(
        "failed to execute command {command}: this PanDA server has no iDDS behind it, so \
         nothing was relayed"
    ))
}

/// `data_carousel/*`: no data carousel stages tapes for this server, so there is no staging
/// request to change; upstream's envelope with the reason (nothing is stored).
pub(crate) fn no_data_carousel(call: &Call) -> Envelope {
    let which = match (call.args.int("request_id"), call.args.text("dataset")) {
        (Some(id), _) => format!("request_id={id}"),
        (None, Some(dataset)) => {
            format!("dataset={}", dataset.chars().take(200).collect::<String>())
        }
        (None, None) => "no request_id or dataset given".into(),
    };
    Envelope::fail(format!(
        "failed to get corresponding request ({which}): no data carousel runs behind this server"
    ))
}

/// `async_process/submit_*`: no asynchronous workers run behind this server, so nothing is
/// queued; upstream's envelope with the reason.
pub(crate) fn no_async_workers(_call: &Call) -> Envelope {
    Envelope::fail(
        "no alive machines: no asynchronous request workers run behind this server, so nothing is queued",
    )
}

/// `async_process/get_result`: no request was ever queued here.
pub(crate) fn async_result(call: &Call) -> Envelope {
    let id: String = call
        .args
        .text("request_id")
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect();
    Envelope::fail(format!("request_id '{id}' not found"))
}
