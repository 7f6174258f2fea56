//! The job store: upstream PanDA's tables on embedded SQLite or on PostgreSQL, behind one
//! interface.
//!
//! Policy:
//! - Table and column names are upstream's (panda-database, PostgreSQL schema 0.1.6), so the
//!   server runs on a database that upstream's scripts created, and upstream's tools can read
//!   ours. Statements always name their columns: extra columns, indexes and partitions that
//!   upstream has are tolerated.
//! - A job lives in one of three tables by status; moving it is a DELETE and an INSERT in one
//!   transaction.
//! - The database is the only shared state: nothing here caches data another node could change.

mod bind;
mod cache_files;
mod catalog;
pub mod config;
mod credentials;
mod daemon_support;
pub mod ddl;
mod dispatch;
pub mod driver;
pub mod error;
mod events;
mod group_commit;
mod harvester;
mod jedi;
mod jobs;
mod lookups;
mod maintenance;
mod monitor;
mod operator;
mod pg_pool;
pub mod ports;
mod postgres;
mod preload;
mod queues;
mod retry_rules;
mod row;
pub mod schema;
mod side;
mod sqlite;
mod tasks;
#[doc(hidden)]
pub mod testing;
mod users;
mod workflows;

use std::path::Path;
use std::sync::Arc;

use panda_core::ColumnType;

pub use catalog::{CatalogDataset, CatalogFile};
pub use config::{Backend, DbConfig};
pub use credentials::{SealedCredential, SecretsChange};
pub use daemon_support::OutputReport;
pub use dispatch::{ClaimRequest, Claimed, LabelFilter};
pub use driver::{Dialect, Driver, Tx, TxMode};
pub use error::{Result, StoreError};
pub use events::{
    AcquiredRange, ConsumerEnd, NewEventRanges, RangeAnswer, RangeReport, RangeReportOutcome,
    RangeStatus, ZipFile,
};
pub use group_commit::GroupCommitStats;
pub use harvester::{
    ColumnValue, HarvesterCommand, JobStatRow, WorkerNode, WorkerStat, WorkerUpdate,
};
pub use jedi::{
    same_site_dataset, DatasetFile, DatasetFiles, FileClaim, FileCounts, FileOutcome, FileResult,
    HeldLibrary, NewDataset, OutputTemplate, RefinedTask, TaskLayout, INPUT_TYPES,
};
pub use jobs::{Decision, JobSql};
pub use lookups::{GlobalShare, JobBrief, ResourceType};
pub use maintenance::{TableMaintenance, MAINTAINED_TABLES};
pub use monitor::{
    DisplayRows, ErrorGroup, HourCount, HourlyScope, JobListing, JobPage, OneOf, SiteStateCount,
    TaskListing, TaskPageRows, WORKER_FILTERS,
};
pub use operator::{JobFilter, JobLine, Lease, StatusLogEntry};
pub use postgres::IDLE_IN_TRANSACTION_TIMEOUT_MS;
pub use retry_rules::RetryRule;
pub use schema::{MigrationReport, SchemaVersion, EXTENSION_VERSION, SCHEMA_VERSION};
pub use side::SideWrite;
pub use tasks::TaskCriterion;
pub use users::{JobsetRequest, UserJobIds};
pub use workflows::WorkflowRow;

/// Behaviour switches of the store, from the server's configuration.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Upstream's `record_statuschange`: write a `jobs_statuslog` row on each status change.
    pub record_status_change: bool,
    /// This node's name, written as `modificationHost` in the status log.
    pub host_name: String,
    /// Group commit (`group_commit`, on by default): on PostgreSQL, concurrent event-range
    /// takes and reports are applied together, one statement and one commit per batch
    /// (see `group_commit`).
    pub group_commit: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            record_status_change: true,
            host_name: "localhost".into(),
            group_commit: true,
        }
    }
}

/// A handle on the database; cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    driver: Box<dyn Driver>,
    layout: ddl::Layout,
    sql: JobSql,
    options: StoreOptions,
    /// The group committers, when group commit is on (PostgreSQL only).
    groups: Option<events::EventGroups>,
}

