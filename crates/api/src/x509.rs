//! Grid certificates: end-entity certificates, RFC 3820 proxies (and proxies of proxies), and
//! the VOMS attribute certificates inside proxies, verified as the grid's Apache (mod_ssl with
//! mod_gridsite) verifies them for upstream.
//!
//! - The chain is verified against the CA directory (OpenSSL's hashed layout, as
//!   `/etc/grid-security/certificates`), proxies allowed; a CRL is honoured when the CA
//!   publishes one (revoked is refused; no CRL at all is accepted, as fetch-crl may lag).
//! - The identity is the end-entity certificate's DN in upstream's legacy slash format
//!   (`/DC=ch/DC=cern/OU=Users/CN=...`), whatever proxies hang below it.
//! - A limited proxy (RFC 3820 policy `id-ppl-limited`, or a legacy `CN=limited proxy`) is
//!   marked as such; user functions refuse it, the pilot's accept it, as upstream.
//! - FQANs come from the VOMS AC only when its signature verifies with a VOMS server
//!   certificate that chains to a trusted CA and matches the VO's
//!   `vomsdir/<vo>/<host>.lsc` (subject and issuer DNs); the AC must be valid now and be
//!   issued for this end-entity certificate. An AC that fails any check refuses the request
//!   with the reason, rather than silently dropping the user's roles.

use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::stack::Stack;
use openssl::x509::store::{X509Lookup, X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509NameRef, X509Ref, X509StoreContext, X509VerifyResult, X509};
use panda_core::identity::{is_pilot_fqan, is_production_fqan, AuthMethod, Identity};

use crate::der;

const PROXY_CERT_INFO: &str = "1.3.6.1.5.5.7.1.14";
const PROXY_CERT_INFO_DRAFT: &str = "1.3.6.1.4.1.3536.1.222";
const LIMITED_POLICY: &str = "1.3.6.1.4.1.3536.1.1.1.9";
const VOMS_ACS: &str = "1.3.6.1.4.1.8005.100.100.5";
const VOMS_ATTRIBUTE: &str = "1.3.6.1.4.1.8005.100.100.4";
const VOMS_AC_CERTS: &str = "1.3.6.1.4.1.8005.100.100.10";

/// Verifies client certificate chains.
pub struct X509Verifier {
    /// Chains checked against CRLs.
    with_crls: X509Store,
    /// The same CAs without CRL checks, for CAs that publish none.
    without_crls: X509Store,
    voms_dir: PathBuf,
    production_dns: Vec<String>,
    pilot_owners: Vec<String>,
}

impl std::fmt::Debug for X509Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Verifier")
            .field("voms_dir", &self.voms_dir)
            .finish()
    }
}

fn store(ca_dir: &Path, crls: bool) -> Result<X509Store, String> {
    let mut builder = X509StoreBuilder::new().map_err(|e| e.to_string())?;
    let lookup = builder
        .add_lookup(X509Lookup::hash_dir())
        .map_err(|e| e.to_string())?;
    let dir = ca_dir
        .to_str()
        .ok_or_else(|| format!("{} is not a UTF-8 path", ca_dir.display()))?;
    lookup
        .add_dir(dir, openssl::ssl::SslFiletype::PEM)
        .map_err(|e| format!("CA directory {dir}: {e}"))?;
    let mut flags = X509VerifyFlags::ALLOW_PROXY_CERTS;
    if crls {
        flags |= X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL;
    }
    builder.set_flags(flags).map_err(|e| e.to_string())?;
    Ok(builder.build())
}

/// A DN in upstream's legacy slash format.
pub fn legacy_dn(name: &X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("UNKNOWN");
            let value = entry.data().to_string().unwrap_or_default();
            format!("/{key}={value}")
        })
        .collect()
}

