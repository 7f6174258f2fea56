//! The PostgreSQL backend. Every connection starts with `search_path` set to the PanDA
//! schema (`schemaPANDA`) and, where upstream keeps tables apart, the META and archive schemas
//! after it, so statements name tables without a schema prefix, exactly as on SQLite.
//!
//! Every connection also limits how long it may sit idle inside a transaction
//! ([`IDLE_IN_TRANSACTION_TIMEOUT_MS`]): this server never waits on anything but the database
//! between the statements of a transaction, so a transaction left idle that long belongs to a
//! node that hangs or lost its network, and PostgreSQL ends it, releasing the rows it locked
//! for the other nodes. The hung node's own request then fails, and its client sends it again.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use panda_core::{ColumnType, Value};
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{Column, ConnectOptions, Executor, Row, TypeInfo};

use crate::bind::bind_all;
use crate::config::DbConfig;
use crate::driver::{Dialect, Driver, Tx, TxMode};
use crate::error::{Result, StoreError};
use crate::pg_pool::{PgConnectionPool, PooledConnection};

/// How long a connection may be idle inside a transaction before PostgreSQL ends the
/// session (`idle_in_transaction_session_timeout`), in milliseconds.
pub const IDLE_IN_TRANSACTION_TIMEOUT_MS: u32 = 5000;

pub struct PostgresDriver {
    pool: Arc<PgConnectionPool>,
}

impl PostgresDriver {
    pub async fn connect(config: &DbConfig) -> Result<Self> {
        let mut options = PgConnectOptions::new()
            .host(&config.host)
            .port(config.port)
            .username(&config.user)
            .database(&config.name)
            .application_name(&config.application_name)
            .options([
                ("search_path", config.schemas().join(",")),
                (
                    "idle_in_transaction_session_timeout",
                    IDLE_IN_TRANSACTION_TIMEOUT_MS.to_string(),
                ),
            ]);
        if let Some(password) = &config.password {
            options = options.password(password);
        }
        let target = format!(
            "PostgreSQL database {} at {}:{} as {}",
            config.name, config.host, config.port, config.user
        );
        // One connection at start, so that a server that cannot reach its database says why
        // (refused, unknown host, authentication failed) before it serves anything.
        let describe = |e: &dyn std::fmt::Display| {
            StoreError::Unavailable(format!("cannot connect to {target}: {e}"))
        };
        let first = tokio::time::timeout(config.connect_timeout, options.connect())
            .await
            .map_err(|_| describe(&"timed out"))?
            .map_err(|e| describe(&e))?;
        let pool = PgConnectionPool::new(options, config.pool_size, config.connect_timeout, target);
        pool.adopt(first);
        Ok(PostgresDriver { pool })
    }
}

#[async_trait]
impl Driver for PostgresDriver {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn begin(&self, mode: TxMode) -> Result<Box<dyn Tx>> {
        let mut tx = PgTx {
            conn: self.pool.acquire().await?,
        };
        // At READ COMMITTED every statement takes its own snapshot, in a transaction or not,
        // so reads run in autocommit: a BEGIN/COMMIT pair would only add two round trips.
        if mode == TxMode::Write {
            tx.simple("BEGIN").await?;
            tx.conn.in_transaction = true;
        }
        Ok(Box::new(tx))
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn pool_stats(&self) -> (u32, u32, u32) {
        self.pool.stats()
    }
}

struct PgTx {
    conn: PooledConnection,
}

impl PgTx {
    /// Runs a statement without parameters, unprepared.
    async fn simple(&mut self, sql: &str) -> Result<()> {
        self.conn.busy = true;
        let result = self.conn.connection()?.execute(sql).await;
        self.conn.busy = still_in_doubt(&result);
        result?;
        Ok(())
    }
}

#[async_trait]
impl Tx for PgTx {
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        self.conn.busy = true;
        let result = bind_all(sqlx::query(sql), params)
            .execute(self.conn.connection()?)
            .await;
        // Not reached when the caller gave up half-way: the connection then stays busy and
        // is closed rather than reused.
        self.conn.busy = still_in_doubt(&result);
        Ok(result?.rows_affected())
    }

    async fn fetch(
        &mut self,
        sql: &str,
        params: &[Value],
        columns: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>> {
        self.conn.busy = true;
        let result = bind_all(sqlx::query(sql), params)
            .fetch_all(self.conn.connection()?)
            .await;
        self.conn.busy = still_in_doubt(&result);
        result?.iter().map(|row| decode_row(row, columns)).collect()
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        if self.conn.in_transaction {
            self.simple("COMMIT").await?;
            self.conn.in_transaction = false;
        }
        Ok(())
    }
}

/// Whether a statement's outcome leaves the connection in doubt: anything but success or an
/// error the database reported for the statement alone: a broken socket, a protocol error, or
/// a FATAL error, with which the server ends the session (a terminated backend, a shutdown).
/// Such a connection is closed when given back rather than handed to the next request.
fn still_in_doubt<T>(result: &std::result::Result<T, sqlx::Error>) -> bool {
    match result {
        Ok(_) => false,
        Err(sqlx::Error::Database(e)) => e
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_none_or(|e| {
                matches!(
                    e.severity(),
                    sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
                )
            }),
        Err(_) => true,
    }
}

/// PostgreSQL checks integer widths strictly, and upstream's tables use smallint, integer
/// and bigint for the same attribute in different tables (jobsdefined4 vs jobsactive4), so
/// integers are read at the width the server reports and widened.
fn decode_row(row: &PgRow, columns: &[ColumnType]) -> Result<Vec<Value>> {
    columns
        .iter()
        .enumerate()
        .map(|(i, ty)| decode_column(row, i, *ty))
        .collect()
}

fn decode_column(row: &PgRow, i: usize, ty: ColumnType) -> Result<Value> {
    let db_type = row
        .columns()
        .get(i)
        .map(|c| c.type_info().name())
        .unwrap_or_default();
    let value = match db_type {
        "INT2" => Value::Int(row.try_get::<Option<i16>, _>(i)?.map(i64::from)),
        "INT4" => Value::Int(row.try_get::<Option<i32>, _>(i)?.map(i64::from)),
        "INT8" => Value::Int(row.try_get::<Option<i64>, _>(i)?),
        "FLOAT8" => Value::Float(row.try_get::<Option<f64>, _>(i)?),
        "FLOAT4" => Value::Float(row.try_get::<Option<f32>, _>(i)?.map(f64::from)),
        "TIMESTAMP" => Value::Time(row.try_get::<Option<NaiveDateTime>, _>(i)?),
        "TIMESTAMPTZ" => Value::Time(
            row.try_get::<Option<DateTime<Utc>>, _>(i)?
                .map(|t| t.naive_utc()),
        ),
        "TEXT" | "VARCHAR" | "BPCHAR" | "CHAR" | "NAME" => {
            Value::Text(row.try_get::<Option<String>, _>(i)?)
        }
        other => {
            return Err(StoreError::Corrupt(format!(
                "column {i} has type {other}, expected {ty:?}"
            )))
        }
    };
    Ok(coerce(value, ty))
}

/// Converts a value read at the database's type to the attribute's type.
fn coerce(value: Value, ty: ColumnType) -> Value {
    match (value, ty) {
        (Value::Float(v), ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt) => {
            Value::Int(v.map(|f| f as i64))
        }
        (Value::Int(v), ColumnType::Decimal(..)) => Value::Float(v.map(|i| i as f64)),
        (v, _) => v,
    }
}
