//! `panda-server creds`: the operator's side of the credential store. Operators register the
//! proxies, access tokens, token keys and key files that pilots and Harvester fetch; each is
//! sealed with the server's credential key before it reaches the database. Values are read
//! from a file or standard input and never printed; listings show names, labels, the sealing
//! key's fingerprint and the dates only.

use std::io::Read;
use std::path::Path;

use chrono::Duration;
use panda_service::credentials::{self, CredentialKind};
use panda_store::Store;

/// What `creds add` registers.
pub struct Registration<'a> {
    pub kind: CredentialKind,
    pub name: &'a str,
    pub label: &'a str,
    /// The value's file, `-` for standard input; `None` for a new random token key.
    pub file: Option<&'a Path>,
    pub valid_days: Option<i64>,
}

/// Reads a credential's value: a file, or standard input for `-`.
fn read_value(file: &Path) -> Result<Vec<u8>, String> {
    let mut value = Vec::new();
    let limit = credentials::MAX_CREDENTIAL_BYTES as u64 + 1;
    let read = if file == Path::new("-") {
        std::io::stdin().take(limit).read_to_end(&mut value)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut value))
    };
    read.map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(value)
}

/// Seals and stores one credential; the line to print.
pub async fn add(
    store: &Store,
    key: &credentials::CredentialKey,
    registration: Registration<'_>,
) -> Result<String, String> {
    let Registration {
        kind,
        name,
        label,
        file,
        valid_days,
    } = registration;
    let (value, label) = match (file, kind) {
        (Some(file), _) => (read_value(file)?, label.to_string()),
        (None, CredentialKind::TokenKey) => {
            // A new key for the client; its id is its label unless one was given.
            let (value, id) = credentials::new_token_key()?;
            let label = if label.is_empty() {
                id
            } else {
                label.to_string()
            };
            (value.into_bytes(), label)
        }
        (None, _) => return Err("--file is required (use - for standard input)".into()),
    };
    let expires = valid_days.map(|days| panda_core::time::now() + Duration::days(days));
    credentials::register(store, key, kind, name, &label, &value, expires)
        .await
        .map_err(|e| e.to_string())?;
    let until = expires.map_or_else(|| "no expiry".to_string(), |t| format!("until {t}"));
    Ok(format!(
        "registered {} {name}{} ({} bytes, sealed with key {}, {until})\n",
        kind.as_str(),
        if label.is_empty() {
            String::new()
        } else {
            format!(" [{label}]")
        },
        value.len(),
        key.id()
    ))
}

/// The registered credentials, without values.
pub async fn list(store: &Store, kind: Option<CredentialKind>) -> Result<String, String> {
    let rows = store
        .sealed_credentials(kind.map(CredentialKind::as_str), None)
        .await
        .map_err(|e| e.to_string())?;
    let now = panda_core::time::now();
    let mut out = String::new();
    for row in rows {
        let expiry = match row.expires {
            None => "-".to_string(),
            Some(t) if t <= now => format!("{t} (expired)"),
            Some(t) => t.to_string(),
        };
        out.push_str(&format!(
            "{}\t{}\t{}\tkey {}\t{}\t{expiry}\n",
            row.kind,
            row.name,
            if row.label.is_empty() {
                "-"
            } else {
                &row.label
            },
            row.key_id,
            row.created
        ));
    }
    Ok(out)
}
