//! Credentials: users' own secrets (pbook `set_secret` / `list_secrets`, and pilots reading
//! their job owner's message-broker secrets), and the proxies, access tokens, token keys and
//! key files operators register for pilots and Harvester.
//!
//! The policy of this module:
//! - **At rest everything is sealed** with the server's credential key (AES-256-GCM, a fresh
//!   nonce per value; the row's kind, name and label, or the secrets' owner, are the
//!   associated data, so a sealed value moved to another row does not open). The key comes
//!   from a file (`credential_key_file`); a server without one stores and hands out nothing.
//! - **Who may fetch** what operators registered, decided from the verified identity only:
//!   - proxies and access tokens: the production or pilot role (which includes the
//!     `pilot_owners` DNs), or `p` in the caller's `users.gridpref` (upstream's rule); a caller
//!     may also fetch a proxy registered for its own DN;
//!   - key files: the production or pilot role, or `k`;
//!   - token keys: the production role, or `t`.
//!
//!   Every other caller is refused, with a message that names the rule and never a value.
//! - **User secrets** belong to the caller's name (`clean_user_id` of its DN) and nobody else
//!   reads them through this server. Bounded: [`MAX_SECRET_KEY_BYTES`] per name,
//!   [`MAX_SECRET_VALUE_BYTES`] per value (pbook's own limit), [`MAX_SECRETS`] names and
//!   [`MAX_SECRETS_BYTES`] in all per user.
//! - Nothing here logs a value or puts one in an error.

use std::fmt;
use std::path::Path;

use base64::Engine;
use chrono::NaiveDateTime;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use panda_core::identity::{clean_user_id, Identity};
use panda_store::ports::CredentialStore;
use panda_store::SealedCredential;
use serde_json::{Map, Value as Json};

use crate::{JobService, ServiceError};

/// Longest name of one user secret, in bytes.
pub const MAX_SECRET_KEY_BYTES: usize = 256;
/// Longest value of one user secret: pbook refuses more than 1,000 kB itself.
pub const MAX_SECRET_VALUE_BYTES: usize = 1000 * 1024;
/// Most secrets one user keeps.
pub const MAX_SECRETS: usize = 1000;
/// Most bytes of names and values one user keeps in all.
pub const MAX_SECRETS_BYTES: usize = 4 * 1024 * 1024;
/// Largest credential an operator registers (a proxy with its chain is a few kB).
pub const MAX_CREDENTIAL_BYTES: usize = 256 * 1024;

/// The prefix of a sealed value: format version 1.
const SEALED_PREFIX: &str = "v1";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// The server's credential key: 32 bytes, read from a file of 64 hex digits.
#[derive(Clone)]
pub struct CredentialKey {
    bytes: [u8; 32],
    id: String,
}

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialKey({})", self.id)
    }
}

impl CredentialKey {
    /// The key of a file holding 64 hex digits (surrounding white space ignored).
    pub fn from_file(path: &Path) -> Result<CredentialKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the credential key {}: {e}", path.display()))?;
        CredentialKey::from_hex(text.trim())
            .map_err(|why| format!("credential key {}: {why}", path.display()))
    }

    /// The key of 64 hex digits.
    pub fn from_hex(hex: &str) -> Result<CredentialKey, String> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "expected 64 hex digits (32 bytes), e.g. from `panda-server creds new-key`".into(),
            );
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| "expected 64 hex digits".to_string())?;
        }
        Ok(CredentialKey::from_bytes(bytes))
    }

    /// A new random key.
    pub fn generate() -> Result<CredentialKey, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a key: {e}"))?;
        Ok(CredentialKey::from_bytes(bytes))
    }

    fn from_bytes(bytes: [u8; 32]) -> CredentialKey {
        // The id names the key in each sealed value, so that a value sealed with another key
        // is reported as such; a hash prefix tells nothing of the key.
        let digest = openssl::sha::sha256(&bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        CredentialKey { bytes, id }
    }

    /// The key as the 64 hex digits of its file.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key's fingerprint (8 hex digits), stored beside what it sealed.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plain`, bound to `context` (which row it belongs to).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let mut tag = [0u8; TAG_BYTES];
        let sealed = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.bytes,
            Some(&nonce),
            context.as_bytes(),
            plain,
            &mut tag,
        )
        .map_err(|_| "sealing failed".to_string())?;
        let mut blob = Vec::with_capacity(NONCE_BYTES + sealed.len() + TAG_BYTES);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        blob.extend_from_slice(&tag);
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        Ok(format!("{SEALED_PREFIX}:{}:{b64}", self.id))
    }

    /// Opens what [`CredentialKey::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, String> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(SEALED_PREFIX), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err("not a sealed value".into());
        };
        if id != self.id {
            return Err(format!(
                "sealed with key {id}, and this server's credential key is {}",
                self.id
            ));
        }
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "a sealed value that is not base64".to_string())?;
        if blob.len() < NONCE_BYTES + TAG_BYTES {
            return Err("a sealed value too short to be one".into());
        }
        let (nonce, rest) = blob.split_at(NONCE_BYTES);
        let (body, tag) = rest.split_at(rest.len() - TAG_BYTES);
        decrypt_aead(
            Cipher::aes_256_gcm(),
            &self.bytes,
            Some(nonce),
            context.as_bytes(),
            body,
            tag,
        )
        .map_err(|_| "a sealed value that does not open: altered, or moved from another row".into())
    }
}

