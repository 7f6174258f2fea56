//! Users (upstream's `users` table): only what bans need.

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
        let mut tx = self.begin(TxMode::Write).await?;
        let params = [
            Value::Text(Some(name.into())),
            Value::Text(status.map(str::to_string)),
        ];
        let updated = tx
            .execute("UPDATE users SET status = $2 WHERE name = $1", &params)
            .await?;
        if updated == 0 {
            let id = next_ids(tx.as_mut(), self.dialect(), "users_id_seq", 1)
                .await?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("users_id_seq gave nothing".into()))?;
            let now = Value::Time(Some(time::now()));
            tx.execute(
                "INSERT INTO users (id, name, status, lastmod, firstjob, latestjob, cachetime) \
                 VALUES ($1, $2, $3, $4, $4, $4, $4)",
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
