//! Reads for the operator's command line (`panda-server jobs`, `panda-server status`): jobs by
//! status, site and task across the three job tables, one job's status log, and the daemon's
//! cluster-wide leases. Nothing here writes; every list is bounded by the caller's limit.

use chrono::NaiveDateTime;
use panda_core::{ColumnType, JobTable, Value};

use crate::driver::TxMode;
use crate::error::Result;
use crate::Store;

/// Which jobs `jobs list` shows; `None` matches any.
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub status: Option<String>,
    pub site: Option<String>,
    pub task_id: Option<i64>,
    /// At most this many jobs, newest modification first.
    pub limit: usize,
}

/// One line of `jobs list`.
#[derive(Clone, Debug, PartialEq)]
pub struct JobLine {
    pub panda_id: i64,
    pub status: String,
    pub site: String,
    pub task_id: Option<i64>,
    pub label: String,
    pub modification_time: Option<NaiveDateTime>,
    pub table: JobTable,
}

/// One row of `jobs_statuslog`.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusLogEntry {
    pub time: Option<NaiveDateTime>,
    pub status: String,
    pub site: String,
    pub host: String,
}

/// A daemon task's lease in `jedi_process_lock`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lease {
    pub task: String,
    pub holder: String,
    pub taken: Option<NaiveDateTime>,
}

impl Store {
    /// Jobs matching `filter` from all three tables, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobLine>> {
        let mut conditions = Vec::new();
        let mut params = Vec::new();
        let mut bind = |condition: &str, value: Value| {
            params.push(value);
            conditions.push(format!("{condition} = ${}", params.len()));
        };
        if let Some(status) = &filter.status {
            bind("jobstatus", Value::Text(Some(status.clone())));
        }
        if let Some(site) = &filter.site {
            bind("computingsite", Value::Text(Some(site.clone())));
        }
        if let Some(task) = filter.task_id {
            bind("jeditaskid", Value::Int(Some(task)));
        }
        let clause = match conditions.is_empty() {
            true => String::new(),
            false => format!(" WHERE {}", conditions.join(" AND ")),
        };
        let types = [
            ColumnType::BigInt,
            ColumnType::Text,
            ColumnType::Text,
            ColumnType::BigInt,
            ColumnType::Text,
            ColumnType::Timestamp,
        ];
        let mut jobs = Vec::new();
        let mut tx = self.begin(TxMode::Read).await?;
        for table in JobTable::ALL {
            let sql = format!(
                "SELECT pandaid, jobstatus, computingsite, jeditaskid, prodsourcelabel, \
                 modificationtime FROM {}{clause} ORDER BY modificationtime DESC, pandaid DESC \
                 LIMIT {}",
                table.name(),
                filter.limit
            );
            for row in tx.fetch(&sql, &params, &types).await? {
                let Some(panda_id) = row[0].as_i64() else {
                    continue;
                };
                jobs.push(JobLine {
                    panda_id,
                    status: row[1].render(),
                    site: row[2].render(),
                    task_id: row[3].as_i64(),
                    label: row[4].render(),
                    modification_time: row[5].as_time(),
                    table,
                });
            }
        }
        tx.commit().await?;
        jobs.sort_by(|a, b| {
            (b.modification_time, b.panda_id).cmp(&(a.modification_time, a.panda_id))
        });
        jobs.truncate(filter.limit);
        Ok(jobs)
    }

    /// A job's status changes, oldest first (empty when `record_statuschange` is off).
    pub async fn job_status_log(&self, panda_id: i64) -> Result<Vec<StatusLogEntry>> {
        let rows = self
            .query(
                "SELECT modificationtime, jobstatus, computingsite, modificationhost \
                 FROM jobs_statuslog WHERE pandaid = $1 ORDER BY modificationtime, jobstatus",
                &[Value::Int(Some(panda_id))],
                &[
                    ColumnType::Timestamp,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::Text,
                ],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| StatusLogEntry {
                time: row[0].as_time(),
                status: row[1].render(),
                site: row[2].render(),
                host: row[3].render(),
            })
            .collect())
    }

    /// The daemon tasks' leases: which node ran each cluster-wide task last, and when.
    pub async fn daemon_leases(&self) -> Result<Vec<Lease>> {
        let rows = self
            .query(
                "SELECT component, lockedby, lockedtime FROM jedi_process_lock \
                 WHERE vo = 'panda' AND prodsourcelabel = 'daemon' ORDER BY component",
                &[],
                &[ColumnType::Text, ColumnType::Text, ColumnType::Timestamp],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| Lease {
                task: row[0].render(),
                holder: row[1].render(),
                taken: row[2].as_time(),
            })
            .collect())
    }
}
