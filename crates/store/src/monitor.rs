//! Reads behind the embedded monitor (`/jobs/`, `/tasks/`, `/dash/`, ...): bounded listings of
//! jobs, tasks, datasets and Harvester workers, counts of jobs by site and state, failed jobs
//! by error code, and finished jobs per hour for the plots.
//!
//! Policy: nothing here writes. Every listing carries a LIMIT; every filter is a bound value
//! against a column named by the caller from a fixed set (`JobAttr`, `TaskAttr`, the worker
//! columns below), never text from a request; every scan of the archive is bounded by a
//! modification-time window, which `jobsarchived4_modtime_idx` serves.

use chrono::NaiveDateTime;
use panda_core::jedi::DATASET_ATTRIBUTES;
use panda_core::job::ERROR_COMPONENTS;
use panda_core::{
    AttrSet, ColumnType, DatasetSpec, JobAttr, JobSpec, JobTable, Record, TaskAttr, TaskSpec, Value,
};

use crate::bind::placeholders;
use crate::driver::{Dialect, Tx, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::{job_select_list, job_types};
use crate::row::Columns;
use crate::Store;

/// A condition of a listing: the column equals one of the values (at least one).
#[derive(Clone, Debug, PartialEq)]
pub struct OneOf<A> {
    pub attr: A,
    pub values: Vec<Value>,
}

/// Which jobs a monitor listing shows.
#[derive(Clone, Debug, PartialEq)]
pub struct JobListing {
    pub conditions: Vec<OneOf<JobAttr>>,
    /// Only jobs modified at or after this time; `None` for any (a task's or a user's own
    /// jobs, found through their indexes).
    pub since: Option<NaiveDateTime>,
    /// The order: this column, newest or largest first when `descending`; ties by PandaID.
    pub order: JobAttr,
    pub descending: bool,
    pub limit: usize,
}

/// Which tasks a monitor listing shows.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskListing {
    pub conditions: Vec<OneOf<TaskAttr>>,
    /// `taskname LIKE` this pattern (`%` and `_` as SQL's), when given.
    pub name_like: Option<String>,
    pub since: Option<NaiveDateTime>,
    pub limit: usize,
}

/// Jobs of one site in one state (`/dash/`, `/sites/`).
#[derive(Clone, Debug, PartialEq)]
pub struct SiteStateCount {
    pub site: String,
    pub status: String,
    pub count: i64,
}

/// Failed jobs of one site with one combination of error codes (`/errors/`), with one of
/// their diagnostics per component.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorGroup {
    pub site: String,
    /// `(component, code, diagnostic)`: `pilot`, `exe`, `sup`, `ddm`, `brokerage`,
    /// `jobdispatcher`, `taskbuffer`; only the components whose code is set and not 0.
    pub codes: Vec<(&'static str, i64, String)>,
    pub count: i64,
}

/// Jobs that reached a final state in one hour.
#[derive(Clone, Debug, PartialEq)]
pub struct HourCount {
    pub hour: NaiveDateTime,
    pub status: String,
    pub count: i64,
}

/// Rows of a table read for display: column names and values, in column order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DisplayRows {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Value>>,
}

/// `/job/<pandaid>/`'s rows.
#[derive(Clone, Debug)]
pub struct JobPage {
    pub job: JobSpec,
    pub status_log: Vec<crate::operator::StatusLogEntry>,
    /// Its parent and the jobs retrying it.
    pub retries: Vec<i64>,
}

/// `/task/<id>/`'s rows.
#[derive(Clone, Debug)]
pub struct TaskPageRows {
    pub task: TaskSpec,
    pub datasets: Vec<DatasetSpec>,
    pub job_counts: Vec<(String, i64)>,
    /// (time, status, reason), oldest first.
    pub status_log: Vec<(Option<NaiveDateTime>, String, String)>,
    pub hourly: Vec<HourCount>,
}

/// Whose hourly counts a plot shows.
#[derive(Clone, Debug, PartialEq)]
pub enum HourlyScope {
    Site(String),
    Task(i64),
}

