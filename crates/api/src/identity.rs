//! Who is calling. One policy decides it for every route.
//!
//! Until certificates and tokens are implemented, the only identity besides "anonymous" is
//! the local operator: in local mode (`trust_loopback`), a request from a loopback peer that
//! presents no credentials acts as `/CN=local operator` with the production role. This never
//! applies to a non-loopback peer, and a request that carries credentials is never treated
//! as local, so real authentication can take over without changing this rule.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use panda_core::identity::Identity;

use crate::AppState;

pub use panda_core::identity::LOCAL_OPERATOR_DN;

/// The peer's socket address, when the listener knows it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<SocketAddr>);

/// How identities are decided, from configuration.
#[derive(Clone, Debug, Default)]
pub struct IdentityPolicy {
    pub trust_loopback: bool,
}

impl IdentityPolicy {
    pub fn identify(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Identity {
        let loopback = peer.is_some_and(|p| p.ip().is_loopback());
        if self.trust_loopback && loopback && !carries_credentials(headers) {
            Identity::local_operator()
        } else {
            Identity::anonymous()
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
    let identity = Arc::new(state.identity_policy.identify(peer, request.headers()));
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
        };
        let id = policy.identify(peer("127.0.0.1"), &HeaderMap::new());
        assert_eq!(id.dn.as_deref(), Some(LOCAL_OPERATOR_DN));
        assert!(id.production);
        let v6 = policy.identify(peer("[::1]"), &HeaderMap::new());
        assert_eq!(v6.method, AuthMethod::LocalOperator);
    }

    #[test]
    fn local_mode_never_applies_to_other_peers_or_to_credentials() {
        let policy = IdentityPolicy {
            trust_loopback: true,
        };
        assert_eq!(
            policy.identify(peer("10.1.2.3"), &HeaderMap::new()),
            Identity::anonymous()
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            policy.identify(peer("127.0.0.1"), &headers),
            Identity::anonymous()
        );
        assert_eq!(
            policy.identify(None, &HeaderMap::new()),
            Identity::anonymous()
        );
    }

    #[test]
    fn without_trust_loopback_a_loopback_request_is_anonymous() {
        let policy = IdentityPolicy::default();
        assert!(!policy
            .identify(peer("127.0.0.1"), &HeaderMap::new())
            .is_authenticated());
    }
}
