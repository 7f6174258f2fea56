//! HTTPS on `pserverport`: the same routes as plain HTTP, behind OpenSSL with the host
//! certificate, TLS 1.2 and 1.3 only.
//!
//! A client certificate is optional at the TLS level (upstream's `SSLVerifyClient optional`):
//! the handshake accepts any certificate the client offers, and the chain is then verified
//! once per connection by `X509Verifier` (proxies, VOMS, CRLs) in `connections`. The result
//! travels with every request of the connection as a `ClientCertificate`, so a bad
//! certificate gets an HTTP 403 that says what is wrong instead of a bare TLS alert.

use std::path::Path;

use anyhow::Context;
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode, SslVersion};

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