/// The columns of `harvester_workers` a monitor shows, in the table's order.
const WORKER_COLUMNS: Columns = Columns(&[
    ("harvesterid", ColumnType::Text),
    ("workerid", ColumnType::BigInt),
    ("lastupdate", ColumnType::Timestamp),
    ("status", ColumnType::Text),
    ("batchid", ColumnType::Text),
    ("nodeid", ColumnType::Text),
    ("queuename", ColumnType::Text),
    ("computingsite", ColumnType::Text),
    ("submittime", ColumnType::Timestamp),
    ("starttime", ColumnType::Timestamp),
    ("endtime", ColumnType::Timestamp),
    ("ncore", ColumnType::Int),
    ("errorcode", ColumnType::Int),
    ("resourcetype", ColumnType::Text),
    ("diagmessage", ColumnType::Text),
    ("computingelement", ColumnType::Text),
    ("njobs", ColumnType::Int),
    ("jobtype", ColumnType::Text),
    ("pilotstatus", ColumnType::Text),
]);

/// The worker columns a listing may filter on.
pub const WORKER_FILTERS: [&str; 4] = ["harvesterid", "computingsite", "status", "workerid"];

/// The column an attribute is stored in.
fn column<A: AttrSet>(attr: A) -> String {
    A::attributes()[attr.index()].column()
}

fn where_clause<A: AttrSet>(
    conditions: &[OneOf<A>],
    params: &mut Vec<Value>,
    clauses: &mut Vec<String>,
) {
    for condition in conditions {
        let first = params.len() + 1;
        params.extend(condition.values.iter().cloned());
        clauses.push(match condition.values.len() {
            1 => format!("{} = ${first}", column(condition.attr)),
            n => format!("{} IN ({})", column(condition.attr), placeholders(first, n)),
        });
    }
}

fn joined(clauses: &[String]) -> String {
    match clauses.is_empty() {
        true => String::new(),
        false => format!(" WHERE {}", clauses.join(" AND ")),
    }
}

/// A value's place in an order: NULLs first, then by type.
#[derive(Debug, PartialEq, PartialOrd)]
enum SortKey<'v> {
    Null,
    Number(f64),
    Time(NaiveDateTime),
    Text(&'v str),
}

fn sort_key(value: &Value) -> SortKey<'_> {
    match value {
        Value::Int(Some(i)) => SortKey::Number(*i as f64),
        Value::Float(Some(f)) => SortKey::Number(*f),
        Value::Time(Some(t)) => SortKey::Time(*t),
        Value::Text(Some(s)) => SortKey::Text(s),
        _ => SortKey::Null,
    }
}

impl Store {
    /// Jobs of a monitor listing from the three job tables (their rows only: no files,
    /// parameters or metadata), in the listing's order, at most `limit`.
    pub async fn monitor_jobs(&self, listing: &JobListing) -> Result<Vec<JobSpec>> {
        let mut params = Vec::new();
        let mut clauses = Vec::new();
        where_clause(&listing.conditions, &mut params, &mut clauses);
        if let Some(since) = listing.since {
            params.push(Value::Time(Some(since)));
            clauses.push(format!("modificationtime >= ${}", params.len()));
        }
        let order_column = column(listing.order);
        let direction = match listing.descending {
            true => "DESC",
            false => "ASC",
        };
        let select_list = job_select_list(self.dialect());
        let types = job_types();
        let mut jobs = Vec::new();
        let mut tx = self.begin(TxMode::Read).await?;
        for table in JobTable::ALL {
            let sql = format!(
                "SELECT {select_list} FROM {}{} ORDER BY {order_column} {direction}, \
                 pandaid {direction} LIMIT {}",
                table.name(),
                joined(&clauses),
                listing.limit
            );
            for row in tx.fetch(&sql, &params, &types).await? {
                let attrs = Record::from_values(row)
                    .ok_or_else(|| StoreError::Corrupt("job row has the wrong width".into()))?;
                jobs.push(JobSpec {
                    attrs,
                    files: Vec::new(),
                });
            }
        }
        tx.commit().await?;
        let order = listing.order;
        jobs.sort_by(|a, b| {
            let ka = (sort_key(a.get(order)), a.panda_id());
            let kb = (sort_key(b.get(order)), b.panda_id());
            let ordering = ka.partial_cmp(&kb).unwrap_or(std::cmp::Ordering::Equal);
            match listing.descending {
                true => ordering.reverse(),
                false => ordering,
            }
        });
        jobs.truncate(listing.limit);
        Ok(jobs)
    }

