//! Handing `activated` jobs to pilots: one statement claims them, so a job goes to exactly one
//! pilot however many callers and server processes race for it.
//!
//! PostgreSQL: `WITH candidates AS MATERIALIZED (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)
//! UPDATE ... WHERE pandaid = ANY (candidates) AND jobstatus = 'activated' RETURNING ...`:
//! concurrent claimers skip each other's candidate rows instead of waiting, and the update
//! re-checks the status. The statement also logs the change and returns the jobs with their
//! parameters and files, so a getJob is one round trip. SQLite: the same claim without the
//! lock clause, inside a write transaction,
//! which SQLite serializes.

use panda_core::{time, ColumnType, JobAttr, JobSpec, JobTable, Record, Value};

use crate::driver::{Dialect, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::{
    files_from_json, files_json_select, job_select_list, job_texts_select, job_types, set_job_texts,
};
use crate::Store;

/// Which `prodSourceLabel`s a pilot's request matches (upstream's label groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelFilter {
    /// `prodSourceLabel IN (...)`.
    AnyOf(Vec<String>),
    /// Test pilots: `processingType = 'gangarobot'` or a test-like label.
    TestJobs,
}

/// What a pilot asks for.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub site: String,
    pub labels: LabelFilter,
    /// Memory the node offers in MB; jobs needing more are skipped (0 in the job: any).
    pub memory: Option<i64>,
    /// Disk the node offers in MB.
    pub disk: Option<i64>,
    /// Seconds the pilot has left; jobs with a longer `maxWalltime` are skipped.
    pub remaining_time: Option<i64>,
    pub background: bool,
    pub resource_type: Option<String>,
    /// Only this user's jobs (callers without the production role).
    pub prod_user_name: Option<String>,
    pub task_id: Option<i64>,
    pub limit: usize,
    /// The worker node, recorded as `modificationHost`.
    pub node: String,
    pub computing_element: Option<String>,
    pub scheduler_id: Option<String>,
}

