//! Store errors, split by what the caller should do about them.
//!
//! `Unavailable` means the database could not be reached or answered with a connection-level
//! failure: the legacy dispatcher answers 503, `/api/v1` a failed envelope (decision 0004),
//! and the daemon retries later. Everything else is a bug, a schema problem or a conflict with
//! a concurrent writer, and is reported as such.

use crate::schema::{SchemaVersion, EXTENSION_COMPONENT};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database schema is missing: no PanDA version row in pandadb_version (run `panda-server schema migrate`)")]
    SchemaMissing,
    #[error("database schema {found} is older than {required}, which this server requires (run `panda-server schema migrate`)")]
    SchemaTooOld {
        found: SchemaVersion,
        required: SchemaVersion,
    },
    #[error("database schema {found} is newer than {supported}, the newest this server supports; upgrade panda-server")]
    SchemaTooNew {
        found: SchemaVersion,
        supported: SchemaVersion,
    },
    #[error("database lacks this server's own tables: {EXTENSION_COMPONENT} is at {found}, this server requires {required} (run `panda-server schema migrate`)")]
    ExtensionsMissing {
        found: String,
        required: SchemaVersion,
    },
    #[error("database has this server's own tables at {found}, newer than {supported}, the newest this server supports; upgrade panda-server")]
    ExtensionsTooNew {
        found: SchemaVersion,
        supported: SchemaVersion,
    },
    #[error("job {0} not found")]
    JobNotFound(i64),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid data in the database: {0}")]
    Corrupt(String),
    #[error("invalid store configuration: {0}")]
    Config(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            other => StoreError::Database(other),
        }
    }
}

impl StoreError {
    /// True when retrying later may succeed (the web tier maps this to 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
