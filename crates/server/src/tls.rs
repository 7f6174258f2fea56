//! HTTPS on `pserverport`: the same routes as plain HTTP, behind OpenSSL with the host
//! certificate, TLS 1.2 and 1.3 only.
//!
//! A client certificate is optional at the TLS level (upstream's `SSLVerifyClient optional`):
//! the handshake accepts any certificate the client offers, and the chain is then verified
//! once per connection by [`X509Verifier`] (proxies, VOMS, CRLs). The result travels with
//! every request of the connection as a [`ClientCertificate`], so a bad certificate gets an
//! HTTP 403 that says what is wrong instead of a bare TLS alert.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::X509;
use panda_api::{ClientCertificate, X509Verifier};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// How long a client may take to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The TLS settings of the HTTPS listener.
pub fn acceptor(host_cert: &Path, host_key: &Path) -> anyhow::Result<SslAcceptor> {
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).context("TLS set-up")?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .context("TLS versions")?;
    builder
        .set_certificate_chain_file(host_cert)
        .with_context(|| format!("host certificate {}", host_cert.display()))?;
    builder
        .set_private_key_file(host_key, openssl::ssl::SslFiletype::PEM)
        .with_context(|| format!("host key {}", host_key.display()))?;
    builder
        .check_private_key()
        .context("the host key does not match the host certificate")?;
    // Ask for a client certificate, accept whatever comes; it is verified after the
    // handshake, where a refusal can be explained.
    builder.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
    Ok(builder.build())
}

/// Serves `app` over TLS on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    acceptor: Arc<SslAcceptor>,
    app: Router,
    verifier: Option<Arc<X509Verifier>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                tracing::warn!("HTTPS accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, app, verifier) = (acceptor.clone(), app.clone(), verifier.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer, &acceptor, app, verifier).await {
                tracing::debug!(%peer, "HTTPS connection: {e:#}");
            }
        });
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &SslAcceptor,
    app: Router,
    verifier: Option<Arc<X509Verifier>>,
) -> anyhow::Result<()> {
    let ssl = Ssl::new(acceptor.context())?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, Pin::new(&mut stream).accept())
        .await
        .context("handshake timed out")?
        .context("handshake")?;
    let chain: Vec<X509> = {
        let ssl = stream.ssl();
        let mut chain: Vec<X509> = ssl.peer_certificate().into_iter().collect();
        if let Some(rest) = ssl.peer_cert_chain() {
            // On the server side the presented chain does not repeat the leaf.
            chain.extend(rest.iter().map(|c| c.to_owned()));
        }
        chain
    };
    let certificate = match (&verifier, chain.is_empty()) {
        (_, true) => None,
        (Some(verifier), false) => {
            let verified = verifier.verify(&chain);
            if let Err(reason) = &verified {
                tracing::warn!(target: "panda::auth", %peer, %reason, "client certificate refused");
            }
            Some(ClientCertificate(Arc::new(verified)))
        }
        (None, false) => Some(ClientCertificate(Arc::new(Err(
            "client certificates are not accepted: no CA directory is configured".into(),
        )))),
    };
    let service = app.map_request(move |mut request: axum::extract::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        request
    });
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}
