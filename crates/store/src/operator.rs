//! Reads for the operator's command line (`panda-server jobs`, `panda-server status`): jobs by
//! status, site and task across the three job tables, one job's status log, and the daemon's
//! cluster-wide leases. Nothing here writes; every list is bounded by the caller's limit.

use chrono::NaiveDateTime;
use panda_core::{ColumnType, JobTable, Value};

use crate::driver::{Tx, TxMode};
use crate::error::Result;
use crate::row::Columns;
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
        static LINE: Columns = Columns(&[
            ("pandaid", ColumnType::BigInt),
            ("jobstatus", ColumnType::Text),
            ("computingsite", ColumnType::Text),
            ("jeditaskid", ColumnType::BigInt),
            ("prodsourcelabel", ColumnType::Text),
            ("modificationtime", ColumnType::Timestamp),
        ]);
        let types = LINE.types();
        let mut jobs = Vec::new();
        let mut tx = self.begin(TxMode::Read).await?;
        for table in JobTable::ALL {
            let sql = format!(
                "SELECT {} FROM {}{clause} ORDER BY modificationtime DESC, pandaid DESC LIMIT {}",
                LINE.select_list(""),
                table.name(),
                filter.limit
            );
            for row in tx.fetch(&sql, &params, &types).await? {
                let r = LINE.read(&row);
                jobs.push(JobLine {
                    panda_id: r.int("pandaid")?,
                    status: r.text("jobstatus")?,
                    site: r.text_or_empty("computingsite")?,
                    task_id: r.opt_int("jeditaskid")?,
                    label: r.text_or_empty("prodsourcelabel")?,
                    modification_time: r.opt_time("modificationtime")?,
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
        let mut tx = self.begin(TxMode::Read).await?;
        let log = job_status_log_in(tx.as_mut(), panda_id).await?;
        tx.commit().await?;
        Ok(log)
    }

    /// The daemon tasks' leases: which node ran each cluster-wide task last, and when.
    pub async fn daemon_leases(&self) -> Result<Vec<Lease>> {
        static LEASE: Columns = Columns(&[
            ("component", ColumnType::Text),
            ("lockedby", ColumnType::Text),
            ("lockedtime", ColumnType::Timestamp),
        ]);
        let sql = format!(
            "SELECT {} FROM jedi_process_lock WHERE vo = 'panda' AND prodsourcelabel = 'daemon' \
             ORDER BY component",
            LEASE.select_list("")
        );
        let rows = self.query(&sql, &[], &LEASE.types()).await?;
        rows.iter()
            .map(|row| {
                let r = LEASE.read(row);
                Ok(Lease {
                    task: r.text("component")?,
                    holder: r.text_or_empty("lockedby")?,
                    taken: r.opt_time("lockedtime")?,
                })
            })
            .collect()
    }
}

/// A job's status changes, oldest first, in `tx`.
pub(crate) async fn job_status_log_in(
    tx: &mut dyn Tx,
    panda_id: i64,
) -> Result<Vec<StatusLogEntry>> {
    static ENTRY: Columns = Columns(&[
        ("modificationtime", ColumnType::Timestamp),
        ("jobstatus", ColumnType::Text),
        ("computingsite", ColumnType::Text),
        ("modificationhost", ColumnType::Text),
    ]);
    let sql = format!(
        "SELECT {} FROM jobs_statuslog WHERE pandaid = $1 ORDER BY modificationtime, jobstatus",
        ENTRY.select_list("")
    );
    let rows = tx
        .fetch(&sql, &[Value::Int(Some(panda_id))], &ENTRY.types())
        .await?;
    rows.iter()
        .map(|row| {
            let r = ENTRY.read(row);
            Ok(StatusLogEntry {
                time: r.opt_time("modificationtime")?,
                status: r.text("jobstatus")?,
                site: r.text_or_empty("computingsite")?,
                host: r.text_or_empty("modificationhost")?,
            })
        })
        .collect()
}