/// What operators register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// An X.509 proxy, by bare DN (or a name such as `atlpilo2`) and VOMS role.
    Proxy,
    /// An OIDC access token, by client name (`pilot_server`).
    AccessToken,
    /// A token key, by client name and key id: what pilots prove they may renew a token with.
    TokenKey,
    /// A key file (a key pair's public or private half), by name.
    Key,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 4] = [
        CredentialKind::Proxy,
        CredentialKind::AccessToken,
        CredentialKind::TokenKey,
        CredentialKind::Key,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Proxy => "proxy",
            CredentialKind::AccessToken => "access_token",
            CredentialKind::TokenKey => "token_key",
            CredentialKind::Key => "key",
        }
    }

    pub fn parse(text: &str) -> Option<CredentialKind> {
        CredentialKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Upstream's `gridpref` letter that lets a caller fetch this kind.
    pub fn permission_letter(self) -> char {
        match self {
            CredentialKind::Proxy | CredentialKind::AccessToken => 'p',
            CredentialKind::Key => 'k',
            CredentialKind::TokenKey => 't',
        }
    }

    /// What a refusal calls the kind.
    fn noun(self) -> &'static str {
        match self {
            CredentialKind::Proxy => "proxies",
            CredentialKind::AccessToken => "access tokens",
            CredentialKind::TokenKey => "token keys",
            CredentialKind::Key => "key pairs",
        }
    }

    /// Whether the caller's roles alone let it fetch this kind.
    fn role_allows(self, caller: &Identity) -> bool {
        match self {
            CredentialKind::Proxy | CredentialKind::AccessToken | CredentialKind::Key => {
                caller.may_dispatch()
            }
            CredentialKind::TokenKey => caller.production,
        }
    }

    fn role_rule(self) -> &'static str {
        match self {
            CredentialKind::TokenKey => "the production role",
            _ => "the production or pilot role",
        }
    }
}

/// Upstream's bare DN: without `/CN=limited proxy`, `/CN=proxy` and trailing numeric CNs,
/// so that every proxy of one certificate finds what was registered for it.
pub fn bare_dn(dn: &str) -> String {
    let mut dn = dn.replace("/CN=limited proxy", "").replace("/CN=proxy", "");
    while let Some(at) = dn.rfind("/CN=") {
        let tail = &dn[at + 4..];
        if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_digit()) {
            break;
        }
        dn.truncate(at);
    }
    dn
}

/// Why a credential was not handed out; the legacy wire answers each with its own status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The caller may not fetch this kind (upstream's `SC_Perms`).
    NotAllowed,
    /// Nothing registered under that name (`SC_ProxyError` / `SC_MissKey`).
    Missing,
    /// The token key given is not one of the client's current ones (`SC_Invalid`).
    InvalidTokenKey,
    /// This server cannot open credentials (no key, or another key sealed them).
    Unavailable,
}

/// A refused credential request: why, and a message that names no value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRefused {
    pub why: Refusal,
    pub message: String,
}

impl CredentialRefused {
    fn new(why: Refusal, message: impl Into<String>) -> CredentialRefused {
        CredentialRefused {
            why,
            message: message.into(),
        }
    }
}

