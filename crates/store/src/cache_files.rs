//! `usercacheusage`: the sandboxes users uploaded, by user, host, name, size and checksum,
//! read back when a user sends the same sandbox again (upstream's `insertSandboxFileInfo` and
//! `checkSandboxFile`).

use chrono::NaiveDateTime;
use panda_core::{time, ColumnType, Value};

use crate::driver::TxMode;
use crate::error::Result;
use crate::Store;

/// The host name upstream never offers for reuse.
const UNUSABLE_HOST: &str = "localhost.localdomain";

impl Store {
    /// Records an uploaded sandbox.
    pub async fn register_cache_file(
        &self,
        user: &str,
        host: &str,
        file_name: &str,
        size: i64,
        checksum: Option<&str>,
    ) -> Result<()> {
        let now = Value::Time(Some(time::now()));
        let mut tx = self.begin(TxMode::Write).await?;
        tx.execute(
            "INSERT INTO usercacheusage \
             (username, hostname, filename, filesize, checksum, creationtime, modificationtime) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
            &[
                Value::Text(Some(user.into())),
                Value::Text(Some(host.into())),
                Value::Text(Some(file_name.into())),
                Value::Int(Some(size)),
                Value::Text(checksum.map(str::to_string)),
                now,
            ],
        )
        .await?;
        tx.commit().await
    }

    /// The newest sandbox of `user` with this size and checksum registered since `since`:
    /// `(host, file name)`.
    pub async fn find_cache_file(
        &self,
        user: &str,
        size: i64,
        checksum: &str,
        since: NaiveDateTime,
    ) -> Result<Option<(String, String)>> {
        let rows = self
            .query(
                "SELECT hostname, filename FROM usercacheusage \
                 WHERE username = $1 AND filesize = $2 AND checksum = $3 AND hostname <> $4 \
                 AND creationtime > $5 ORDER BY creationtime DESC LIMIT 1",
                &[
                    Value::Text(Some(user.into())),
                    Value::Int(Some(size)),
                    Value::Text(Some(checksum.into())),
                    Value::Text(Some(UNUSABLE_HOST.into())),
                    Value::Time(Some(since)),
                ],
                &[ColumnType::Text, ColumnType::Text],
            )
            .await?;
        Ok(rows.into_iter().next().map(|mut row| {
            let name = row.pop().map(|v| v.render()).unwrap_or_default();
            let host = row.pop().map(|v| v.render()).unwrap_or_default();
            (host, name)
        }))
    }
}
