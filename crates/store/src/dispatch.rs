//! Handing `activated` jobs to pilots: one statement claims them, so a job goes to exactly one
//! pilot however many callers and server processes race for it.
//!
//! PostgreSQL: `WITH candidates AS MATERIALIZED (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)
//! UPDATE ... WHERE pandaid = ANY (candidates) AND jobstatus = 'activated' RETURNING ...`:
//! concurrent claimers skip each other's candidate rows instead of waiting, and the update
//! re-checks the status. The statement also logs the change and returns the jobs with their
//! parameters and files (not their metadata: the job description never carries it, and on
//! upstream's layout reading `metatable` probes every partition), so a getJob is one round
//! trip. SQLite: the same claim without the lock clause, inside a write transaction,
//! which SQLite serializes.
//!
//! A production pull also counts the queue's jobs sent in the last minute (upstream's
//! `nSent`), in the same statement on PostgreSQL.

use panda_core::{time, ColumnType, JobAttr, JobSpec, JobTable, Record, Value};

use crate::driver::{Dialect, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::{files_from_json, files_json_select, job_select_list, job_types};
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
    /// Count the queue's recently sent production jobs ([`Claimed::recently_sent`]).
    pub count_recently_sent: bool,
}

/// The labels whose sent jobs [`Claimed::recently_sent`] counts (upstream's).
const SENT_COUNT_LABELS: [&str; 2] = ["managed", "test"];

/// How far back [`Claimed::recently_sent`] looks.
pub const SENT_COUNT_WINDOW: chrono::Duration = chrono::Duration::seconds(60);

/// What a claim handed out.
#[derive(Clone, Debug, Default)]
pub struct Claimed {
    /// The jobs, marked `sent`, highest priority first.
    pub jobs: Vec<JobSpec>,
    /// When asked for and jobs were claimed: the queue's `managed` and `test` jobs in `sent`
    /// changed within [`SENT_COUNT_WINDOW`], these included (upstream's `nSent`); else 0.
    pub recently_sent: i64,
}

impl Store {
    /// Claims up to `request.limit` activated jobs of a queue (highest `currentPriority` first,
    /// then oldest PandaID), marks them `sent`, and returns them with files and parameters.
    pub async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Claimed> {
        let now = time::now();
        let mut params = vec![
            Value::Time(Some(now)),
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

        // Upstream's nSent: the queue's production jobs in `sent` changed in the last minute.
        let sent_labels = SENT_COUNT_LABELS.map(|l| format!("'{l}'")).join(", ");
        let sent_count = |since: &str| {
            format!(
                "(SELECT count(*) FROM jobsactive4 WHERE jobstatus = 'sent' AND computingsite = $3 \
                 AND prodsourcelabel IN ({sent_labels}) AND modificationtime > {since})"
            )
        };
        let since = request
            .count_recently_sent
            .then(|| bind(Value::Time(Some(now - SENT_COUNT_WINDOW))));

        // On PostgreSQL the claim is one statement, atomic by itself, so it runs without
        // BEGIN and COMMIT; on SQLite it is a write transaction.
        let mut tx = self.begin(TxMode::Autocommit).await?;
        let mut claimed = Claimed::default();
        match self.dialect() {
            Dialect::Postgres => {
                // One statement claims, logs the status change and returns the rows with
                // their parameters and files, and the count of sent jobs. The count reads the
                // statement's snapshot, before the claim: the claimed jobs are added below.
                let log = match self.options().record_status_change {
                    true => format!(
                        ", logged AS ({})",
                        crate::jobs::status_log_from("claimed", 1, 2)
                    ),
                    false => String::new(),
                };
                let count = since
                    .as_deref()
                    .map_or("CAST(0 AS BIGINT)".to_string(), sent_count);
                let sql = format!(
                    "WITH {candidates}, claimed AS ({update} RETURNING jobsactive4.*){log} \
                     SELECT {}, (SELECT jobparameters FROM jobparamstable \
                     WHERE jobparamstable.pandaid = claimed.pandaid), {}, {count} FROM claimed",
                    job_select_list(Dialect::Postgres),
                    files_json_select("claimed.pandaid"),
                );
                let mut types = job_types();
                types.extend([ColumnType::Text, ColumnType::Text, ColumnType::BigInt]);
                let mut sent_before = 0;
                for mut row in tx.fetch(&sql, &params, &types).await? {
                    sent_before = row.pop().and_then(|v| v.as_i64()).unwrap_or(0);
                    let files = row.pop();
                    let parameters = row.pop();
                    let attrs = Record::from_values(row).ok_or_else(|| {
                        StoreError::Corrupt("claimed job row has the wrong width".into())
                    })?;
                    let mut job = JobSpec {
                        attrs,
                        files: files_from_json(files.as_ref().and_then(Value::as_str))?,
                    };
                    if let Some(parameters) = parameters {
                        job.set(JobAttr::jobParameters, parameters);
                    }
                    claimed.jobs.push(job);
                }
                if since.is_some() {
                    let counted = claimed.jobs.iter().filter(|job| {
                        job.get_str(JobAttr::prodSourceLabel)
                            .is_some_and(|l| SENT_COUNT_LABELS.contains(&l))
                    });
                    claimed.recently_sent = sent_before + counted.count() as i64;
                }
            }
            Dialect::Sqlite => {
                let sql = format!("WITH {candidates} {update} RETURNING jobsactive4.pandaid");
                let ids = tx.fetch(&sql, &params, &[ColumnType::BigInt]).await?;
                for id in ids.iter().filter_map(|r| r.first().and_then(Value::as_i64)) {
                    if let Some((mut job, JobTable::Active)) =
                        self.find_job_in(tx.as_mut(), id, false).await?
                    {
                        self.record_status_in(tx.as_mut(), &job).await?;
                        // As on PostgreSQL, a claimed job comes without its metadata.
                        job.set(JobAttr::metadata, Value::Text(None));
                        claimed.jobs.push(job);
                    }
                }
                // In the transaction the claimed jobs are `sent` already, so they count.
                if let Some(since) = since.as_deref().filter(|_| !claimed.jobs.is_empty()) {
                    let rows = tx
                        .fetch(
                            &format!("SELECT {}", sent_count(since)),
                            &params,
                            &[ColumnType::BigInt],
                        )
                        .await?;
                    claimed.recently_sent = rows
                        .first()
                        .and_then(|r| r.first())
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                }
            }
        }
        tx.commit().await?;
        claimed.jobs.sort_by_key(|j| {
            (
                std::cmp::Reverse(j.get_i64(JobAttr::currentPriority).unwrap_or(0)),
                j.panda_id(),
            )
        });
        Ok(claimed)
    }
}

fn text(s: &str) -> Value {
    Value::Text(Some(s.to_string()))
}

fn int(i: i64) -> Value {
    Value::Int(Some(i))
}
