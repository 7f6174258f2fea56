//! A grid PKI made in the test: a CA directory in OpenSSL's hashed layout (with a CRL), a
//! host certificate, user certificates, RFC 3820 proxies, and VOMS proxies made by Debian's
//! `voms-proxy-fake` with a VOMS server trusted through `vomsdir/<vo>/<host>.lsc`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Extension, X509Name, X509NameBuilder, X509};

/// A certificate and its key.
pub struct Credential {
    pub cert: X509,
    pub key: PKey<Private>,
    /// Certificates above `cert` that the client sends with it (for proxies: the chain).
    pub chain: Vec<X509>,
}

impl Credential {
    /// The PEM a TLS client presents: certificate, then chain.
    pub fn chain_pem(&self) -> Vec<u8> {
        let mut pem = self.cert.to_pem().expect("pem");
        for c in &self.chain {
            pem.extend(c.to_pem().expect("pem"));
        }
        pem
    }

    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().expect("key pem")
    }

    /// A proxy file's text as `voms-proxy-init` writes it: certificate, key, then the chain.
    pub fn proxy_pem(&self) -> Vec<u8> {
        let mut pem = self.cert.to_pem().expect("pem");
        pem.extend(self.key_pem());
        for cert in &self.chain {
            pem.extend(cert.to_pem().expect("pem"));
        }
        pem
    }

    /// Writes [`Credential::proxy_pem`] to `path`, readable by its owner only (as grid tools
    /// demand); the path as text.
    pub fn write_proxy_file(&self, path: &std::path::Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, self.proxy_pem()).expect("proxy file");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path.display().to_string()
    }

    /// Chain and key as one text, as operators register a proxy.
    pub fn pem_text(&self) -> String {
        String::from_utf8([self.chain_pem(), self.key_pem()].concat()).expect("pem is ASCII")
    }

    /// A reqwest identity for this credential.
    pub fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pkcs8_pem(&self.chain_pem(), &self.key_pem()).expect("identity")
    }
}

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key")
}

/// `/DC=org/DC=test/OU=Users/CN=Alice` → an X509Name.
pub fn name(dn: &str) -> X509Name {
    let mut builder = X509NameBuilder::new().expect("name");
    for part in dn.split('/').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').expect("k=v");
        builder.append_entry_by_text(k, v).expect("entry");
    }
    builder.build()
}

static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);

fn serial() -> Asn1Integer {
    let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    BigNum::from_u32(n)
        .expect("bn")
        .to_asn1_integer()
        .expect("serial")
}

/// Days relative to now as an ASN.1 time.
fn days(offset: i64) -> Asn1Time {
    let now = chrono::Utc::now().timestamp();
    Asn1Time::from_unix(now + offset * 86_400).expect("time")
}

pub struct Issued<'a> {
    pub subject: &'a str,
    pub issuer: Option<&'a Credential>,
    pub ca: bool,
    pub not_before_days: i64,
    pub not_after_days: i64,
    /// `proxyCertInfo` value (RFC 3820), e.g. `critical,language:id-ppl-inheritAll`.
    pub proxy_policy: Option<&'a str>,
    pub server_names: &'a [&'a str],
}

impl Default for Issued<'_> {
    fn default() -> Self {
        Issued {
            subject: "/CN=unnamed",
            issuer: None,
            ca: false,
            not_before_days: -1,
            not_after_days: 30,
            proxy_policy: None,
            server_names: &[],
        }
    }
}

