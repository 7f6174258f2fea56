//! The credential tables: pbook's user secrets (upstream's `secrets`, one document per owner)
//! and the credentials operators register (`sealed_credentials`, ours). Values reach this layer
//! already sealed by the service (`panda-service`'s `credentials`): nothing here reads,
//! logs or returns a plaintext credential, and no error names a value.

use chrono::NaiveDateTime;
use panda_core::{time, ColumnType, Value};

use crate::driver::TxMode;
use crate::error::Result;
use crate::Store;

/// One registered credential, sealed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedCredential {
    /// `proxy`, `access_token`, `token_key` or `key`.
    pub kind: String,
    /// Whose or which: a bare DN, a client name, a key's name.
    pub name: String,
    /// A proxy's VOMS role, a token key's id; empty where the kind has none.
    pub label: String,
    /// The sealed value (`panda-service`'s format, naming its key).
    pub sealed: String,
    /// The key that sealed it (a fingerprint, not the key).
    pub key_id: String,
    pub created: NaiveDateTime,
    pub expires: Option<NaiveDateTime>,
}

const CREDENTIAL_COLUMNS: &str = "kind, name, label, sealed, key_id, created, expires";
const CREDENTIAL_TYPES: [ColumnType; 7] = [
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Text,
    ColumnType::Timestamp,
    ColumnType::Timestamp,
];

fn credential_of(row: &[Value]) -> Option<SealedCredential> {
    let text = |i: usize| row.get(i).and_then(Value::as_str).map(str::to_string);
    Some(SealedCredential {
        kind: text(0)?,
        name: text(1)?,
        label: text(2).unwrap_or_default(),
        sealed: text(3)?,
        key_id: text(4).unwrap_or_default(),
        created: row.get(5).and_then(Value::as_time)?,
        expires: row.get(6).and_then(Value::as_time),
    })
}

/// A change of one owner's secrets document: the stored document in (`None` when there is
/// none), the new one out, or `None` to leave the row as it was.
pub type SecretsChange<'a> = dyn FnMut(Option<&str>) -> Option<String> + Send + 'a;

impl Store {
    /// The secrets document of `owner` (`secrets.data`), if any.
    pub async fn user_secrets(&self, owner: &str) -> Result<Option<String>> {
        Ok(self
            .texts(
                "SELECT data FROM secrets WHERE owner = $1",
                &[Value::Text(Some(owner.into()))],
            )
            .await?
            .pop())
    }

    /// Changes the secrets document of `owner` under its row lock, so that two concurrent
    /// changes of one owner's secrets both hold. Returns whether a document was written.
    pub async fn change_user_secrets(
        &self,
        owner: &str,
        change: &mut SecretsChange<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin(TxMode::Write).await?;
        let owner_value = Value::Text(Some(owner.into()));
        let now = Value::Time(Some(time::now()));
        // The row first (as upstream), so that the lock below has something to hold.
        tx.execute(
            "INSERT INTO secrets (owner, updated_at) VALUES ($1, $2) ON CONFLICT (owner) DO NOTHING",
            &[owner_value.clone(), now.clone()],
        )
        .await?;
        let select = format!(
            "SELECT data FROM secrets WHERE owner = $1{}",
            self.dialect().row_lock()
        );
        let rows = tx
            .fetch(
                &select,
                std::slice::from_ref(&owner_value),
                &[ColumnType::Text],
            )
            .await?;
        let stored = rows.first().and_then(|r| r.first()).and_then(Value::as_str);
        let Some(document) = change(stored) else {
            // Dropped without commit: the placeholder row goes too.
            return Ok(false);
        };
        tx.execute(
            "UPDATE secrets SET data = $2, updated_at = $3 WHERE owner = $1",
            &[owner_value, Value::Text(Some(document)), now],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Stores a registered credential, replacing one of the same kind, name and label.
    pub async fn put_sealed_credential(&self, credential: &SealedCredential) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        let key = [
            Value::Text(Some(credential.kind.clone())),
            Value::Text(Some(credential.name.clone())),
            Value::Text(Some(credential.label.clone())),
        ];
        tx.execute(
            "DELETE FROM sealed_credentials WHERE kind = $1 AND name = $2 AND label = $3",
            &key,
        )
        .await?;
        let [kind, name, label] = key;
        tx.execute(
            &format!(
                "INSERT INTO sealed_credentials ({CREDENTIAL_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            &[
                kind,
                name,
                label,
                Value::Text(Some(credential.sealed.clone())),
                Value::Text(Some(credential.key_id.clone())),
                Value::Time(Some(credential.created)),
                Value::Time(credential.expires),
            ],
        )
        .await?;
        tx.commit().await
    }

    /// The registered credential of that kind, name and label, expired or not.
    pub async fn sealed_credential(
        &self,
        kind: &str,
        name: &str,
        label: &str,
    ) -> Result<Option<SealedCredential>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM sealed_credentials \
                     WHERE kind = $1 AND name = $2 AND label = $3"
                ),
                &[
                    Value::Text(Some(kind.into())),
                    Value::Text(Some(name.into())),
                    Value::Text(Some(label.into())),
                ],
                &CREDENTIAL_TYPES,
            )
            .await?;
        Ok(rows.first().and_then(|r| credential_of(r)))
    }

    /// The registered credentials of a kind (and a name, when given), newest first.
    pub async fn sealed_credentials(
        &self,
        kind: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<SealedCredential>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {CREDENTIAL_COLUMNS} FROM sealed_credentials \
                     WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR name = $2) \
                     ORDER BY created DESC, kind, name, label"
                ),
                &[
                    Value::Text(kind.map(str::to_string)),
                    Value::Text(name.map(str::to_string)),
                ],
                &CREDENTIAL_TYPES,
            )
            .await?;
        Ok(rows.iter().filter_map(|r| credential_of(r)).collect())
    }

    /// Removes a registered credential; whether there was one.
    pub async fn remove_sealed_credential(
        &self,
        kind: &str,
        name: &str,
        label: &str,
    ) -> Result<bool> {
        let mut tx = self.begin(TxMode::Write).await?;
        let removed = tx
            .execute(
                "DELETE FROM sealed_credentials WHERE kind = $1 AND name = $2 AND label = $3",
                &[
                    Value::Text(Some(kind.into())),
                    Value::Text(Some(name.into())),
                    Value::Text(Some(label.into())),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(removed > 0)
    }
}
