//! Who is calling. One policy decides it for every route.
//!
//! A bearer token is verified by [`OidcVerifier`] (see `oidc`); a token that fails is
//! refused with 403 `ERROR : Token authentication failed. <reason>` before any handler
//! runs, as upstream, and logged once without the token. In local mode (`trust_loopback`), a
//! request from a loopback peer that presents no credentials acts as `/CN=local operator`
//! with the production role. This never applies to a non-loopback peer, and a request that
//! carries credentials is never treated as local.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use panda_core::identity::Identity;

use crate::oidc::OidcVerifier;
use crate::AppState;

pub use panda_core::identity::LOCAL_OPERATOR_DN;

/// The peer's socket address, when the listener knows it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<SocketAddr>);

/// How identities are decided, from configuration.
#[derive(Clone, Debug, Default)]
pub struct IdentityPolicy {
    pub trust_loopback: bool,
    /// Bearer-token validation; without it a token is refused.
    pub oidc: Option<Arc<OidcVerifier>>,
}

impl IdentityPolicy {
    /// The caller's identity, or why its credentials are refused.
    pub fn identify(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<Identity, String> {
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            let text = authorization
                .to_str()
                .map_err(|_| "the Authorization header is not text".to_string())?;
            let Some(token) = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
            else {
                return Err("only Bearer authorization is accepted".into());
            };
            let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
            return match &self.oidc {
                Some(oidc) => oidc.verify(token.trim(), origin),
                None => Err("token authentication is not configured on this server".into()),
            };
        }
        let loopback = peer.is_some_and(|p| p.ip().is_loopback());
        if self.trust_loopback && loopback && !carries_credentials(headers) {
            Ok(Identity::local_operator())
        } else {
            Ok(Identity::anonymous())
        }
    }
}

/// Credentials a client may present over plain HTTP: a bearer token (OIDC), or a client
/// certificate forwarded by a front end.
fn carries_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || headers.contains_key("ssl-client-s-dn")
        || headers.contains_key("x-ssl-client-cert")
}

/// Middleware: attaches the caller's [`Identity`] to the request.
pub async fn resolve(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let identity = match state.identity_policy.identify(peer, request.headers()) {
        Ok(identity) => Arc::new(identity),
        Err(reason) => {
            tracing::warn!(target: "panda::auth", peer = ?peer, path = request.uri().path(),
                reason = %reason, "credentials refused");
            return (
                axum::http::StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("ERROR : Token authentication failed. {reason}"),
            )
                .into_response();
        }
    };
    request.extensions_mut().insert(identity.clone());
    request.extensions_mut().insert(ClientAddr(peer));
    let mut response = next.run(request).await;
    // For the request log, which runs outside this layer.
    response.extensions_mut().insert(identity);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use panda_core::identity::AuthMethod;

    fn peer(ip: &str) -> Option<SocketAddr> {
        format!("{ip}:40000").parse().ok()
    }

    #[test]
    fn a_bare_loopback_request_is_the_local_operator_in_local_mode() {
        let policy = IdentityPolicy {
            trust_loopback: true,
            oidc: None,
        };
        let id = policy
            .identify(peer("127.0.0.1"), &HeaderMap::new())
            .expect("local");
        assert_eq!(id.dn.as_deref(), Some(LOCAL_OPERATOR_DN));
        assert!(id.production);
        let v6 = policy
            .identify(peer("[::1]"), &HeaderMap::new())
            .expect("local");
        assert_eq!(v6.method, AuthMethod::LocalOperator);
    }

    #[test]
    fn local_mode_never_applies_to_other_peers_or_to_credentials() {
        let policy = IdentityPolicy {
            trust_loopback: true,
            oidc: None,
        };
        assert_eq!(
            policy.identify(peer("10.1.2.3"), &HeaderMap::new()),
            Ok(Identity::anonymous())
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(policy
            .identify(peer("127.0.0.1"), &headers)
            .is_err_and(|e| e.contains("not configured")));
        assert_eq!(
            policy.identify(None, &HeaderMap::new()),
            Ok(Identity::anonymous())
        );
    }

    #[test]
    fn without_trust_loopback_a_loopback_request_is_anonymous() {
        let policy = IdentityPolicy::default();
        assert!(!policy
            .identify(peer("127.0.0.1"), &HeaderMap::new())
            .expect("anonymous")
            .is_authenticated());
    }
}