/// Issues a certificate (self-signed when `issuer` is `None`).
pub fn issue(spec: Issued<'_>) -> Credential {
    let key = key();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("version");
    b.set_serial_number(&serial()).expect("serial");
    let subject = name(spec.subject);
    b.set_subject_name(&subject).expect("subject");
    match spec.issuer {
        Some(issuer) => b
            .set_issuer_name(issuer.cert.subject_name())
            .expect("issuer"),
        None => b.set_issuer_name(&subject).expect("issuer"),
    }
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&days(spec.not_before_days)).expect("nb");
    b.set_not_after(&days(spec.not_after_days)).expect("na");
    if spec.ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ext");
    } else {
        b.append_extension(BasicConstraints::new().critical().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()
                .expect("ku"),
        )
        .expect("ext");
    }
    let ski = {
        let ctx = b.x509v3_context(spec.issuer.map(|i| i.cert.as_ref()), None);
        SubjectKeyIdentifier::new().build(&ctx).expect("ski")
    };
    b.append_extension(ski).expect("ext");
    if let Some(issuer) = spec.issuer {
        let aki = {
            let ctx = b.x509v3_context(Some(&issuer.cert), None);
            AuthorityKeyIdentifier::new()
                .keyid(true)
                .build(&ctx)
                .expect("aki")
        };
        b.append_extension(aki).expect("ext");
    }
    if !spec.server_names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for n in spec.server_names {
            if n.parse::<std::net::IpAddr>().is_ok() {
                san.ip(n);
            } else {
                san.dns(n);
            }
        }
        let ctx = b.x509v3_context(spec.issuer.map(|i| i.cert.as_ref()), None);
        b.append_extension(san.build(&ctx).expect("san"))
            .expect("ext");
    }
    if let Some(policy) = spec.proxy_policy {
        // ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage OID } }
        let language: &[u8] = if policy.contains("3536.1.1.1.9") {
            &[
                0x06, 0x0b, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x9b, 0x50, 0x01, 0x01, 0x01, 0x09,
            ]
        } else {
            // id-ppl-inheritAll, 1.3.6.1.5.5.7.21.1
            &[0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x15, 0x01]
        };
        let mut policy_der = vec![0x30, language.len() as u8];
        policy_der.extend_from_slice(language);
        let mut info = vec![0x30, policy_der.len() as u8];
        info.extend(policy_der);
        let oid = openssl::asn1::Asn1Object::from_str("1.3.6.1.5.5.7.1.14").expect("oid");
        let value = openssl::asn1::Asn1OctetString::new_from_bytes(&info).expect("octets");
        let ext = X509Extension::new_from_der(&oid, true, &value).expect("proxyCertInfo");
        b.append_extension(ext).expect("ext");
    }
    let signer = spec.issuer.map(|i| &i.key).unwrap_or(&key);
    b.sign(signer, MessageDigest::sha256()).expect("sign");
    let mut chain = Vec::new();
    if let (Some(issuer), Some(_)) = (spec.issuer, spec.proxy_policy) {
        chain.push(issuer.cert.clone());
        chain.extend(issuer.chain.iter().cloned());
    }
    Credential {
        cert: b.build(),
        key,
        chain,
    }
}