impl Store {
    /// Connects to the configured database. Fails with [`StoreError::Unavailable`] when it
    /// cannot be reached; does not check or change the schema.
    pub async fn open(config: &DbConfig, options: StoreOptions) -> Result<Store> {
        config.validate()?;
        let driver: Box<dyn Driver> = match config.backend {
            Backend::Sqlite => Box::new(
                sqlite::SqliteDriver::open(Path::new(&config.name), config.pool_size).await?,
            ),
            Backend::Postgres => Box::new(postgres::PostgresDriver::connect(config).await?),
        };
        let sql = JobSql::new(driver.dialect());
        let grouped = options.group_commit && driver.dialect() == Dialect::Postgres;
        // Statements applied at once by each group committer: a quarter of the pool (half
        // for both), so that other requests always find a connection. Measured against half
        // each: 2,953 and 3,249 calls/s against 2,715 and 2,693 (BENCHMARKS.md).
        let workers = (config.pool_size as usize / 4).max(1);
        let layout = ddl::Layout::new(driver.dialect(), config);
        Ok(Store {
            inner: Arc::new_cyclic(|store| Inner {
                groups: grouped.then(|| events::EventGroups::start(store, workers)),
                driver,
                layout,
                sql,
                options,
            }),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.driver.dialect()
    }

    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    pub(crate) fn sql(&self) -> &JobSql {
        &self.inner.sql
    }

    pub async fn begin(&self, mode: TxMode) -> Result<Box<dyn Tx>> {
        self.inner.driver.begin(mode).await
    }

    /// Closes the connection pool.
    pub async fn close(&self) {
        self.inner.driver.close().await;
    }

    /// What the group committers have done so far (none when group commit is off).
    pub fn group_commit_stats(&self) -> Vec<GroupCommitStats> {
        self.inner
            .groups
            .as_ref()
            .map(events::EventGroups::stats)
            .unwrap_or_default()
    }

    /// Connection pool use: (open, idle, maximum).
    pub fn pool_stats(&self) -> (u32, u32, u32) {
        self.inner.driver.pool_stats()
    }

    /// A round trip to the database, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        self.query("SELECT 1", &[], &[ColumnType::BigInt]).await?;
        Ok(())
    }

    /// One read statement in a read transaction of its own: its rows, each read as `columns`.
    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[panda_core::Value],
        columns: &[ColumnType],
    ) -> Result<Vec<Vec<panda_core::Value>>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let rows = tx.fetch(sql, params, columns).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The database's schema version, `None` when it has none.
    pub async fn schema_version(&self) -> Result<Option<SchemaVersion>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let version =
            schema::read_version(tx.as_mut(), self.dialect(), schema::SCHEMA_COMPONENT).await?;
        tx.commit().await?;
        Ok(version)
    }

    /// The start-up check: Ok when the database holds exactly the supported version, with
    /// this server's own steps on top ([`schema::EXTENSIONS`]).
    pub async fn check_schema(&self) -> Result<SchemaVersion> {
        let version = schema::check_version(self.schema_version().await?)?;
        let mut tx = self.begin(TxMode::Read).await?;
        let level =
            schema::read_version(tx.as_mut(), self.dialect(), schema::EXTENSION_COMPONENT).await?;
        tx.commit().await?;
        schema::check_extensions(level)?;
        Ok(version)
    }

    /// The tables, indexes and sequences the pending migration steps would create that the
    /// database lacks ("index jobsactive4_dispatch_idx"): what `schema migrate` would add, for
    /// instance to a database upstream's scripts made.
    pub async fn missing_objects(&self) -> Result<Vec<String>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let missing = schema::missing_objects(tx.as_mut(), &self.inner.layout).await?;
        tx.commit().await?;
        Ok(missing)
    }

    /// Brings the database to [`SCHEMA_VERSION`]. Idempotent and safe to run concurrently.
    pub async fn migrate(&self) -> Result<MigrationReport> {
        self.migrate_to(SCHEMA_VERSION).await
    }

    /// Applies migration steps up to and including `target` (for operators and tests that
    /// need an older layout).
    pub async fn migrate_to(&self, target: SchemaVersion) -> Result<MigrationReport> {
        let mut tx = self.begin(TxMode::Write).await?;
        let report = schema::migrate_in(tx.as_mut(), &self.inner.layout, target).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Overwrites the version row. Only for tests that fake a newer or older database.
    #[doc(hidden)]
    pub async fn force_schema_version(&self, version: SchemaVersion) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        schema::write_version(tx.as_mut(), schema::SCHEMA_COMPONENT, version).await?;
        tx.commit().await
    }
}