/// A credential request's result: the value, a refusal, or a failure of the store.
pub type Fetched<T> = Result<Result<T, CredentialRefused>, ServiceError>;

/// The row context a registered credential is sealed to.
fn credential_context(kind: CredentialKind, name: &str, label: &str) -> String {
    format!("{}\u{0}{name}\u{0}{label}", kind.as_str())
}

fn secrets_context(owner: &str) -> String {
    format!("secrets\u{0}{owner}")
}

/// Seals and stores a credential an operator registers (`panda-server creds add`).
pub async fn register(
    store: &dyn CredentialStore,
    key: &CredentialKey,
    kind: CredentialKind,
    name: &str,
    label: &str,
    value: &[u8],
    expires: Option<NaiveDateTime>,
) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > 255 || label.len() > 255 {
        return Err(ServiceError::BadRequest(
            "a credential's name must have 1 to 255 bytes, its label at most 255".into(),
        ));
    }
    if value.is_empty() || value.len() > MAX_CREDENTIAL_BYTES {
        return Err(ServiceError::BadRequest(format!(
            "a credential must have 1 to {MAX_CREDENTIAL_BYTES} bytes, this one has {}",
            value.len()
        )));
    }
    let name = match kind {
        CredentialKind::Proxy => bare_dn(name),
        _ => name.to_string(),
    };
    let sealed = key
        .seal(&credential_context(kind, &name, label), value)
        .map_err(ServiceError::BadRequest)?;
    store
        .put_sealed_credential(&SealedCredential {
            kind: kind.as_str().into(),
            name,
            label: label.into(),
            sealed,
            key_id: key.id().into(),
            created: panda_core::time::now(),
            expires,
        })
        .await?;
    Ok(())
}

/// A random token key for a client: 32 bytes as 64 hex digits, and its id.
pub fn new_token_key() -> Result<(String, String), String> {
    let key = CredentialKey::generate()?;
    let id = key.id().to_string();
    Ok((key.to_hex(), id))
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes())
}

impl JobService {
    fn credential_key(&self) -> Result<&CredentialKey, CredentialRefused> {
        self.settings.credential_key.as_deref().ok_or_else(|| {
            CredentialRefused::new(
                Refusal::Unavailable,
                "this server keeps no credentials: no credential key is configured \
                 (credential_key_file)",
            )
        })
    }

    /// Whether `caller` may fetch `kind`: by role, or by upstream's `gridpref` letter.
    async fn may_fetch(
        &self,
        caller: &Identity,
        kind: CredentialKind,
    ) -> Result<Result<(), CredentialRefused>, ServiceError> {
        if caller.dn.is_none() || !caller.is_authenticated() {
            return Ok(Err(CredentialRefused::new(
                Refusal::NotAllowed,
                "credentials are handed out over HTTPS with a certificate or a token only",
            )));
        }
        if kind.role_allows(caller) {
            return Ok(Ok(()));
        }
        let name = crate::user_name(caller);
        let letters = self.stores.credentials.user_permissions(&name).await?;
        if letters.is_some_and(|l| l.contains(kind.permission_letter())) {
            return Ok(Ok(()));
        }
        Ok(Err(CredentialRefused::new(
            Refusal::NotAllowed,
            format!(
                "'{name}' may not fetch {}: that needs {} or '{}' in its users.gridpref",
                kind.noun(),
                kind.role_rule(),
                kind.permission_letter()
            ),
        )))
    }

    /// The opened value of a registered credential, `Missing` when none is registered or it
    /// expired.
    async fn open_credential(
        &self,
        kind: CredentialKind,
        name: &str,
        label: &str,
        what: &str,
    ) -> Fetched<String> {
        let key = match self.credential_key() {
            Ok(key) => key,
            Err(refused) => return Ok(Err(refused)),
        };
        let now = panda_core::time::now();
        let found = self
            .stores
            .credentials
            .sealed_credential(kind.as_str(), name, label)
            .await?
            .filter(|c| c.expires.is_none_or(|t| t > now));
        let Some(found) = found else {
            return Ok(Err(CredentialRefused::new(
                Refusal::Missing,
                format!("{what} not found"),
            )));
        };
        match key.open(&credential_context(kind, name, label), &found.sealed) {
            Ok(plain) => Ok(Ok(String::from_utf8_lossy(&plain).into_owned())),
            Err(why) => {
                tracing::error!(
                    kind = kind.as_str(),
                    name,
                    label,
                    "registered credential: {why}"
                );
                Ok(Err(CredentialRefused::new(
                    Refusal::Unavailable,
                    format!("{what} cannot be opened with this server's credential key"),
                )))
            }
        }
    }

