//! `system`: health and the caller's attributes.

use serde_json::{json, Map, Value};

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
    for (i, fqan) in call.identity.fqans.iter().enumerate() {
        environment.insert(
            format!("GRST_CRED_{}", i + 1),
            json!(format!("VOMS {fqan}")),
        );
    }
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
