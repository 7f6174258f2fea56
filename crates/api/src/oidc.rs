//! OIDC bearer tokens, validated as upstream validates them.
//!
//! A request carries `Authorization: Bearer <JWT>` and `Origin: <vo>[.:<role>]`. The VO must
//! have a `<vo>_auth_config.json` in the `auth_config` directory (upstream's layout), which
//! names the token's audience (`client_id`, or `audience`) and the issuer's keys. Keys come
//! from the issuer's discovery document (`oidc_config_url`: its `issuer` and `jwks_uri`),
//! fetched over HTTP(S) at start and every hour after ([`OidcVerifier::refresh`]), or read
//! when it is a local file; or from `jwks_file` with `issuer` for sites without outbound
//! access.
//!
//! A token is accepted when it is RS256-signed by one of those keys, its `iss` is the
//! issuer, its `aud` includes the audience, `exp` is in the future and `nbf` (if any) in
//! the past, and `<vo>/<role>` (or `<vo>` without a role) is in its `groups` claim
//! (`wlcg.groups` also counts). The caller's DN is the title-cased `name` claim with
//! `/CN=nickname:<preferred_username>`, or `sub`; the FQAN is `/<vo>/Role=<role>`. Verified
//! tokens are cached until they expire. Every failure names its reason and never echoes the
//! token.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use openssl::sign::Verifier;
use panda_core::identity::{AuthMethod, Identity};
use serde_json::Value as Json;

/// Largest token accepted; real ID tokens are a few kB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Verified tokens kept at most.
const CACHE_LIMIT: usize = 10_000;

/// An issuer's signing keys, each with its `kid` if it has one.
type KeySet = Vec<(Option<String>, PKey<Public>)>;

/// One VO's token settings.
struct VoAuth {
    audiences: Vec<String>,
    /// The issuer and its keys; empty until a remote discovery document has been fetched.
    trust: std::sync::RwLock<(String, KeySet)>,
    /// A remote discovery document to fetch (and refresh) the issuer and keys from.
    discovery_url: Option<String>,
}

/// Validates bearer tokens against the configured VOs.
#[derive(Default)]
pub struct OidcVerifier {
    vos: HashMap<String, VoAuth>,
    production_dns: Vec<String>,
    cache: Mutex<HashMap<[u8; 32], (Identity, i64)>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("vos", &self.vos.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn read_json(path: &Path) -> Result<Json, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|_| "token is not a JWT (its parts are not base64url)".to_string())
}

/// The RSA keys of a JWKS document, by `kid`.
fn jwks_keys(jwks: &Json) -> Result<KeySet, String> {
    let mut keys = Vec::new();
    for key in jwks
        .get("keys")
        .and_then(Json::as_array)
        .ok_or("the JWKS has no keys list")?
    {
        if key.get("kty").and_then(Json::as_str) != Some("RSA") {
            continue;
        }
        let part = |name: &str| -> Result<BigNum, String> {
            let text = key
                .get(name)
                .and_then(Json::as_str)
                .ok_or(format!("a JWKS key lacks {name}"))?;
            let bytes = b64(text).map_err(|_| format!("a JWKS key's {name} is not base64url"))?;
            BigNum::from_slice(&bytes).map_err(|e| e.to_string())
        };
        let rsa = Rsa::from_public_components(part("n")?, part("e")?).map_err(|e| e.to_string())?;
        let pkey = PKey::from_rsa(rsa).map_err(|e| e.to_string())?;
        let kid = key.get("kid").and_then(Json::as_str).map(str::to_string);
        keys.push((kid, pkey));
    }
    if keys.is_empty() {
        return Err("the JWKS has no RSA keys".into());
    }
    Ok(keys)
}

fn local_path(reference: &str) -> Option<&str> {
    if let Some(path) = reference.strip_prefix("file://") {
        Some(path)
    } else if reference.starts_with('/') {
        Some(reference)
    } else {
        None
    }
}

