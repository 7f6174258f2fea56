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
use crate::x509::X509Verifier;
use crate::AppState;

pub use panda_core::identity::LOCAL_OPERATOR_DN;

/// The peer's socket address, when the listener knows it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<SocketAddr>);

/// Marks a request that arrived over HTTPS (TLS terminated by this server).
#[derive(Clone, Copy, Debug)]
pub struct OverHttps;

/// The client certificate of an HTTPS connection, verified once at the handshake: the
/// identity it proves, or why it is refused.
#[derive(Clone, Debug)]
pub struct ClientCertificate(pub Arc<Result<Identity, String>>);

/// How identities are decided, from configuration.
#[derive(Clone, Debug, Default)]
pub struct IdentityPolicy {
    pub trust_loopback: bool,
    /// Bearer-token validation; without it a token is refused.
    pub oidc: Option<Arc<OidcVerifier>>,
    /// Client-certificate validation on HTTPS; without it certificates are ignored.
    pub x509: Option<Arc<X509Verifier>>,
}

impl IdentityPolicy {
    /// The caller's identity, or why its credentials are refused. A bearer token wins over
    /// a client certificate (as upstream, where the token rewrites the certificate's DN).
    pub fn identify(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        certificate: Option<&ClientCertificate>,
    ) -> Result<Identity, String> {
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            let token_failed = |why: String| format!("Token authentication failed. {why}");
            let text = authorization
                .to_str()
                .map_err(|_| token_failed("the Authorization header is not text".into()))?;
            let Some(token) = text
                .strip_prefix("Bearer ")
                .or_else(|| text.strip_prefix("bearer "))
            else {
                return Err(token_failed("only Bearer authorization is accepted".into()));
            };
            let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
            return match &self.oidc {
                Some(oidc) => oidc.verify(token.trim(), origin),
                None => Err("token authentication is not configured on this server".into()),
            }
            .map_err(token_failed);
        }
        if let Some(ClientCertificate(verified)) = certificate {
            return verified
                .as_ref()
                .clone()
                .map_err(|why| format!("Certificate authentication failed. {why}"));
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

/// Reads and drops the body of a refused request within an anonymous caller's bounds, so the
/// refusal reaches a client that is still sending.
async fn drop_body(request: Request, state: &AppState) {
    crate::body::discard(
        request.into_body(),
        state.limits.anonymous_max_body_bytes,
        &state.limits,
    )
    .await;
}

/// Middleware: attaches the caller's [`Identity`] to the request.
pub async fn resolve(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let certificate = request.extensions().get::<ClientCertificate>().cloned();
    let identity =
        match state
            .identity_policy
            .identify(peer, request.headers(), certificate.as_ref())
        {
            Ok(identity) => Arc::new(identity),
            Err(reason) => {
                tracing::warn!(target: "panda::auth", peer = ?peer, path = request.uri().path(),
                reason = %reason, "credentials refused");
                drop_body(request, &state).await;
                return (
                    axum::http::StatusCode::FORBIDDEN,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("ERROR : {reason}"),
                )
                    .into_response();
            }
        };
    if let Some(dn) = identity.dn.as_deref() {
        let user = panda_core::identity::clean_user_id(dn);
        if state.service.is_banned(&user).await {
            tracing::warn!(target: "panda::auth", user = %user, "banned user refused");
            drop_body(request, &state).await;
            return (
                axum::http::StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("ERROR : {user} is banned"),
            )
                .into_response();
        }
    }
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
            ..IdentityPolicy::default()
        };
        let id = policy
            .identify(peer("127.0.0.1"), &HeaderMap::new(), None)
            .expect("local");
        assert_eq!(id.dn.as_deref(), Some(LOCAL_OPERATOR_DN));
        assert!(id.production);
        let v6 = policy
            .identify(peer("[::1]"), &HeaderMap::new(), None)
            .expect("local");
        assert_eq!(v6.method, AuthMethod::LocalOperator);
    }

    #[test]
    fn local_mode_never_applies_to_other_peers_or_to_credentials() {
        let policy = IdentityPolicy {
            trust_loopback: true,
            ..IdentityPolicy::default()
        };
        assert_eq!(
            policy.identify(peer("10.1.2.3"), &HeaderMap::new(), None),
            Ok(Identity::anonymous())
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(policy
            .identify(peer("127.0.0.1"), &headers, None)
            .is_err_and(|e| e.contains("not configured")));
        assert_eq!(
            policy.identify(None, &HeaderMap::new(), None),
            Ok(Identity::anonymous())
        );
    }

    #[test]
    fn without_trust_loopback_a_loopback_request_is_anonymous() {
        let policy = IdentityPolicy::default();
        assert!(!policy
            .identify(peer("127.0.0.1"), &HeaderMap::new(), None)
            .expect("anonymous")
            .is_authenticated());
    }
}