/// A certificate's extensions: `(oid, value)`.
fn extensions(cert: &X509Ref) -> Result<Vec<(String, Vec<u8>)>, String> {
    let der_bytes = cert.to_der().map_err(|e| e.to_string())?;
    let (certificate, _) = der::expect(&der_bytes, der::SEQUENCE, "certificate")?;
    let (tbs, _) = der::expect(certificate.content, der::SEQUENCE, "tbsCertificate")?;
    let mut out = Vec::new();
    for field in der::children(tbs.content)? {
        if field.tag != 0xa3 {
            continue;
        }
        let (list, _) = der::expect(field.content, der::SEQUENCE, "extensions")?;
        for extension in der::children(list.content)? {
            let parts = der::children(extension.content)?;
            let (Some(oid), Some(value)) = (parts.first(), parts.last()) else {
                continue;
            };
            if oid.tag == der::OID && value.tag == der::OCTET_STRING {
                out.push((der::oid_string(oid.content), value.content.to_vec()));
            }
        }
    }
    Ok(out)
}

/// What a certificate is in a grid chain.
struct CertKind {
    proxy: bool,
    limited: bool,
}

fn kind(cert: &X509Ref) -> Result<CertKind, String> {
    let last_cn = cert
        .subject_name()
        .entries()
        .last()
        .filter(|e| e.object().nid() == openssl::nid::Nid::COMMONNAME)
        .and_then(|e| e.data().to_string().ok());
    let mut kind = CertKind {
        proxy: matches!(last_cn.as_deref(), Some("proxy" | "limited proxy")),
        limited: last_cn.as_deref() == Some("limited proxy"),
    };
    for (oid, value) in extensions(cert)? {
        if oid == PROXY_CERT_INFO || oid == PROXY_CERT_INFO_DRAFT {
            kind.proxy = true;
            let (info, _) = der::expect(&value, der::SEQUENCE, "ProxyCertInfo")?;
            for part in der::children(info.content)? {
                if part.tag != der::SEQUENCE {
                    continue;
                }
                let policy = der::children(part.content)?;
                if policy.first().is_some_and(|p| {
                    p.tag == der::OID && der::oid_string(p.content) == LIMITED_POLICY
                }) {
                    kind.limited = true;
                }
            }
        }
    }
    Ok(kind)
}

fn generalized_time(element: &der::Element<'_>) -> Result<NaiveDateTime, String> {
    let text = std::str::from_utf8(element.content).map_err(|_| "bad AC time".to_string())?;
    NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y%m%d%H%M%S")
        .map_err(|_| format!("bad AC time {text}"))
}