    /// `getProxy` / `creds/get_proxy`: the proxy registered for `dn` (the caller's own DN
    /// when not given) with `role`.
    pub async fn fetch_proxy(
        &self,
        caller: &Identity,
        role: Option<&str>,
        dn: Option<&str>,
    ) -> Fetched<String> {
        let own = caller.dn.as_deref().map(bare_dn);
        let target = bare_dn(
            dn.filter(|d| !d.is_empty())
                .or(caller.dn.as_deref())
                .unwrap_or(""),
        );
        let role = role.unwrap_or("");
        // A caller's own proxy is its own; anyone else's needs the rule.
        let own_proxy = caller.is_authenticated() && own.as_deref() == Some(target.as_str());
        if !own_proxy {
            if let Err(refused) = self.may_fetch(caller, CredentialKind::Proxy).await? {
                return Ok(Err(refused));
            }
        }
        let what = match role {
            "" => format!("proxy for {target}"),
            role => format!("proxy for {target} with role {role}"),
        };
        self.open_credential(CredentialKind::Proxy, &target, role, &what)
            .await
    }

    /// `get_access_token` / `creds/get_access_token`: the access token registered for
    /// `client_name`. A client with token keys registered needs one of its current keys.
    pub async fn fetch_access_token(
        &self,
        caller: &Identity,
        client_name: &str,
        token_key: Option<&str>,
    ) -> Fetched<String> {
        if let Err(refused) = self.may_fetch(caller, CredentialKind::AccessToken).await? {
            return Ok(Err(refused));
        }
        let keys = match self.current_token_keys(client_name).await? {
            Ok(keys) => keys,
            Err(refused) => return Ok(Err(refused)),
        };
        if !keys.is_empty()
            && !token_key.is_some_and(|given| keys.iter().any(|k| same_secret(k, given)))
        {
            return Ok(Err(CredentialRefused::new(
                Refusal::InvalidTokenKey,
                format!("the token key is not valid for {client_name}"),
            )));
        }
        self.open_credential(
            CredentialKind::AccessToken,
            client_name,
            "",
            &format!("token for {client_name}"),
        )
        .await
    }