fn load_vo(path: &Path) -> Result<VoAuth, String> {
    let config = read_json(path)?;
    let text = |key: &str| config.get(key).and_then(Json::as_str).map(str::to_string);
    let audiences: Vec<String> = [text("audience"), text("client_id")]
        .into_iter()
        .flatten()
        .collect();
    if audiences.is_empty() {
        return Err(format!("{}: needs client_id or audience", path.display()));
    }
    let url = text("oidc_config_url").unwrap_or_default();
    if text("jwks_file").is_none() && (url.starts_with("http://") || url.starts_with("https://")) {
        return Ok(VoAuth {
            audiences,
            trust: std::sync::RwLock::new((String::new(), Vec::new())),
            discovery_url: Some(url),
        });
    }
    let (issuer, keys) = if let Some(jwks_file) = text("jwks_file") {
        let issuer = text("issuer").ok_or(format!("{}: jwks_file needs issuer", path.display()))?;
        (issuer, jwks_keys(&read_json(Path::new(&jwks_file))?)?)
    } else {
        let url = text("oidc_config_url").ok_or(format!(
            "{}: needs oidc_config_url or jwks_file",
            path.display()
        ))?;
        let discovery_path = local_path(&url).ok_or(format!(
            "{}: oidc_config_url {url} is neither a URL nor a file",
            path.display()
        ))?;
        let discovery = read_json(Path::new(discovery_path))?;
        let issuer = discovery
            .get("issuer")
            .and_then(Json::as_str)
            .ok_or(format!("{discovery_path}: no issuer"))?
            .to_string();
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Json::as_str)
            .and_then(local_path)
            .ok_or(format!("{discovery_path}: jwks_uri must be a local file"))?;
        (issuer, jwks_keys(&read_json(Path::new(jwks_uri))?)?)
    };
    Ok(VoAuth {
        audiences,
        trust: std::sync::RwLock::new((issuer, keys)),
        discovery_url: None,
    })
}

/// Fetches a JSON document.
async fn fetch_json(client: &reqwest::Client, url: &str) -> Result<Json, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    response.json().await.map_err(|e| format!("{url}: {e}"))
}

/// The issuer and keys a remote discovery document points at.
async fn fetch_trust(client: &reqwest::Client, url: &str) -> Result<(String, KeySet), String> {
    let discovery = fetch_json(client, url).await?;
    let issuer = discovery
        .get("issuer")
        .and_then(Json::as_str)
        .ok_or(format!("{url}: no issuer"))?
        .to_string();
    let jwks_uri = discovery
        .get("jwks_uri")
        .and_then(Json::as_str)
        .ok_or(format!("{url}: no jwks_uri"))?;
    let keys = jwks_keys(&fetch_json(client, jwks_uri).await?)?;
    Ok((issuer, keys))
}

