//! Users (upstream's `users` table): bans (`status`) and the credential permissions
//! (`gridpref` letters, as upstream).

use panda_core::{time, Value};

use crate::driver::TxMode;
use crate::error::{Result, StoreError};
use crate::jobs::next_ids;
use crate::Store;

impl Store {
    /// Names of banned users (`users.status = 'disabled'`).
    pub async fn banned_users(&self) -> Result<Vec<String>> {
        self.texts("SELECT name FROM users WHERE status = 'disabled'", &[])
            .await
    }

    /// Sets a user's status (`disabled` bans), creating the user row if needed.
    pub async fn set_user_status(&self, name: &str, status: Option<&str>) -> Result<()> {
        self.set_user_column(name, UserColumn::Status, status).await
    }

    /// The `gridpref` letters of a user who is not banned (several rows of one name: all
    /// their letters), `None` when there is no such user: what a credential request is
    /// allowed by.
    pub async fn user_permissions(&self, name: &str) -> Result<Option<String>> {
        self.gridpref(name, " AND (status IS NULL OR status <> 'disabled')")
            .await
    }

    /// The stored `gridpref` letters of a user, banned or not (what an operator changes).
    pub async fn user_gridpref(&self, name: &str) -> Result<Option<String>> {
        self.gridpref(name, "").await
    }

    async fn gridpref(&self, name: &str, condition: &str) -> Result<Option<String>> {
        let rows = self
            .query(
                &format!("SELECT gridpref FROM users WHERE name = $1{condition}"),
                &[Value::Text(Some(name.into()))],
                &[panda_core::ColumnType::Text],
            )
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .filter_map(|r| r.first().and_then(Value::as_str))
                .collect(),
        ))
    }

    /// Sets a user's `gridpref` letters, creating the user row if needed.
    pub async fn set_user_permissions(&self, name: &str, letters: Option<&str>) -> Result<()> {
        self.set_user_column(name, UserColumn::GridPref, letters)
            .await
    }

    async fn set_user_column(
        &self,
        name: &str,
        column: UserColumn,
        value: Option<&str>,
    ) -> Result<()> {
        let column = match column {
            UserColumn::Status => "status",
            UserColumn::GridPref => "gridpref",
        };
        let mut tx = self.begin(TxMode::Write).await?;
        let params = [
            Value::Text(Some(name.into())),
            Value::Text(value.map(str::to_string)),
        ];
        let updated = tx
            .execute(
                &format!("UPDATE users SET {column} = $2 WHERE name = $1"),
                &params,
            )
            .await?;
        if updated == 0 {
            let id = next_ids(tx.as_mut(), self.dialect(), "users_id_seq", 1)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("users_id_seq gave nothing".into()))?;
            let now = Value::Time(Some(time::now()));
            tx.execute(
                &format!(
                    "INSERT INTO users (id, name, {column}, lastmod, firstjob, latestjob, \
                     cachetime) VALUES ($1, $2, $3, $4, $4, $4, $4)"
                ),
                &[
                    Value::Int(Some(id)),
                    params[0].clone(),
                    params[1].clone(),
                    now,
                ],
            )
            .await?;
        }
        tx.commit().await
    }
}

/// The user columns an operator sets.
#[derive(Clone, Copy)]
enum UserColumn {
    Status,
    GridPref,
}