impl Store {
    /// Claims up to `request.limit` activated jobs of a queue (highest `currentPriority` first,
    /// then oldest PandaID), marks them `sent`, and returns them with files and parameters.
    pub async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<JobSpec>> {
        let now = Value::Time(Some(time::now()));
        let mut params = vec![
            now.clone(),
            Value::Text(Some(request.node.chars().take(128).collect())),
            Value::Text(Some(request.site.clone())),
        ];
        let mut bind = |value: Value| {
            params.push(value);
            format!("${}", params.len())
        };
        let mut sets = String::from(
            "jobstatus = 'sent', modificationtime = $1, statechangetime = $1, starttime = $1, \
             modificationhost = $2",
        );
        if let Some(ce) = &request.computing_element {
            sets.push_str(&format!(", computingelement = {}", bind(text(ce))));
        }
        if let Some(id) = &request.scheduler_id {
            sets.push_str(&format!(", schedulerid = {}", bind(text(id))));
        }
        if !request.background {
            sets.push_str(", jobexecutionid = 0");
        }
        let mut conditions = vec![
            "jobstatus = 'activated'".to_string(),
            "computingsite = $3".into(),
        ];
        match &request.labels {
            LabelFilter::AnyOf(labels) => {
                let list: Vec<String> = labels.iter().map(|l| bind(text(l))).collect();
                conditions.push(format!("prodsourcelabel IN ({})", list.join(", ")));
            }
            LabelFilter::TestJobs => conditions.push(
                "(processingtype = 'gangarobot' OR prodsourcelabel IN ('prod_test', 'install', 'test'))"
                    .into(),
            ),
        }
        if let Some(mem) = request.memory.filter(|m| *m > 0) {
            conditions.push(format!(
                "(minramcount <= {} OR minramcount = 0)",
                bind(int(mem))
            ));
        }
        if let Some(disk) = request.disk.filter(|d| *d > 0) {
            conditions.push(format!(
                "(maxdiskcount <= {} OR maxdiskcount = 0)",
                bind(int(disk))
            ));
        }
        if let Some(rt) = request.remaining_time.filter(|t| *t > 0) {
            conditions.push(format!(
                "(maxwalltime IS NULL OR maxwalltime <= {})",
                bind(int(rt))
            ));
        }
        if request.background {
            conditions.push("jobexecutionid = 1".into());
        }
        if let Some(rt) = &request.resource_type {
            conditions.push(format!("resource_type = {}", bind(text(rt))));
        }
        if let Some(user) = &request.prod_user_name {
            conditions.push(format!("produsername = {}", bind(text(user))));
        }
        if let Some(task) = request.task_id {
            conditions.push(format!("jeditaskid = {}", bind(int(task))));
        }
        // The limit is written into the statement, not bound: with a bound limit PostgreSQL
        // costs the generic plan for an unknown row count, finds it dearer than a plan for
        // `LIMIT 1`, and so plans the claim anew on every call (a third of a millisecond).
        // Known, a cached plan is used. Pilots ask for one job or a few, so the texts are few.
        let limit = request.limit.max(1);
        // The update finds the candidates by primary key. On PostgreSQL they are one array,
        // an index condition whatever the table's statistics say: as a join, a table never
        // analyzed (a fresh database, autovacuum off) was planned as a walk over every row.
        let (lock, chosen) = match self.dialect() {
            Dialect::Postgres => (
                " FOR UPDATE SKIP LOCKED",
                "pandaid = ANY (ARRAY(SELECT pandaid FROM candidates))",
            ),
            Dialect::Sqlite => ("", "pandaid IN (SELECT pandaid FROM candidates)"),
        };
        // The candidates are a materialized CTE: as `pandaid IN (subquery)`, PostgreSQL may
        // re-run a LIMIT subquery per row and claim more than asked for.
        let candidates = format!(
            "candidates AS MATERIALIZED (SELECT pandaid FROM jobsactive4 WHERE {} \
             ORDER BY currentpriority DESC, pandaid ASC LIMIT {limit}{lock})",
            conditions.join(" AND ")
        );
        let update =
            format!("UPDATE jobsactive4 SET {sets} WHERE {chosen} AND jobstatus = 'activated'");

        // On PostgreSQL the claim is one statement, atomic by itself, so it runs without
        // BEGIN and COMMIT; on SQLite it is a write transaction.
        let mut tx = self.begin(TxMode::Autocommit).await?;
        let mut jobs = Vec::new();
        match self.dialect() {
            Dialect::Postgres => {
                // One statement claims, logs the status change and returns the rows with
                // their parameters, metadata and files.
                let log = match self.options().record_status_change {
                    true => format!(
                        ", logged AS ({})",
                        crate::jobs::status_log_from("claimed", 1, 2)
                    ),
                    false => String::new(),
                };
                let sql = format!(
                    "WITH {candidates}, claimed AS ({update} RETURNING jobsactive4.*){log} \
                     SELECT {}, {}, {} FROM claimed",
                    job_select_list(Dialect::Postgres),
                    job_texts_select("claimed.pandaid"),
                    files_json_select("claimed.pandaid"),
                );
                let mut types = job_types();
                types.extend([ColumnType::Text, ColumnType::Text, ColumnType::Text]);
                for mut row in tx.fetch(&sql, &params, &types).await? {
                    let files = row.pop();
                    let texts = row.split_off(row.len().saturating_sub(2));
                    let attrs = Record::from_values(row).ok_or_else(|| {
                        StoreError::Corrupt("claimed job row has the wrong width".into())
                    })?;
                    let mut job = JobSpec {
                        attrs,
                        files: files_from_json(files.as_ref().and_then(Value::as_str))?,
                    };
                    set_job_texts(&mut job, texts);
                    jobs.push(job);
                }
            }
            Dialect::Sqlite => {
                let sql = format!("WITH {candidates} {update} RETURNING jobsactive4.pandaid");
                let claimed = tx.fetch(&sql, &params, &[ColumnType::BigInt]).await?;
                for id in claimed
                    .iter()
                    .filter_map(|r| r.first().and_then(Value::as_i64))
                {
                    if let Some((job, JobTable::Active)) =
                        self.find_job_in(tx.as_mut(), id, false).await?
                    {
                        self.record_status_in(tx.as_mut(), &job).await?;
                        jobs.push(job);
                    }
                }
            }
        }
        tx.commit().await?;
        jobs.sort_by_key(|j| {
            (
                std::cmp::Reverse(j.get_i64(JobAttr::currentPriority).unwrap_or(0)),
                j.panda_id(),
            )
        });
        Ok(jobs)
    }
}

fn text(s: &str) -> Value {
    Value::Text(Some(s.to_string()))
}

fn int(i: i64) -> Value {
    Value::Int(Some(i))
}
