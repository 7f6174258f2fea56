//! Keeping the planner's statistics and the job tables' dead rows in check where the database
//! does not do it itself.
//!
//! Every statement of the pilot path is a prepared statement whose plan PostgreSQL chooses
//! from the tables' statistics. A table that was never analyzed has none, and the planner
//! then guesses: on this project's test machine, whose PostgreSQL runs with `autovacuum =
//! off`, a heartbeat's lookup by PandaID was planned as a walk over the dispatch index, and a
//! pilot cycle cost ten times what it costs on an analyzed table. Dead row versions pile up
//! the same way: each claim leaves one at the head of the dispatch index, which the next
//! claims step over until a VACUUM removes it.
//!
//! Policy: when PostgreSQL's autovacuum is on, nothing is done (it is the better judge). When
//! it is off, the job tables get what autovacuum would have given them, with autovacuum's
//! default thresholds: `VACUUM (ANALYZE)` once dead rows exceed 50 + 20 % of the live ones,
//! `ANALYZE` once changes since the last analysis exceed 50 + 10 %. On SQLite, `PRAGMA
//! optimize`, which SQLite recommends running periodically, refreshes what needs it.

use panda_core::{ColumnType, Value};

use crate::bind::placeholders;
use crate::driver::{Dialect, TxMode};
use crate::error::Result;
use crate::Store;

/// The tables the pilot, submission and task-processing paths read and write all the time
/// (post-processing joins `jobsarchived4` with `jedi_dataset_contents`, and without
/// statistics PostgreSQL plans that join as if both were empty; each range a consumer takes
/// leaves a dead entry at the head of its jobset in `jedi_events`' key).
pub const MAINTAINED_TABLES: [&str; 12] = [
    "jobsdefined4",
    "jobsactive4",
    "jobsarchived4",
    "filestable4",
    "jobparamstable",
    "metatable",
    "job_output_report",
    "jobs_statuslog",
    "jedi_tasks",
    "jedi_datasets",
    "jedi_dataset_contents",
    "jedi_events",
];

/// What one maintenance pass did to one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMaintenance {
    pub table: String,
    /// `VACUUM (ANALYZE)`, `ANALYZE` or `PRAGMA optimize`.
    pub action: &'static str,
}

impl Store {
    /// Whether the database keeps its own statistics: PostgreSQL's `autovacuum` setting
    /// (SQLite has no such thing: always false).
    pub async fn autovacuum_on(&self) -> Result<bool> {
        if self.dialect() == Dialect::Sqlite {
            return Ok(false);
        }
        let setting = self
            .texts("SELECT current_setting('autovacuum')", &[])
            .await?;
        Ok(setting.first().is_some_and(|s| s == "on"))
    }

    /// One maintenance pass (see the module documentation); returns what it did.
    pub async fn maintain_tables(&self) -> Result<Vec<TableMaintenance>> {
        if self.dialect() == Dialect::Sqlite {
            let mut tx = self.begin(TxMode::Write).await?;
            tx.execute("PRAGMA optimize", &[]).await?;
            tx.commit().await?;
            return Ok(vec![TableMaintenance {
                table: "all".into(),
                action: "PRAGMA optimize",
            }]);
        }
        if self.autovacuum_on().await? {
            return Ok(Vec::new());
        }
        let names: Vec<Value> = MAINTAINED_TABLES
            .iter()
            .map(|t| Value::Text(Some((*t).into())))
            .collect();
        let list = placeholders(1, names.len());
        // VACUUM cannot run inside a transaction: everything here runs in autocommit.
        let mut tx = self.begin(TxMode::Autocommit).await?;
        let rows = tx
            .fetch(
                &format!(
                    "SELECT relname, n_live_tup, n_dead_tup, n_mod_since_analyze, \
                     CASE WHEN last_analyze IS NULL AND last_autoanalyze IS NULL THEN 1 ELSE 0 END \
                     FROM pg_stat_user_tables \
                     WHERE schemaname = current_schema() AND relname IN ({list}) \
                     ORDER BY relname"
                ),
                &names,
                &[
                    ColumnType::Text,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::Int,
                ],
            )
            .await?;
        let mut done = Vec::new();
        for row in rows {
            let [name, live, dead, changed, never_analyzed] = row.as_slice() else {
                continue;
            };
            let Some(table) = name.as_str().filter(|t| MAINTAINED_TABLES.contains(t)) else {
                continue;
            };
            let live = live.as_i64().unwrap_or(0) as f64;
            let dead = dead.as_i64().unwrap_or(0) as f64;
            let changed = changed.as_i64().unwrap_or(0) as f64;
            let never_analyzed = never_analyzed.as_i64() == Some(1);
            let action = if dead > 50.0 + 0.2 * live {
                "VACUUM (ANALYZE)"
            } else if changed > 50.0 + 0.1 * live || (never_analyzed && changed > 0.0) {
                "ANALYZE"
            } else {
                continue;
            };
            tx.execute(&format!("{action} {table}"), &[]).await?;
            done.push(TableMaintenance {
                table: table.to_string(),
                action,
            });
        }
        tx.commit().await?;
        Ok(done)
    }
}
