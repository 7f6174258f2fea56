//! `creds`: users' secrets, and the proxies, access tokens, token keys and key pairs operators
//! register. Who may fetch what is the service's rule (`panda_service::credentials`); these
//! handlers only shape upstream's envelopes. A refusal is a failed envelope naming the rule,
//! never a value.

use panda_service::credentials::{CredentialRefused, Fetched};
use serde_json::{json, Value as Json};

use super::args::ArgsExt;
use super::{Call, Envelope};
use crate::AppState;

/// An envelope from a credential request: `data` made from the value, or the refusal.
fn envelope<T>(fetched: Fetched<T>, data: impl FnOnce(T) -> Json) -> Envelope {
    match fetched {
        Ok(Ok(value)) => Envelope::ok(data(value)),
        Ok(Err(CredentialRefused { message, .. })) => Envelope::fail(message),
        Err(e) => Envelope::from_service(e),
    }
}

/// `creds/set_user_secrets`: sets, deletes (no `value`) or clears (no `key`) a secret of the
/// caller's; upstream answers `message` "OK".
pub(crate) async fn set_user_secrets(state: &AppState, call: &Call) -> Envelope {
    let key = call.args.text("key");
    let value = call.args.text("value");
    match state
        .service
        .set_user_secret(&call.identity, key, value)
        .await
    {
        Ok(()) => Envelope::ok_with("OK"),
        Err(e) => Envelope::from_service(e),
    }
}

/// `creds/get_user_secrets`: the caller's secrets as a JSON text (what pbook decodes), only
/// `keys` when given.
pub(crate) async fn get_user_secrets(state: &AppState, call: &Call) -> Envelope {
    let keys = string_list(call.args.get("keys"));
    match state
        .service
        .user_secrets(&call.identity, keys.as_deref())
        .await
    {
        Ok(secrets) => Envelope::ok(Json::String(Json::Object(secrets).to_string())),
        Err(e) => Envelope::from_service(e),
    }
}

fn string_list(value: Option<&Json>) -> Option<Vec<String>> {
    value.and_then(Json::as_array).map(|items| {
        items
            .iter()
            .filter_map(Json::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// `creds/get_proxy`: `data` carries the proxy as upstream names it (`user_proxy`) and as
/// Harvester reads it (`userProxy`).
pub(crate) async fn get_proxy(state: &AppState, call: &Call) -> Envelope {
    let fetched = state
        .service
        .fetch_proxy(&call.identity, call.args.text("role"), call.args.text("dn"))
        .await;
    envelope(
        fetched,
        |proxy| json!({"user_proxy": proxy, "userProxy": proxy}),
    )
}

/// `creds/get_access_token`: the client's access token, under the same two names.
pub(crate) async fn get_access_token(state: &AppState, call: &Call) -> Envelope {
    let client = call.args.text("client_name").unwrap_or_default();
    let fetched = state
        .service
        .fetch_access_token(&call.identity, client, call.args.text("token_key"))
        .await;
    envelope(
        fetched,
        |token| json!({"user_proxy": token, "userProxy": token}),
    )
}

/// `creds/get_token_key`: `{"tokenKey": ...}`, the client's newest key.
pub(crate) async fn get_token_key(state: &AppState, call: &Call) -> Envelope {
    let client = call.args.text("client_name").unwrap_or_default();
    let fetched = state.service.fetch_token_key(&call.identity, client).await;
    envelope(fetched, |key| json!({ "tokenKey": key }))
}

/// `creds/get_key_pair`: `{"public_key", "private_key"}`.
pub(crate) async fn get_key_pair(state: &AppState, call: &Call) -> Envelope {
    let public = call.args.text("public_key_name").unwrap_or_default();
    let private = call.args.text("private_key_name").unwrap_or_default();
    let fetched = state
        .service
        .fetch_key_pair(&call.identity, public, private)
        .await;
    envelope(
        fetched,
        |(public, private)| json!({"public_key": public, "private_key": private}),
    )
}