/// A VO or host name from an AC, accepted only as one plain file-name component: letters,
/// digits, `.`, `-` and `_`, not starting with a dot, at most 255 bytes. Anything else (a
/// `/`, `..`, NUL, spaces) is refused: the name came from the client.
pub fn path_component<'a>(name: &'a str, what: &str) -> Result<&'a str, String> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if plain {
        Ok(name)
    } else {
        Err(format!("the AC's {what} name {name:?} is not a plain name"))
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

impl X509Verifier {
    /// Loads the CA directory; `voms_dir` holds `<vo>/<host>.lsc` files.
    pub fn load(
        ca_dir: &Path,
        voms_dir: &Path,
        production_dns: Vec<String>,
        pilot_owners: Vec<String>,
    ) -> Result<X509Verifier, String> {
        if !ca_dir.is_dir() {
            return Err(format!("CA directory {} does not exist", ca_dir.display()));
        }
        Ok(X509Verifier {
            with_crls: store(ca_dir, true)?,
            without_crls: store(ca_dir, false)?,
            voms_dir: voms_dir.to_path_buf(),
            production_dns,
            pilot_owners,
        })
    }

    /// Verifies `leaf` with the untrusted `intermediates` against the CAs; CRLs are
    /// honoured when the issuing CA publishes one. Returns the path OpenSSL built and
    /// verified, leaf first and trust anchor last: the only certificates an identity may be
    /// read from. Presented certificates that are not on it play no part.
    fn verify_chain(&self, leaf: &X509Ref, intermediates: &[X509]) -> Result<Vec<X509>, String> {
        let mut stack = Stack::new().map_err(|e| e.to_string())?;
        for cert in intermediates {
            stack.push(cert.clone()).map_err(|e| e.to_string())?;
        }
        type Outcome = (X509VerifyResult, u32, Vec<X509>);
        let check = |store: &X509Store| -> Result<Outcome, String> {
            let mut context = X509StoreContext::new().map_err(|e| e.to_string())?;
            context
                .init(store, leaf, &stack, |c| {
                    let ok = c.verify_cert()?;
                    let path = match (ok, c.chain()) {
                        (true, Some(chain)) => chain.iter().map(|x| x.to_owned()).collect(),
                        _ => Vec::new(),
                    };
                    Ok((c.error(), c.error_depth(), path))
                })
                .map_err(|e| e.to_string())
        };
        let (mut result, mut depth, mut path) = check(&self.with_crls)?;
        if result.as_raw() == 3 {
            // X509_V_ERR_UNABLE_TO_GET_CRL: the CA publishes no CRL.
            (result, depth, path) = check(&self.without_crls)?;
        }
        if result == X509VerifyResult::OK && !path.is_empty() {
            Ok(path)
        } else if result == X509VerifyResult::OK {
            Err("certificate chain does not verify: no verified path".into())
        } else {
            Err(format!(
                "certificate chain does not verify: {} (at depth {depth})",
                result.error_string()
            ))
        }
    }

    /// The identity a presented chain (leaf first) proves, or why it is refused.
    ///
    /// Everything is read from the verified path: the proxies from the leaf up to the first
    /// certificate that is not a proxy, which is the end-entity certificate and gives the
    /// DN. A limited proxy anywhere on that stretch makes the whole chain limited, and VOMS
    /// ACs count only from proxies on it, issued for that end-entity certificate. Extra
    /// certificates the client sent that OpenSSL did not put on the path are ignored: they
    /// prove nothing, and never name the caller.
    pub fn verify(&self, chain: &[X509]) -> Result<Identity, String> {
        let (leaf, rest) = chain
            .split_first()
            .ok_or_else(|| "no client certificate".to_string())?;
        let path = self.verify_chain(leaf, rest)?;
        let mut limited = false;
        let mut end_entity = None;
        let mut proxies = Vec::new();
        for cert in &path {
            let k = kind(cert)?;
            if k.proxy {
                limited |= k.limited;
                proxies.push(cert);
            } else {
                end_entity = Some(cert);
                break;
            }
        }
        let end_entity =
            end_entity.ok_or_else(|| "the chain has no end-entity certificate".to_string())?;
        let dn = legacy_dn(end_entity.subject_name());
        let mut fqans = Vec::new();
        for proxy in &proxies {
            for (oid, value) in extensions(proxy)? {
                if oid == VOMS_ACS {
                    fqans.extend(
                        self.voms_fqans(&value, end_entity)
                            .map_err(|e| format!("the VOMS attributes do not verify: {e}"))?,
                    );
                }
            }
        }
        let listed = |list: &[String]| {
            list.iter()
                .any(|p| !p.is_empty() && dn.contains(p.as_str()))
        };
        Ok(Identity {
            method: AuthMethod::Certificate,
            production: fqans.iter().any(|f| is_production_fqan(f)) || listed(&self.production_dns),
            pilot_role: fqans.iter().any(|f| is_pilot_fqan(f)) || listed(&self.pilot_owners),
            dn: Some(dn),
            fqans,
            limited_proxy: limited,
        })
    }

    /// Parses one DER certificate as the verifier parses a presented one (its kind, its
    /// extensions, its VOMS ACs with itself as holder), without chain verification. For the
    /// fuzz target of the DER, X.509 and AC parsers; an identity never comes from this.
    #[doc(hidden)]
    pub fn inspect_untrusted(&self, der_bytes: &[u8]) -> Result<usize, String> {
        let cert = X509::from_der(der_bytes).map_err(|e| e.to_string())?;
        let k = kind(&cert)?;
        let mut found = usize::from(k.proxy) + usize::from(k.limited);
        for (oid, value) in extensions(&cert)? {
            if oid == VOMS_ACS {
                found += self.voms_fqans(&value, &cert).map_or(0, |f| f.len());
            }
        }
        Ok(found)
    }

    /// Parses a VOMS AC extension's value for `holder` as [`X509Verifier::verify`] does. For
    /// the fuzz target of the AC parser.
    #[doc(hidden)]
    pub fn inspect_voms_untrusted(&self, value: &[u8], holder: &X509Ref) -> Result<usize, String> {
        self.voms_fqans(value, holder).map(|f| f.len())
    }

    /// The FQANs of the VOMS ACs in a proxy extension, each AC verified.
    fn voms_fqans(&self, value: &[u8], holder: &X509Ref) -> Result<Vec<String>, String> {
        let (outer, _) = der::expect(value, der::SEQUENCE, "VOMS ACs")?;
        let mut fqans = Vec::new();
        for list in der::children(outer.content)? {
            for ac in der::children(list.content)? {
                fqans.extend(self.verify_ac(&ac, holder)?);
            }
        }
        Ok(fqans)
    }

    fn verify_ac(&self, ac: &der::Element<'_>, holder: &X509Ref) -> Result<Vec<String>, String> {
        let parts = der::children(ac.content)?;
        let [info, algorithm, signature] = parts.as_slice() else {
            return Err("an attribute certificate is not info, algorithm, signature".into());
        };
        let fields = der::children(info.content)?;
        if fields.len() < 7 {
            return Err("an attribute certificate is truncated".into());
        }
        // Holder: the end-entity certificate's serial number.
        let holder_id = der::children(fields[1].content)?;
        let base = holder_id
            .iter()
            .find(|e| e.tag == 0xa0)
            .ok_or("the AC names no holder certificate")?;
        let serial = der::children(base.content)?
            .into_iter()
            .find(|e| e.tag == der::INTEGER)
            .ok_or("the AC holder has no serial")?;
        let holder_serial = holder
            .serial_number()
            .to_bn()
            .map_err(|e| e.to_string())?
            .to_vec();
        if strip_leading_zeros(serial.content) != strip_leading_zeros(&holder_serial) {
            return Err("the AC was issued for another certificate".into());
        }
        // Validity.
        let times = der::children(fields[5].content)?;
        let (Some(not_before), Some(not_after)) = (times.first(), times.get(1)) else {
            return Err("the AC has no validity period".into());
        };
        let now = chrono::Utc::now().naive_utc();
        if now < generalized_time(not_before)? || now > generalized_time(not_after)? {
            return Err("the AC is not valid now".into());
        }
        // The signature first: nothing the AC says is read before its signer, a certificate
        // carried in the AC and trusted by the CAs, is shown to have signed it.
        let signer = self.ac_signer(&fields)?;
        self.verify_chain(&signer, &[])
            .map_err(|e| format!("the VOMS server certificate: {e}"))?;
        let digest = match der::children(algorithm.content)?
            .first()
            .map(|o| der::oid_string(o.content))
            .as_deref()
        {
            Some("1.2.840.113549.1.1.5") => MessageDigest::sha1(),
            Some("1.2.840.113549.1.1.11") => MessageDigest::sha256(),
            Some("1.2.840.113549.1.1.12") => MessageDigest::sha384(),
            Some("1.2.840.113549.1.1.13") => MessageDigest::sha512(),
            other => return Err(format!("AC signature algorithm {other:?} is not supported")),
        };
        let bits = signature
            .content
            .split_first()
            .map(|(_, b)| b)
            .unwrap_or(&[]);
        let key = signer.public_key().map_err(|e| e.to_string())?;
        let valid = Verifier::new(digest, &key)
            .and_then(|mut v| v.verify_oneshot(bits, info.raw))
            .unwrap_or(false);
        if !valid {
            return Err("the AC signature does not verify".into());
        }
        // Attributes: the VO (from the policy authority) and the FQANs.
        let mut vo_host = None;
        let mut fqans = Vec::new();
        for attribute in der::children(fields[6].content)? {
            let items = der::children(attribute.content)?;
            if !items
                .first()
                .is_some_and(|o| o.tag == der::OID && der::oid_string(o.content) == VOMS_ATTRIBUTE)
            {
                continue;
            }
            let Some(values) = items.get(1) else { continue };
            for syntax in der::children(values.content)? {
                for part in der::children(syntax.content)? {
                    match part.tag {
                        0xa0 => {
                            for name in der::children(part.content)? {
                                if name.tag == 0x86 {
                                    vo_host =
                                        Some(String::from_utf8_lossy(name.content).into_owned());
                                }
                            }
                        }
                        der::SEQUENCE => {
                            for fqan in der::children(part.content)? {
                                if fqan.tag == der::OCTET_STRING {
                                    fqans.push(String::from_utf8_lossy(fqan.content).into_owned());
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let authority = vo_host.ok_or("the AC names no VO")?;
        let (vo, host) = authority
            .split_once("://")
            .map(|(vo, rest)| {
                (
                    vo.to_string(),
                    rest.split(':').next().unwrap_or("").to_string(),
                )
            })
            .ok_or_else(|| {
                format!("the AC's policy authority {authority:?} is not vo://host:port")
            })?;
        // Both become path components under vomsdir: plain names only.
        let (vo, host) = (path_component(&vo, "VO")?, path_component(&host, "host")?);
        let lsc = self.voms_dir.join(vo).join(format!("{host}.lsc"));
        let trusted = std::fs::read_to_string(&lsc).map_err(|_| {
            format!(
                "no trusted VOMS server {host} for VO {vo} ({} is missing)",
                lsc.display()
            )
        })?;
        let lines: Vec<&str> = trusted
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let expected = (
            legacy_dn(signer.subject_name()),
            legacy_dn(signer.issuer_name()),
        );
        if lines.len() < 2 || lines[0] != expected.0 || lines[1] != expected.1 {
            return Err(format!(
                "the AC was signed by {}, which {} does not name",
                expected.0,
                lsc.display()
            ));
        }
        Ok(fqans)
    }

    /// The first certificate of the AC's certificate extension.
    fn ac_signer(&self, fields: &[der::Element<'_>]) -> Result<X509, String> {
        let extensions = fields
            .iter()
            .skip(7)
            .find(|f| f.tag == der::SEQUENCE)
            .ok_or("the AC carries no extensions")?;
        for extension in der::children(extensions.content)? {
            let items = der::children(extension.content)?;
            let is_certs = items
                .first()
                .is_some_and(|o| o.tag == der::OID && der::oid_string(o.content) == VOMS_AC_CERTS);
            let Some(value) = items.last().filter(|_| is_certs) else {
                continue;
            };
            let (outer, _) = der::expect(value.content, der::SEQUENCE, "AC certificates")?;
            for inner in der::children(outer.content)? {
                if let Some(cert) = der::children(inner.content)?.first() {
                    return X509::from_der(cert.raw).map_err(|e| e.to_string());
                }
            }
        }
        Err("the AC carries no VOMS server certificate".into())
    }
}

#[cfg(test)]
mod tests {
    use super::path_component;

    #[test]
    fn voms_names_are_plain_file_names_only() {
        for good in ["atlas", "voms.cern.ch", "lcg-voms2.cern.ch", "vo_1"] {
            assert_eq!(path_component(good, "VO"), Ok(good));
        }
        for bad in ["", "..", "../x", "a/b", ".hidden", "a\0b", "a b", "/etc"] {
            assert!(path_component(bad, "VO").is_err(), "{bad:?}");
        }
        assert!(path_component(&"a".repeat(256), "host").is_err());
    }
}