/// A proxy of `holder` (RFC 3820), limited or not.
pub fn proxy(holder: &Credential, limited: bool) -> Credential {
    let subject = format!(
        "{}/CN={}",
        dn_of(&holder.cert),
        SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let policy = if limited {
        "critical,language:1.3.6.1.4.1.3536.1.1.1.9"
    } else {
        "critical,language:id-ppl-inheritAll"
    };
    issue(Issued {
        subject: &subject,
        issuer: Some(holder),
        proxy_policy: Some(policy),
        not_after_days: 1,
        ..Issued::default()
    })
}

/// A certificate's subject in the legacy slash format.
pub fn dn_of(cert: &X509) -> String {
    cert.subject_name()
        .entries()
        .map(|e| {
            format!(
                "/{}={}",
                e.object().nid().short_name().unwrap_or("?"),
                e.data().to_string().unwrap_or_default()
            )
        })
        .collect()
}

/// The whole PKI, in a temporary directory.
pub struct GridPki {
    pub dir: tempfile::TempDir,
    pub ca: Credential,
    pub host: Credential,
}

pub const CA_DN: &str = "/DC=org/DC=test/CN=Test CA";
pub const VOMS_DN: &str = "/DC=org/DC=test/CN=voms.test.org";

impl GridPki {
    pub fn new() -> GridPki {
        let dir = tempfile::tempdir().expect("pki dir");
        for sub in ["certificates", "vomsdir/atlas", "host", "work"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
        }
        let ca = issue(Issued {
            subject: CA_DN,
            ca: true,
            not_after_days: 365,
            ..Issued::default()
        });
        let hash = ca.cert.subject_name_hash();
        std::fs::write(
            dir.path().join(format!("certificates/{hash:08x}.0")),
            ca.cert.to_pem().expect("pem"),
        )
        .expect("ca");
        let host = issue(Issued {
            subject: "/DC=org/DC=test/CN=localhost",
            issuer: Some(&ca),
            server_names: &["localhost", "127.0.0.1"],
            ..Issued::default()
        });
        std::fs::write(
            dir.path().join("host/hostcert.pem"),
            host.cert.to_pem().expect("pem"),
        )
        .expect("hostcert");
        std::fs::write(dir.path().join("host/hostkey.pem"), host.key_pem()).expect("hostkey");
        std::fs::write(
            dir.path().join("vomsdir/atlas/voms.test.org.lsc"),
            format!("{VOMS_DN}\n{CA_DN}\n"),
        )
        .expect("lsc");
        GridPki { dir, ca, host }
    }

    /// An HTTPS client that trusts this PKI's CA and presents `credential`, if any.
    pub fn client(&self, credential: Option<&Credential>) -> reqwest::Client {
        let root =
            reqwest::Certificate::from_pem(&self.ca.cert.to_pem().expect("pem")).expect("root");
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(root)
            .timeout(std::time::Duration::from_secs(20));
        if let Some(c) = credential {
            builder = builder.identity(c.identity());
        }
        builder.build().expect("client")
    }

    /// `system/get_attributes` over HTTPS with `credential`: the status and the answer's text.
    pub async fn get_attributes(
        &self,
        server: &super::Server,
        credential: Option<&Credential>,
    ) -> (u16, String) {
        let response = self
            .client(credential)
            .get(format!(
                "{}/api/v1/system/get_attributes",
                server.https_url()
            ))
            .header("Accept", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "https request: {e}\n{}",
                    server
                        .lines_after(std::time::Duration::from_millis(300))
                        .join("\n")
                )
            });
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Server settings for HTTPS with this PKI.
    pub fn env(&self) -> Vec<(String, String)> {
        let p = |s: &str| self.path(s).display().to_string();
        vec![
            ("PANDA_HOSTCERT".into(), p("host/hostcert.pem")),
            ("PANDA_HOSTKEY".into(), p("host/hostkey.pem")),
            ("PANDA_CACERT_DIR".into(), p("certificates")),
            ("PANDA_VOMSDIR".into(), p("vomsdir")),
        ]
    }

    /// A user certificate issued by the CA.
    pub fn user(&self, cn: &str) -> Credential {
        issue(Issued {
            subject: &format!("/DC=org/DC=test/OU=Users/CN={cn}"),
            issuer: Some(&self.ca),
            ..Issued::default()
        })
    }

    /// Publishes a CRL revoking `revoked` (made with `openssl ca -gencrl`).
    pub fn revoke(&self, revoked: &Credential) {
        let work = self.path("work");
        let ca_pem = work.join("ca.pem");
        let ca_key = work.join("ca.key");
        std::fs::write(&ca_pem, self.ca.cert.to_pem().expect("pem")).expect("write");
        std::fs::write(&ca_key, self.ca.key_pem()).expect("write");
        let serial = revoked
            .cert
            .serial_number()
            .to_bn()
            .expect("bn")
            .to_hex_str()
            .expect("hex")
            .to_string();
        let stamp = chrono::Utc::now().format("%y%m%d%H%M%SZ");
        let later = (chrono::Utc::now() + chrono::Duration::days(30)).format("%y%m%d%H%M%SZ");
        std::fs::write(
            work.join("index.txt"),
            format!(
                "R\t{later}\t{stamp}\t{serial}\tunknown\t{}\n",
                dn_of(&revoked.cert)
            ),
        )
        .expect("index");
        std::fs::write(work.join("crlnumber"), "01\n").expect("crlnumber");
        std::fs::write(
            work.join("ca.cnf"),
            "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
             default_md = sha256\ndefault_crl_days = 30\n",
        )
        .expect("cnf");
        let out = Command::new("openssl")
            .current_dir(&work)
            .args([
                "ca", "-gencrl", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem",
                "-out", "crl.pem",
            ])
            .output()
            .expect("openssl ca");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hash = self.ca.cert.subject_name_hash();
        std::fs::copy(
            work.join("crl.pem"),
            self.path(&format!("certificates/{hash:08x}.r0")),
        )
        .expect("crl");
    }

    /// A VOMS proxy of `user` with `fqans`, its AC signed by `voms` (None: the trusted VOMS
    /// server). `None` when `voms-proxy-fake` is not installed.
    pub fn voms_proxy(
        &self,
        user: &Credential,
        fqans: &[&str],
        voms: Option<&Credential>,
    ) -> Option<Credential> {
        self.voms_proxy_of_vo(user, "atlas", fqans, voms)
    }

    /// A VOMS proxy as [`GridPki::voms_proxy`], with the AC naming the VO `vo` (which may
    /// be anything a forger writes there).
    pub fn voms_proxy_of_vo(
        &self,
        user: &Credential,
        vo: &str,
        fqans: &[&str],
        voms: Option<&Credential>,
    ) -> Option<Credential> {
        self.voms_proxy_with(user, vo, fqans, &[], voms)
    }

    /// A VOMS proxy as [`GridPki::voms_proxy_of_vo`] whose AC also carries generic
    /// attributes (`nickname=tester:atlas`, as `voms-proxy-fake -ga` takes them).
    pub fn voms_proxy_with(
        &self,
        user: &Credential,
        vo: &str,
        fqans: &[&str],
        attributes: &[&str],
        voms: Option<&Credential>,
    ) -> Option<Credential> {
        let trusted;
        let voms = match voms {
            Some(v) => v,
            None => {
                trusted = self.voms_server(&self.ca);
                &trusted
            }
        };
        let work = tempfile::tempdir_in(self.path("work")).expect("work");
        let w = |n: &str| work.path().join(n);
        std::fs::write(w("user.pem"), user.cert.to_pem().expect("pem")).expect("write");
        std::fs::write(w("user.key"), user.key_pem()).expect("write");
        std::fs::write(w("voms.pem"), voms.cert.to_pem().expect("pem")).expect("write");
        std::fs::write(w("voms.key"), voms.key_pem()).expect("write");
        set_private(&w("user.key"));
        set_private(&w("voms.key"));
        let mut command = Command::new("voms-proxy-fake");
        command
            .args(["-cert", &s(&w("user.pem")), "-key", &s(&w("user.key"))])
            .args([
                "-hostcert",
                &s(&w("voms.pem")),
                "-hostkey",
                &s(&w("voms.key")),
            ])
            .args(["-voms", vo, "-uri", "voms.test.org:15001", "-rfc", "-q"])
            .args([
                "-certdir",
                &s(&self.path("certificates")),
                "-out",
                &s(&w("proxy.pem")),
            ]);
        for fqan in fqans {
            command.args(["-fqan", fqan]);
        }
        for attribute in attributes {
            command.args(["-ga", attribute]);
        }
        let out = match command.output() {
            Ok(out) => out,
            Err(_) => return None,
        };
        assert!(
            out.status.success(),
            "voms-proxy-fake: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let pem = std::fs::read(w("proxy.pem")).expect("proxy");
        let certs = X509::stack_from_pem(&pem).expect("certs");
        let key = PKey::private_key_from_pem(&pem).expect("key");
        let mut certs = certs.into_iter();
        Some(Credential {
            cert: certs.next().expect("proxy cert"),
            key,
            chain: certs.collect(),
        })
    }

    /// A VOMS server certificate named as the trusted one, issued by `ca`.
    pub fn voms_server(&self, ca: &Credential) -> Credential {
        issue(Issued {
            subject: VOMS_DN,
            issuer: Some(ca),
            ..Issued::default()
        })
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}
