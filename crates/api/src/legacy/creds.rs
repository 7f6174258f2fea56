//! The legacy credential methods as 0.8.1 answers them: `getProxy` and `get_access_token`
//! (always JSON: `userProxy`, or `errorDialog` with `StatusCode` 70, 50 or 90), `get_token_key`
//! and `getKeyPair` (`StatusCode` 70 or 80 on refusal), and pbook's older `set_user_secret` /
//! `get_user_secrets` (a JSON pair `[ok, data or message]`). `setDebugMode` answers upstream's
//! sentence. Who may fetch what is the service's rule; see `panda_service::credentials`.

use panda_service::credentials::{Fetched, Refusal};
use serde_json::{json, Value as Json};

use super::protocol::{
    json_response, text_response, SC_INVALID, SC_MISS_KEY, SC_PERMS, SC_PROXY_ERROR, SC_SUCCESS,
};
use super::{LegacyCall, LegacyResult, Protocol};
use crate::AppState;

/// What a caller without a verified credential is told, as upstream.
const NO_DN: &str = "Cannot extract DN from proxy. not HTTPS?";

/// A refused or failed fetch as upstream's response; `Ok` with the value otherwise.
fn answer<T>(
    fetched: Fetched<T>,
    missing_code: i64,
    json_mode: bool,
    with_empty_dialog: bool,
    fill: impl FnOnce(&mut Protocol, T),
) -> LegacyResult {
    let mut response = Protocol::new(SC_SUCCESS);
    match fetched? {
        Ok(value) => {
            if with_empty_dialog {
                response.push("errorDialog", json!(""));
            }
            fill(&mut response, value);
        }
        Err(refused) => {
            let code = match refused.why {
                Refusal::NotAllowed => SC_PERMS,
                Refusal::InvalidTokenKey => SC_INVALID,
                Refusal::Missing | Refusal::Unavailable => missing_code,
            };
            response.push("StatusCode", json!(code));
            response.push("errorDialog", json!(refused.message));
        }
    }
    Ok(response.into_response(json_mode))
}

/// `getProxy`: the proxy registered for `dn` (default: the caller's) with `role`.
pub(crate) async fn get_proxy(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return Ok(Protocol::with_dialog(SC_PERMS, NO_DN, true).into_response(true));
    }
    let p = &call.params;
    let fetched = state
        .service
        .fetch_proxy(&call.identity, p.value("role"), p.value("dn"))
        .await;
    answer(fetched, SC_PROXY_ERROR, true, true, |r, proxy| {
        r.push("userProxy", json!(proxy))
    })
}

/// `get_access_token`: the access token of `client_name`, checked against `token_key`.
pub(crate) async fn get_access_token(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return Ok(Protocol::with_dialog(SC_PERMS, NO_DN, true).into_response(true));
    }
    let p = &call.params;
    let client = p.value("client_name").unwrap_or_default();
    let fetched = state
        .service
        .fetch_access_token(&call.identity, client, p.value("token_key"))
        .await;
    answer(fetched, SC_PROXY_ERROR, true, true, |r, token| {
        r.push("userProxy", json!(token))
    })
}

/// `get_token_key`: the newest token key of `client_name`.
pub(crate) async fn get_token_key(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        let dialog = "failed since DN cannot be extracted. non-HTTPS?";
        return Ok(Protocol::with_dialog(SC_PERMS, dialog, true).into_response(call.json));
    }
    let client = call.params.value("client_name").unwrap_or_default();
    let fetched = state.service.fetch_token_key(&call.identity, client).await;
    answer(fetched, SC_MISS_KEY, call.json, false, |r, key| {
        r.push("tokenKey", json!(key))
    })
}

/// `getKeyPair`: two registered key files, as `publicKey` and `privateKey`.
pub(crate) async fn get_key_pair(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return Ok(Protocol::with_dialog(SC_PERMS, NO_DN, true).into_response(call.json));
    }
    let p = &call.params;
    let public = p.value("publicKeyName").unwrap_or_default();
    let private = p.value("privateKeyName").unwrap_or_default();
    let fetched = state
        .service
        .fetch_key_pair(&call.identity, public, private)
        .await;
    answer(
        fetched,
        SC_MISS_KEY,
        call.json,
        false,
        |r, (public, private)| {
            r.push("publicKey", json!(public));
            r.push("privateKey", json!(private));
        },
    )
}

/// A JSON pair `[ok, payload]`, as upstream's user-interface methods answer.
fn pair(ok: bool, payload: Json) -> LegacyResult {
    Ok(json_response(json!([ok, payload]).to_string()))
}

/// `set_user_secret`: `[true, "OK"]`, or `[false, why]`.
pub(crate) async fn set_user_secret(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return pair(false, json!("SSL_CLIENT_S_DN is missing in HTTP request"));
    }
    let p = &call.params;
    let result = state
        .service
        .set_user_secret(&call.identity, p.get("key"), p.get("value"))
        .await;
    match result {
        Ok(()) => pair(true, json!("OK")),
        Err(e) if e.is_unavailable() => Err(e.into()),
        Err(e) => pair(false, json!(e.to_string())),
    }
}

/// `get_user_secrets`: `[true, "<JSON text>"]`, or the object itself with `get_json=True`.
pub(crate) async fn get_user_secrets(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return pair(false, json!("SSL_CLIENT_S_DN is missing in HTTP request"));
    }
    let p = &call.params;
    let keys: Option<Vec<String>> = p.value("keys").map(|k| {
        k.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    });
    let as_object = p
        .value("get_json")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match state
        .service
        .user_secrets(&call.identity, keys.as_deref())
        .await
    {
        Ok(secrets) => {
            let object = Json::Object(secrets);
            match as_object {
                true => pair(true, object),
                false => pair(true, Json::String(object.to_string())),
            }
        }
        Err(e) if e.is_unavailable() => Err(e.into()),
        Err(e) => pair(false, json!(e.to_string())),
    }
}

/// `setDebugMode`: upstream's sentence ("Succeeded", "Permission denied. ..."), or
/// `ERROR: ...` without a verified credential.
pub(crate) async fn set_debug_mode(state: &AppState, call: &LegacyCall) -> LegacyResult {
    if !call.authorized {
        return Ok(text_response("ERROR: SSL connection is required".into()));
    }
    let p = &call.params;
    let Some(id) = p
        .value("pandaID")
        .and_then(|v| v.trim().parse::<i64>().ok())
    else {
        return Ok(text_response(
            "ERROR: pandaID must be a PandaID (an integer)".into(),
        ));
    };
    let on = p
        .value("modeOn")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let said = state
        .service
        .set_debug_mode_as_owner(&call.identity, id, on)
        .await?;
    Ok(text_response(said))
}