    /// The client's unexpired token keys, newest first, opened.
    async fn current_token_keys(&self, client_name: &str) -> Fetched<Vec<String>> {
        let now = panda_core::time::now();
        let rows: Vec<SealedCredential> = self
            .stores
            .credentials
            .sealed_credentials(Some(CredentialKind::TokenKey.as_str()), Some(client_name))
            .await?
            .into_iter()
            .filter(|c| c.expires.is_none_or(|t| t > now))
            .collect();
        if rows.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let key = match self.credential_key() {
            Ok(key) => key,
            Err(refused) => return Ok(Err(refused)),
        };
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let context = credential_context(CredentialKind::TokenKey, &row.name, &row.label);
            match key.open(&context, &row.sealed) {
                Ok(plain) => keys.push(String::from_utf8_lossy(&plain).into_owned()),
                Err(why) => tracing::error!(client_name, label = row.label, "token key: {why}"),
            }
        }
        Ok(Ok(keys))
    }

    /// `get_token_key` / `creds/get_token_key`: the newest current token key of a client.
    pub async fn fetch_token_key(&self, caller: &Identity, client_name: &str) -> Fetched<String> {
        if let Err(refused) = self.may_fetch(caller, CredentialKind::TokenKey).await? {
            return Ok(Err(refused));
        }
        match self.current_token_keys(client_name).await? {
            Ok(keys) => Ok(keys.into_iter().next().ok_or_else(|| {
                CredentialRefused::new(
                    Refusal::Missing,
                    format!("token key is missing for '{client_name}'"),
                )
            })),
            Err(refused) => Ok(Err(refused)),
        }
    }

    /// `getKeyPair` / `creds/get_key_pair`: two registered key files.
    pub async fn fetch_key_pair(
        &self,
        caller: &Identity,
        public_key_name: &str,
        private_key_name: &str,
    ) -> Fetched<(String, String)> {
        if let Err(refused) = self.may_fetch(caller, CredentialKind::Key).await? {
            return Ok(Err(refused));
        }
        let mut halves = Vec::with_capacity(2);
        for name in [public_key_name, private_key_name] {
            match self
                .open_credential(CredentialKind::Key, name, "", &format!("key {name}"))
                .await?
            {
                Ok(value) => halves.push(value),
                Err(refused) => return Ok(Err(refused)),
            }
        }
        let private = halves.pop().unwrap_or_default();
        let public = halves.pop().unwrap_or_default();
        Ok(Ok((public, private)))
    }

    /// The caller's secrets owner name, or why it has none.
    fn secrets_owner(caller: &Identity) -> Result<String, ServiceError> {
        match caller.dn.as_deref() {
            Some(dn) if caller.is_authenticated() => Ok(clean_user_id(dn)),
            _ => Err(ServiceError::Forbidden(
                "user secrets need a certificate or a token (no DN in the request)".into(),
            )),
        }
    }

    /// The caller's secrets, opened; only `keys` when given.
    pub async fn user_secrets(
        &self,
        caller: &Identity,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Json>, ServiceError> {
        let owner = JobService::secrets_owner(caller)?;
        let stored = self.stores.credentials.user_secrets(&owner).await?;
        let mut secrets = match stored {
            None => Map::new(),
            Some(document) => self.open_secrets(&owner, &document)?,
        };
        if let Some(keys) = keys.filter(|k| !k.is_empty()) {
            secrets.retain(|name, _| keys.contains(name));
        }
        Ok(secrets)
    }

    /// A stored secrets document as a map: sealed by this server, or upstream's plain JSON.
    pub(crate) fn open_secrets(
        &self,
        owner: &str,
        document: &str,
    ) -> Result<Map<String, Json>, ServiceError> {
        let sealed =
            document.starts_with(SEALED_PREFIX) && document.as_bytes().get(2) == Some(&b':');
        let text = if sealed {
            let key = self
                .credential_key()
                .map_err(|r| ServiceError::BadRequest(r.message))?;
            let plain = key.open(&secrets_context(owner), document).map_err(|why| {
                tracing::error!(owner, "user secrets: {why}");
                ServiceError::BadRequest(
                    "the stored secrets cannot be opened with this server's credential key".into(),
                )
            })?;
            String::from_utf8_lossy(&plain).into_owned()
        } else {
            document.to_string()
        };
        match serde_json::from_str::<Json>(&text) {
            Ok(Json::Object(map)) => Ok(map),
            _ => Err(ServiceError::BadRequest(
                "the stored secrets are not a JSON object".into(),
            )),
        }
    }

    /// Sets (`key` and `value`), deletes (`key` alone) or clears (neither) the caller's
    /// secrets, as upstream's `set_user_secret`. A deleted name also removes pbook's file form
    /// of it (`___file___:<name>`).
    pub async fn set_user_secret(
        &self,
        caller: &Identity,
        key: Option<&str>,
        value: Option<&str>,
    ) -> Result<(), ServiceError> {
        let owner = JobService::secrets_owner(caller)?;
        let sealer = self
            .credential_key()
            .map_err(|r| ServiceError::BadRequest(r.message))?
            .clone();
        if let Some(key) = key {
            if key.is_empty() || key.len() > MAX_SECRET_KEY_BYTES {
                return Err(ServiceError::BadRequest(format!(
                    "a secret's name must have 1 to {MAX_SECRET_KEY_BYTES} bytes"
                )));
            }
        }
        if let Some(value) = value {
            if value.len() > MAX_SECRET_VALUE_BYTES {
                return Err(ServiceError::BadRequest(format!(
                    "a secret's value may have at most {MAX_SECRET_VALUE_BYTES} bytes, this one has {}",
                    value.len()
                )));
            }
        }
        let mut failure: Option<ServiceError> = None;
        let context = secrets_context(&owner);
        let mut change = |stored: Option<&str>| -> Option<String> {
            let mut secrets = match stored {
                None => Map::new(),
                Some(document) => match self.open_secrets(&owner, document) {
                    Ok(map) => map,
                    Err(e) => {
                        failure = Some(e);
                        return None;
                    }
                },
            };
            match (key, value) {
                (None, _) => secrets.clear(),
                (Some(key), None) => {
                    if secrets.remove(key).is_none() {
                        secrets.remove(&format!("___file___:{key}"));
                    }
                }
                (Some(key), Some(value)) => {
                    secrets.insert(key.to_string(), Json::String(value.to_string()));
                }
            }
            let total: usize = secrets
                .iter()
                .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                .sum();
            if secrets.len() > MAX_SECRETS || total > MAX_SECRETS_BYTES {
                failure = Some(ServiceError::BadRequest(format!(
                    "a user keeps at most {MAX_SECRETS} secrets of {MAX_SECRETS_BYTES} bytes in all"
                )));
                return None;
            }
            let plain = Json::Object(secrets).to_string();
            match sealer.seal(&context, plain.as_bytes()) {
                Ok(sealed) => Some(sealed),
                Err(why) => {
                    failure = Some(ServiceError::BadRequest(why));
                    None
                }
            }
        };
        let written = self
            .stores
            .credentials
            .change_user_secrets(&owner, &mut change)
            .await?;
        match (written, failure) {
            (_, Some(e)) => Err(e),
            (true, None) => Ok(()),
            (false, None) => Err(ServiceError::BadRequest(
                "the secrets were not written".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CredentialKey {
        CredentialKey::from_hex(&"ab".repeat(32)).expect("key")
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_and_row_only() {
        let key = key();
        let sealed = key.seal("proxy\0/CN=a\0", b"PEM").expect("seal");
        assert!(!sealed.contains("PEM"));
        assert_eq!(key.open("proxy\0/CN=a\0", &sealed).expect("open"), b"PEM");
        // Another row, another key, an altered byte: each refused, without the value.
        let moved = key.open("proxy\0/CN=b\0", &sealed).expect_err("moved");
        assert!(moved.contains("another row"), "{moved}");
        let other = CredentialKey::from_hex(&"cd".repeat(32)).expect("key");
        let wrong = other
            .open("proxy\0/CN=a\0", &sealed)
            .expect_err("other key");
        assert!(wrong.contains(key.id()), "{wrong}");
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(key.open("proxy\0/CN=a\0", &altered).is_err());
        // Two seals of one value differ (a fresh nonce each time).
        assert_ne!(sealed, key.seal("proxy\0/CN=a\0", b"PEM").expect("seal"));
    }

    #[test]
    fn a_key_file_needs_64_hex_digits_and_debug_shows_only_the_id() {
        assert!(CredentialKey::from_hex("abc").is_err());
        assert!(CredentialKey::from_hex(&"zz".repeat(32)).is_err());
        let key = key();
        let shown = format!("{key:?}");
        assert!(
            !shown.contains(&key.to_hex()) && shown.contains(key.id()),
            "{shown}"
        );
        assert_eq!(
            CredentialKey::from_hex(&key.to_hex()).expect("again").id(),
            key.id()
        );
    }

    #[test]
    fn bare_dns_drop_proxy_and_numeric_cns() {
        assert_eq!(
            bare_dn("/DC=ch/DC=cern/CN=Anna Bell/CN=proxy/CN=proxy"),
            "/DC=ch/DC=cern/CN=Anna Bell"
        );
        assert_eq!(bare_dn("/DC=ch/CN=Anna/CN=123/CN=4567"), "/DC=ch/CN=Anna");
        assert_eq!(bare_dn("/DC=ch/CN=Anna/CN=limited proxy"), "/DC=ch/CN=Anna");
        assert_eq!(bare_dn("atlpilo2"), "atlpilo2");
    }

    #[test]
    fn who_may_fetch_what_by_role() {
        let mut user = Identity::anonymous();
        user.method = panda_core::identity::AuthMethod::Certificate;
        user.dn = Some("/CN=user".into());
        let mut pilot = user.clone();
        pilot.pilot_role = true;
        let mut production = user.clone();
        production.production = true;
        for kind in [
            CredentialKind::Proxy,
            CredentialKind::AccessToken,
            CredentialKind::Key,
        ] {
            assert!(!kind.role_allows(&user) && kind.role_allows(&pilot));
            assert!(kind.role_allows(&production));
        }
        assert!(!CredentialKind::TokenKey.role_allows(&pilot));
        assert!(CredentialKind::TokenKey.role_allows(&production));
    }
}
