//! The embedded SQLite backend: one database file, write-ahead logging, writers serialized
//! by `BEGIN IMMEDIATE` with a generous busy timeout so several processes (web tier and
//! daemon) can share the file.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use panda_core::{ColumnType, Value};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::bind::bind_all;
use crate::driver::{Dialect, Driver, Tx, TxMode};
use crate::error::{Result, StoreError};

pub struct SqliteDriver {
    pool: SqlitePool,
}

impl SqliteDriver {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path, pool_size: u32) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        // No ping before handing out a connection: an embedded database does not drop
        // connections, and the ping is a round trip to the connection's thread per request.
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot open SQLite database {}: {e}",
                    path.display()
                ))
            })?;
        Ok(SqliteDriver { pool })
    }
}

#[async_trait]
impl Driver for SqliteDriver {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn begin(&self, mode: TxMode) -> Result<Box<dyn Tx>> {
        let tx = match mode {
            TxMode::Read => self.pool.begin().await?,
            TxMode::Write | TxMode::Autocommit => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        };
        Ok(Box::new(SqliteTx { tx }))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn pool_stats(&self) -> (u32, u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (
            self.pool.size(),
            idle,
            self.pool.options().get_max_connections(),
        )
    }
}

struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl Tx for SqliteTx {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let done = bind_all(sqlx::query(sql), params)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected())
    }

    async fn fetch(
        &mut self,
        sql: &str,
        params: &[Value],
        columns: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>> {
        let rows = bind_all(sqlx::query(sql), params)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(|row| decode_row(row, columns)).collect()
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        Ok(self.tx.commit().await?)
    }
}

/// SQLite stores values, not column types, so each column is read as the type asked for.
fn decode_row(row: &SqliteRow, columns: &[ColumnType]) -> Result<Vec<Value>> {
    columns
        .iter()
        .enumerate()
        .map(|(i, ty)| {
            let value = match ty {
                ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt => {
                    Value::Int(row.try_get_unchecked::<Option<i64>, _>(i)?)
                }
                ColumnType::Decimal(..) => {
                    Value::Float(row.try_get_unchecked::<Option<f64>, _>(i)?)
                }
                ColumnType::Timestamp => {
                    Value::Time(row.try_get_unchecked::<Option<NaiveDateTime>, _>(i)?)
                }
                ColumnType::VarChar(_) | ColumnType::Char(_) | ColumnType::Text => {
                    Value::Text(row.try_get_unchecked::<Option<String>, _>(i)?)
                }
            };
            Ok(value)
        })
        .collect()
}