    /// This job's retries both ways: its parent, and the jobs of its task whose `parentid`
    /// is this job (a retry keeps its task; the `jeditaskid` index finds them). A job without
    /// a task has only its parent: finding its children would read the archive unindexed,
    /// and BigPanDA shows retries for a task's jobs only, too.
    async fn job_retries_in(&self, tx: &mut dyn Tx, job: &JobSpec) -> Result<Vec<i64>> {
        let panda_id = job.panda_id();
        let mut ids = Vec::new();
        if let Some(task) = job.get_i64(JobAttr::jediTaskID).filter(|t| *t > 0) {
            for table in JobTable::ALL {
                let rows = tx
                    .fetch(
                        &format!(
                            "SELECT pandaid FROM {} WHERE jeditaskid = $1 AND parentid = $2 \
                             ORDER BY pandaid LIMIT 100",
                            table.name()
                        ),
                        &[Value::Int(Some(task)), Value::Int(Some(panda_id))],
                        &[ColumnType::BigInt],
                    )
                    .await?;
                ids.extend(rows.iter().filter_map(|r| r[0].as_i64()));
            }
        }
        let parent = job.get_i64(JobAttr::parentID);
        ids.extend(parent.filter(|p| *p > 0 && *p != panda_id));
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// The metadata the pilots reported for the given jobs (`metatable`), by PandaID.
    pub async fn jobs_metadata(&self, panda_ids: &[i64]) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        let mut tx = self.begin(TxMode::Read).await?;
        for chunk in panda_ids.chunks(500) {
            let sql = format!(
                "SELECT pandaid, metadata FROM metatable WHERE pandaid IN ({})",
                placeholders(1, chunk.len())
            );
            let params: Vec<Value> = chunk.iter().map(|id| Value::Int(Some(*id))).collect();
            let rows = tx
                .fetch(&sql, &params, &[ColumnType::BigInt, ColumnType::Text])
                .await?;
            out.extend(
                rows.into_iter()
                    .filter_map(|r| Some((r[0].as_i64()?, r[1].as_str()?.to_string()))),
            );
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Jobs by site and state: every defined and active job, and archived jobs modified at
    /// or after `archived_since`.
    pub async fn site_state_counts(
        &self,
        archived_since: NaiveDateTime,
    ) -> Result<Vec<SiteStateCount>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let mut counts: Vec<SiteStateCount> = Vec::new();
        for table in JobTable::ALL {
            let (clause, params) = match table {
                JobTable::Archived => (
                    " WHERE modificationtime >= $1",
                    vec![Value::Time(Some(archived_since))],
                ),
                _ => ("", vec![]),
            };
            let rows = tx
                .fetch(
                    &format!(
                        "SELECT computingsite, jobstatus, COUNT(*) FROM {}{clause} \
                         GROUP BY computingsite, jobstatus",
                        table.name()
                    ),
                    &params,
                    &[ColumnType::Text, ColumnType::Text, ColumnType::BigInt],
                )
                .await?;
            for row in rows {
                let site = row[0].as_str().unwrap_or_default().to_string();
                let status = row[1].as_str().unwrap_or_default().to_string();
                let count = row[2].as_i64().unwrap_or_default();
                match counts
                    .iter_mut()
                    .find(|c| c.site == site && c.status == status)
                {
                    Some(c) => c.count += count,
                    None => counts.push(SiteStateCount {
                        site,
                        status,
                        count,
                    }),
                }
            }
        }
        tx.commit().await?;
        counts.sort_by(|a, b| (&a.site, &a.status).cmp(&(&b.site, &b.status)));
        Ok(counts)
    }

    /// Failed jobs modified at or after `since`, grouped by site and error codes, largest
    /// groups first, at most `limit` groups.
    pub async fn error_groups(
        &self,
        since: NaiveDateTime,
        limit: usize,
    ) -> Result<Vec<ErrorGroup>> {
        let codes: Vec<String> = ERROR_COMPONENTS
            .iter()
            .map(|(_, code, _)| column(*code))
            .collect();
        let diags: Vec<String> = ERROR_COMPONENTS
            .iter()
            .map(|(_, _, diag)| format!("MAX({})", column(*diag)))
            .collect();
        let mut types = vec![ColumnType::Text];
        types.extend(codes.iter().map(|_| ColumnType::BigInt));
        types.extend(diags.iter().map(|_| ColumnType::Text));
        types.push(ColumnType::BigInt);
        let mut tx = self.begin(TxMode::Read).await?;
        let mut groups: Vec<ErrorGroup> = Vec::new();
        for table in [JobTable::Active, JobTable::Archived] {
            let sql = format!(
                "SELECT computingsite, {codes}, {diags}, COUNT(*) FROM {} \
                 WHERE jobstatus = 'failed' AND modificationtime >= $1 \
                 GROUP BY computingsite, {codes} ORDER BY COUNT(*) DESC LIMIT {limit}",
                table.name(),
                codes = codes.join(", "),
                diags = diags.join(", "),
            );
            let rows = tx.fetch(&sql, &[Value::Time(Some(since))], &types).await?;
            for row in rows {
                let site = row[0].as_str().unwrap_or_default().to_string();
                let mut found = Vec::new();
                for (i, (name, _, _)) in ERROR_COMPONENTS.iter().enumerate() {
                    let code = row[1 + i].as_i64().unwrap_or(0);
                    if code != 0 {
                        let diag = row[1 + ERROR_COMPONENTS.len() + i]
                            .as_str()
                            .unwrap_or_default()
                            .to_string();
                        found.push((*name, code, diag));
                    }
                }
                let count = row[1 + 2 * ERROR_COMPONENTS.len()].as_i64().unwrap_or(0);
                match groups.iter_mut().find(|g| {
                    g.site == site
                        && g.codes
                            .iter()
                            .map(|c| (c.0, c.1))
                            .eq(found.iter().map(|c| (c.0, c.1)))
                }) {
                    Some(g) => g.count += count,
                    None => groups.push(ErrorGroup {
                        site,
                        codes: found,
                        count,
                    }),
                }
            }
        }
        tx.commit().await?;
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.site.cmp(&b.site)));
        groups.truncate(limit);
        Ok(groups)
    }

    /// Jobs of a site or a task that ended (were last modified) in each hour since `since`,
    /// by state; only final states are counted, from the archive and the active table.
    pub async fn hourly_final_counts(
        &self,
        scope: &HourlyScope,
        since: NaiveDateTime,
    ) -> Result<Vec<HourCount>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let counts = self
            .hourly_final_counts_in(tx.as_mut(), scope, since)
            .await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// A task's jobs by state, and those that ended since `since` by hour, in one pass over
    /// the task's jobs (`jeditaskid` indexes).
    async fn task_jobs_by_state_in(
        &self,
        tx: &mut dyn Tx,
        task_id: i64,
        since: NaiveDateTime,
    ) -> Result<(Vec<(String, i64)>, Vec<HourCount>)> {
        let hour = match self.dialect() {
            Dialect::Postgres => "date_trunc('hour', modificationtime)",
            Dialect::Sqlite => "strftime('%Y-%m-%d %H:00:00', modificationtime)",
        };
        let per_table: Vec<String> = JobTable::ALL
            .iter()
            .map(|t| {
                format!(
                    "SELECT jobstatus, CASE WHEN modificationtime >= $2 AND jobstatus IN \
                     ('finished', 'failed', 'cancelled', 'closed') THEN {hour} END AS hour \
                     FROM {} WHERE jeditaskid = $1",
                    t.name()
                )
            })
            .collect();
        let sql = format!(
            "SELECT jobstatus, hour, COUNT(*) FROM ({}) AS jobs GROUP BY jobstatus, hour",
            per_table.join(" UNION ALL ")
        );
        let rows = tx
            .fetch(
                &sql,
                &[Value::Int(Some(task_id)), Value::Time(Some(since))],
                &[ColumnType::Text, ColumnType::Timestamp, ColumnType::BigInt],
            )
            .await?;
        let mut states: Vec<(String, i64)> = Vec::new();
        let mut hourly = Vec::new();
        for row in rows {
            let (Some(status), Some(count)) = (row[0].as_str(), row[2].as_i64()) else {
                continue;
            };
            match states.iter_mut().find(|(s, _)| s == status) {
                Some(entry) => entry.1 += count,
                None => states.push((status.to_string(), count)),
            }
            if let Some(hour) = row[1].as_time() {
                hourly.push(HourCount {
                    hour,
                    status: status.to_string(),
                    count,
                });
            }
        }
        states.sort();
        hourly.sort_by(|a, b| (a.hour, &a.status).cmp(&(b.hour, &b.status)));
        Ok((states, hourly))
    }

    async fn hourly_final_counts_in(
        &self,
        tx: &mut dyn Tx,
        scope: &HourlyScope,
        since: NaiveDateTime,
    ) -> Result<Vec<HourCount>> {
        let hour = match self.dialect() {
            Dialect::Postgres => "date_trunc('hour', modificationtime)",
            Dialect::Sqlite => "strftime('%Y-%m-%d %H:00:00', modificationtime)",
        };
        let (column, value) = match scope {
            HourlyScope::Site(site) => ("computingsite", Value::Text(Some(site.clone()))),
            HourlyScope::Task(task) => ("jeditaskid", Value::Int(Some(*task))),
        };
        // One statement over both tables: the page waits once.
        let per_table: Vec<String> = [JobTable::Active, JobTable::Archived]
            .iter()
            .map(|t| {
                format!(
                    "SELECT {hour} AS hour, jobstatus FROM {} WHERE {column} = $1 \
                     AND modificationtime >= $2 \
                     AND jobstatus IN ('finished', 'failed', 'cancelled', 'closed')",
                    t.name()
                )
            })
            .collect();
        let sql = format!(
            "SELECT hour, jobstatus, COUNT(*) FROM ({}) AS ended GROUP BY hour, jobstatus",
            per_table.join(" UNION ALL ")
        );
        let rows = tx
            .fetch(
                &sql,
                &[value, Value::Time(Some(since))],
                &[ColumnType::Timestamp, ColumnType::Text, ColumnType::BigInt],
            )
            .await?;
        let mut counts: Vec<HourCount> = rows
            .into_iter()
            .filter_map(|row| {
                Some(HourCount {
                    hour: row[0].as_time()?,
                    status: row[1].as_str()?.to_string(),
                    count: row[2].as_i64()?,
                })
            })
            .collect();
        counts.sort_by(|a, b| (a.hour, &a.status).cmp(&(b.hour, &b.status)));
        Ok(counts)
    }

    /// Tasks of a monitor listing, newest first, at most `limit`.
    pub async fn monitor_tasks(&self, listing: &TaskListing) -> Result<Vec<TaskSpec>> {
        let mut params = Vec::new();
        let mut clauses = Vec::new();
        where_clause(&listing.conditions, &mut params, &mut clauses);
        if let Some(pattern) = &listing.name_like {
            params.push(Value::Text(Some(pattern.clone())));
            clauses.push(format!("taskname LIKE ${}", params.len()));
        }
        if let Some(since) = listing.since {
            params.push(Value::Time(Some(since)));
            clauses.push(format!("modificationtime >= ${}", params.len()));
        }
        let sql = format!(
            "SELECT {} FROM jedi_tasks{} ORDER BY jeditaskid DESC LIMIT {}",
            crate::tasks::select_list(self.dialect()),
            joined(&clauses),
            listing.limit
        );
        let rows = self
            .query(&sql, &params, &crate::tasks::task_types())
            .await?;
        rows.into_iter()
            .map(|row| {
                TaskSpec::from_values(row)
                    .ok_or_else(|| StoreError::Corrupt("task row has the wrong width".into()))
            })
            .collect()
    }

    /// The datasets of the given tasks, by task and dataset ID.
    pub async fn datasets_of_tasks(&self, task_ids: &[i64]) -> Result<Vec<DatasetSpec>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let datasets = datasets_of_tasks_in(tx.as_mut(), task_ids).await?;
        tx.commit().await?;
        Ok(datasets)
    }

    /// `/job/<pandaid>/`'s reads, on one connection: the job with its files, parameters and
    /// metadata, its status log and its retries; `None` for a job no table holds.
    pub async fn monitor_job_page(&self, panda_id: i64) -> Result<Option<JobPage>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let Some((job, _)) = self.find_job_in(tx.as_mut(), panda_id, false).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let status_log = crate::operator::job_status_log_in(tx.as_mut(), panda_id).await?;
        let retries = self.job_retries_in(tx.as_mut(), &job).await?;
        tx.commit().await?;
        Ok(Some(JobPage {
            job,
            status_log,
            retries,
        }))
    }

    /// `/task/<id>/`'s reads, on one connection: the task, its datasets, its jobs by state,
    /// its status changes and its jobs ended per hour since its creation (not before
    /// `plot_from`); `None` for an unknown task.
    pub async fn monitor_task_page(
        &self,
        task_id: i64,
        plot_from: NaiveDateTime,
    ) -> Result<Option<TaskPageRows>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let Some(task) = self.find_task_in(tx.as_mut(), task_id, false).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let datasets = datasets_of_tasks_in(tx.as_mut(), &[task_id]).await?;
        let status_log = task_status_changes_in(tx.as_mut(), task_id).await?;
        let since = task
            .get(TaskAttr::creationDate)
            .as_time()
            .map_or(plot_from, |created| created.max(plot_from));
        let (job_counts, hourly) = self
            .task_jobs_by_state_in(tx.as_mut(), task_id, since)
            .await?;
        tx.commit().await?;
        Ok(Some(TaskPageRows {
            task,
            datasets,
            job_counts,
            status_log,
            hourly,
        }))
    }

    /// A task's status changes with their reasons, oldest first.
    pub async fn task_status_changes(
        &self,
        task_id: i64,
    ) -> Result<Vec<(Option<NaiveDateTime>, String, String)>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let changes = task_status_changes_in(tx.as_mut(), task_id).await?;
        tx.commit().await?;
        Ok(changes)
    }

    /// Harvester workers matching the filters (columns from [`WORKER_FILTERS`]), last
    /// updated first, at most `limit`.
    pub async fn monitor_workers(
        &self,
        filters: &[(&'static str, Value)],
        since: NaiveDateTime,
        limit: usize,
    ) -> Result<DisplayRows> {
        let mut params = vec![Value::Time(Some(since))];
        let mut clauses = vec!["lastupdate >= $1".to_string()];
        for (column, value) in filters {
            if !WORKER_FILTERS.contains(column) {
                return Err(StoreError::Corrupt(format!(
                    "{column} is not a worker filter"
                )));
            }
            params.push(value.clone());
            clauses.push(format!("{column} = ${}", params.len()));
        }
        let sql = format!(
            "SELECT {} FROM harvester_workers{} ORDER BY lastupdate DESC, workerid DESC LIMIT {limit}",
            WORKER_COLUMNS.select_list(""),
            joined(&clauses)
        );
        let rows = self.query(&sql, &params, &WORKER_COLUMNS.types()).await?;
        Ok(DisplayRows {
            columns: WORKER_COLUMNS.0.iter().map(|(name, _)| *name).collect(),
            rows,
        })
    }
}

/// The datasets of the given tasks, by task and dataset ID, in `tx`.
async fn datasets_of_tasks_in(tx: &mut dyn Tx, task_ids: &[i64]) -> Result<Vec<DatasetSpec>> {
    let mut datasets = Vec::new();
    let select_list = crate::jedi::select_list(DATASET_ATTRIBUTES, "");
    let types = crate::jedi::types(DATASET_ATTRIBUTES);
    for chunk in task_ids.chunks(500) {
        let sql = format!(
            "SELECT {select_list} FROM jedi_datasets WHERE jeditaskid IN ({}) \
             ORDER BY jeditaskid, datasetid",
            placeholders(1, chunk.len())
        );
        let params: Vec<Value> = chunk.iter().map(|id| Value::Int(Some(*id))).collect();
        for row in tx.fetch(&sql, &params, &types).await? {
            datasets
                .push(DatasetSpec::from_values(row).ok_or_else(|| {
                    StoreError::Corrupt("dataset row has the wrong width".into())
                })?);
        }
    }
    Ok(datasets)
}

/// A task's status changes with their reasons, oldest first (at most 1,000), in `tx`.
async fn task_status_changes_in(
    tx: &mut dyn Tx,
    task_id: i64,
) -> Result<Vec<(Option<NaiveDateTime>, String, String)>> {
    let rows = tx
        .fetch(
            "SELECT modificationtime, status, reason FROM tasks_statuslog \
             WHERE jeditaskid = $1 ORDER BY modificationtime LIMIT 1000",
            &[Value::Int(Some(task_id))],
            &[ColumnType::Timestamp, ColumnType::Text, ColumnType::Text],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r[0].as_time(),
                r[1].as_str().unwrap_or_default().to_string(),
                r[2].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}
