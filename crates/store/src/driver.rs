//! The one interface both database backends implement: begin a transaction, run statements
//! with typed parameters, read typed rows. Everything above it (jobs, schema, migrations) is
//! written once against this interface, with the few dialect differences in [`Dialect`].
//!
//! Statements use `$1`, `$2`, ... placeholders on both backends.

use async_trait::async_trait;
use panda_core::{ColumnType, Value};

use crate::error::Result;

/// The SQL dialect of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The clause that locks the rows a SELECT reads until the transaction ends: ` FOR UPDATE`
    /// on PostgreSQL; nothing on SQLite, whose write transactions lock the whole database.
    pub fn row_lock(self) -> &'static str {
        match self {
            Dialect::Postgres => " FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    /// A select-list expression that reads a decimal column as a double on this backend.
    pub fn read_decimal(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("CAST({column} AS REAL)"),
            Dialect::Postgres => format!("CAST({column} AS DOUBLE PRECISION)"),
        }
    }

    /// A select-list expression that reads a JSON column as text.
    pub fn read_json(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => column.to_string(),
            Dialect::Postgres => format!("CAST({column} AS TEXT)"),
        }
    }

    /// A select-list expression for a column of the given type.
    pub fn read_column(self, column: &str, column_type: ColumnType) -> String {
        match column_type {
            ColumnType::Decimal(..) => self.read_decimal(column),
            _ => column.to_string(),
        }
    }

    /// The SQL type of a column on this backend.
    pub fn column_type(self, column_type: ColumnType) -> String {
        match (self, column_type) {
            (Dialect::Postgres, ColumnType::SmallInt) => "SMALLINT".into(),
            (Dialect::Postgres, ColumnType::Int) => "INTEGER".into(),
            (Dialect::Postgres, ColumnType::BigInt) => "BIGINT".into(),
            (Dialect::Postgres, ColumnType::Decimal(p, s)) => format!("NUMERIC({p},{s})"),
            (Dialect::Postgres, ColumnType::VarChar(n)) => format!("VARCHAR({n})"),
            (Dialect::Postgres, ColumnType::Char(n)) => format!("CHAR({n})"),
            (Dialect::Postgres, ColumnType::Timestamp) => "TIMESTAMP".into(),
            (Dialect::Postgres, ColumnType::Text) => "TEXT".into(),
            // SQLite keeps the declared names for readers; affinity does the rest.
            (Dialect::Sqlite, ColumnType::SmallInt | ColumnType::Int | ColumnType::BigInt) => {
                "INTEGER".into()
            }
            (Dialect::Sqlite, ColumnType::Decimal(p, s)) => format!("NUMERIC({p},{s})"),
            (Dialect::Sqlite, ColumnType::VarChar(n)) => format!("VARCHAR({n})"),
            (Dialect::Sqlite, ColumnType::Char(n)) => format!("CHAR({n})"),
            (Dialect::Sqlite, ColumnType::Timestamp) => "TIMESTAMP".into(),
            (Dialect::Sqlite, ColumnType::Text) => "TEXT".into(),
        }
    }
}

/// Whether a transaction will write. SQLite takes its write lock up front for writers, so two
/// writers never deadlock upgrading a read lock; readers do not block each other. On
/// PostgreSQL a read runs its statements in autocommit (at READ COMMITTED each statement has
/// its own snapshot either way), which saves the BEGIN and COMMIT round trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    Read,
    Write,
    /// Each statement commits on its own on PostgreSQL: for callers whose every write is a
    /// single statement, atomic by itself. A write transaction on SQLite.
    Autocommit,
}

/// A database backend.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    fn dialect(&self) -> Dialect;
    async fn begin(&self, mode: TxMode) -> Result<Box<dyn Tx>>;
    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);
    /// Connections: (open, idle, maximum).
    fn pool_stats(&self) -> (u32, u32, u32);
}

/// An open transaction. Dropping it without `commit` rolls it back.
#[async_trait]
pub trait Tx: Send {
    /// Runs one statement; returns the number of rows it affected.
    async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs one query and reads each row as values of the given column types.
    async fn fetch(
        &mut self,
        sql: &str,
        params: &[Value],
        columns: &[ColumnType],
    ) -> Result<Vec<Vec<Value>>>;
    async fn commit(self: Box<Self>) -> Result<()>;
}