/// `Test user` → `Test User`, as Python's `str.title()` for plain names.
fn title_case(name: &str) -> String {
    name.split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first
                    .to_uppercase()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl OidcVerifier {
    /// Reads every `<vo>_auth_config.json` in `dir`. Returns the verifier and one warning
    /// per file that could not be used.
    pub fn load(dir: &Path, production_dns: Vec<String>) -> (OidcVerifier, Vec<String>) {
        let mut verifier = OidcVerifier {
            production_dns,
            ..OidcVerifier::default()
        };
        let mut warnings = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                warnings.push(format!("auth_config {}: {e}", dir.display()));
                return (verifier, warnings);
            }
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(vo) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix("_auth_config.json"))
            else {
                continue;
            };
            match load_vo(&path) {
                Ok(auth) => {
                    verifier.vos.insert(vo.to_string(), auth);
                }
                Err(e) => warnings.push(e),
            }
        }
        (verifier, warnings)
    }

    /// Whether any VO is configured.
    pub fn is_enabled(&self) -> bool {
        !self.vos.is_empty()
    }

    /// Whether some VO's keys come from a remote discovery document.
    pub fn has_remote_issuers(&self) -> bool {
        self.vos.values().any(|v| v.discovery_url.is_some())
    }

    /// Fetches the remote discovery documents and keys again; a failed fetch keeps the
    /// keys already known. Returns one warning per failure.
    pub async fn refresh(&self) -> Vec<String> {
        let client = match reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
        {
            Ok(client) => client,
            Err(e) => return vec![format!("no HTTP client for the discovery documents: {e}")],
        };
        let mut warnings = Vec::new();
        for (vo, auth) in &self.vos {
            let Some(url) = &auth.discovery_url else {
                continue;
            };
            match fetch_trust(&client, url).await {
                Ok(trust) => {
                    if let Ok(mut current) = auth.trust.write() {
                        *current = trust;
                    }
                }
                Err(e) => warnings.push(format!("VO {vo}: {e}")),
            }
        }
        warnings
    }

    /// The identity a token and `Origin` prove, or why not.
    pub fn verify(&self, token: &str, origin: Option<&str>) -> Result<Identity, String> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(format!("token longer than {MAX_TOKEN_BYTES} bytes"));
        }
        let origin = origin
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .ok_or("a bearer token needs the Origin header (Origin: <vo> or <vo>.<role>)")?;
        let key = openssl::sha::sha256(format!("{origin}\n{token}").as_bytes());
        let now = chrono::Utc::now().timestamp();
        if let Ok(cache) = self.cache.lock() {
            if let Some((identity, exp)) = cache.get(&key).filter(|(_, exp)| *exp > now) {
                let _ = exp;
                return Ok(identity.clone());
            }
        }
        let (identity, exp) = self.verify_uncached(token, origin, now)?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.retain(|_, (_, e)| *e > now);
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(key, (identity.clone(), exp));
        }
        Ok(identity)
    }

    fn verify_uncached(
        &self,
        token: &str,
        origin: &str,
        now: i64,
    ) -> Result<(Identity, i64), String> {
        let (vo, role) = match origin.split_once(':') {
            Some((vo, role)) => (vo, Some(role)),
            None => match origin.rsplit_once('.') {
                Some((vo, role)) if self.vos.contains_key(vo) => (vo, Some(role)),
                _ => (origin, None),
            },
        };
        let auth = self.vos.get(vo).ok_or(format!(
            "VO {vo} (from Origin) is not configured on this server"
        ))?;
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err("token is not a JWT (it needs three dot-separated parts)".into());
        };
        let header: Json = serde_json::from_slice(&b64(header)?)
            .map_err(|_| "token header is not JSON".to_string())?;
        let claims: Json = serde_json::from_slice(&b64(payload)?)
            .map_err(|_| "token claims are not JSON".to_string())?;
        let alg = header.get("alg").and_then(Json::as_str).unwrap_or("none");
        if alg != "RS256" {
            return Err(format!(
                "token algorithm {alg} is not accepted (RS256 only)"
            ));
        }
        let kid = header.get("kid").and_then(Json::as_str);
        let signature = b64(signature)?;
        let signed = format!("{}.{}", parts[0], parts[1]);
        let trust = auth
            .trust
            .read()
            .map_err(|_| "the issuer's keys are unavailable".to_string())?;
        let (issuer, keys) = (&trust.0, &trust.1);
        if keys.is_empty() {
            return Err(format!("the keys of VO {vo}'s issuer could not be fetched"));
        }
        let verified = keys
            .iter()
            .filter(|(k, _)| kid.is_none() || k.is_none() || k.as_deref() == kid)
            .any(|(_, pkey)| {
                Verifier::new(MessageDigest::sha256(), pkey)
                    .and_then(|mut v| v.verify_oneshot(&signature, signed.as_bytes()))
                    .unwrap_or(false)
            });
        if !verified {
            return Err("token signature does not verify against the issuer's keys".into());
        }
        let iss = claims.get("iss").and_then(Json::as_str).unwrap_or("");
        if iss != issuer.as_str() {
            return Err(format!("token issuer {iss:?} is not {issuer:?}"));
        }
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Json::String(a)) => vec![a.as_str()],
            Some(Json::Array(list)) => list.iter().filter_map(Json::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences
            .iter()
            .any(|a| auth.audiences.iter().any(|w| w == a))
        {
            return Err(format!(
                "token audience {audiences:?} does not include {:?}",
                auth.audiences[0]
            ));
        }
        let exp = claims
            .get("exp")
            .and_then(Json::as_i64)
            .ok_or("token has no exp claim")?;
        if exp <= now {
            return Err(format!("token expired {} s ago", now - exp));
        }
        if let Some(nbf) = claims.get("nbf").and_then(Json::as_i64) {
            if nbf > now + 60 {
                return Err(format!("token is not valid for another {} s", nbf - now));
            }
        }
        let groups: Vec<&str> = ["groups", "wlcg.groups"]
            .iter()
            .filter_map(|c| claims.get(*c).and_then(Json::as_array))
            .flatten()
            .filter_map(Json::as_str)
            .map(|g| g.trim_start_matches('/'))
            .collect();
        let wanted = match role {
            Some(role) => format!("{vo}/{role}"),
            None => vo.to_string(),
        };
        if !groups.contains(&wanted.as_str()) {
            return Err(format!("{wanted} is not in the token's groups"));
        }
        let dn = match claims.get("name").and_then(Json::as_str) {
            Some(name) => {
                let mut dn = title_case(name);
                if let Some(nick) = claims.get("preferred_username").and_then(Json::as_str) {
                    dn.push_str(&format!("/CN=nickname:{nick}"));
                }
                dn
            }
            None => claims
                .get("sub")
                .and_then(Json::as_str)
                .ok_or("token has neither name nor sub")?
                .to_string(),
        };
        let fqan = match role {
            Some(role) => format!("/{vo}/Role={role}"),
            None => format!("/{vo}"),
        };
        let production = role == Some("production")
            || self
                .production_dns
                .iter()
                .any(|p| !p.is_empty() && dn.contains(p.as_str()));
        Ok((
            Identity {
                method: AuthMethod::Token,
                dn: Some(dn),
                pilot_role: role == Some("pilot"),
                fqans: vec![fqan],
                production,
                limited_proxy: false,
            },
            exp,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_title_cased_as_python_does() {
        assert_eq!(title_case("test USER"), "Test User");
    }

    #[test]
    fn without_configuration_every_token_is_refused_with_a_reason() {
        let verifier = OidcVerifier::default();
        assert!(verifier
            .verify("a.b.c", None)
            .is_err_and(|e| e.contains("Origin")));
        assert!(verifier
            .verify("a.b.c", Some("atlas"))
            .is_err_and(|e| e.contains("not configured")));
    }
}
