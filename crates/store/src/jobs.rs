//! Jobs, their files, parameters and metadata: insert, read, change and move between tables.
//!
//! Statements are built once per store from the attribute tables, so each call only binds.
//! A status change that crosses tables (defined → active → archived) is a DELETE and an INSERT
//! in the same transaction; archiving also stamps `modificationtime` on the job's file,
//! parameter and metadata rows, which moves them out of upstream's "initial" partition.

use panda_core::file::FILE_ATTRIBUTES;
use panda_core::job::JOB_ATTRIBUTES;
use panda_core::{
    time, AttrSet, ColumnType, FileAttr, FileSpec, JobAttr, JobSpec, JobStatus, JobTable, Record,
    Value,
};

use crate::bind::placeholders;
use crate::ddl::job_column_type;
use crate::driver::{Dialect, Tx, TxMode};
use crate::error::{Result, StoreError};
use crate::side::{JobSource, SideWrite};
use crate::Store;

/// Where a job is looked for: most lookups are for running jobs (heartbeats, the Adder).
const LOOKUP_ORDER: [JobTable; 3] = [JobTable::Active, JobTable::Defined, JobTable::Archived];

const PANDAID_SEQUENCE: &str = "jobsdefined4_pandaid_seq";
const FILE_ROW_SEQUENCE: &str = "filestable4_row_id_seq";

/// What a change decided: write the job back, or keep it as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<R> {
    Write(R),
    Keep(R),
}

/// Prebuilt statements for the three job tables (indexed by [`table_index`]) and the files.
pub struct JobSql {
    select_job: [String; 3],
    select_job_for_update: [String; 3],
    insert_job: [String; 3],
    delete_job: [String; 3],
    select_files: String,
}

fn table_index(table: JobTable) -> usize {
    match table {
        JobTable::Defined => 0,
        JobTable::Active => 1,
        JobTable::Archived => 2,
    }
}

impl JobSql {
    pub fn new(dialect: Dialect) -> JobSql {
        let job_cols: Vec<String> = JOB_ATTRIBUTES.iter().map(|a| a.column()).collect();
        let select_list = job_select_list(dialect);
        let per_table = |f: &dyn Fn(&str) -> String| JobTable::ALL.map(|t| f(t.name()));
        let lock = dialect.row_lock();
        let file_cols: Vec<String> = FILE_ATTRIBUTES.iter().map(|a| a.column()).collect();
        JobSql {
            select_job: per_table(&|t| format!("SELECT {select_list} FROM {t} WHERE pandaid = $1")),
            select_job_for_update: per_table(&|t| {
                format!("SELECT {select_list} FROM {t} WHERE pandaid = $1{lock}")
            }),
            insert_job: per_table(&|t| {
                format!(
                    "INSERT INTO {t} ({}) VALUES ({})",
                    job_cols.join(", "),
                    placeholders(1, job_cols.len())
                )
            }),
            delete_job: per_table(&|t| format!("DELETE FROM {t} WHERE pandaid = $1")),
            select_files: format!(
                "SELECT {} FROM filestable4 WHERE pandaid = $1 ORDER BY row_id",
                file_cols.join(", ")
            ),
        }
    }
}

/// The select list of a job row, in attribute order.
pub(crate) fn job_select_list(dialect: Dialect) -> String {
    JOB_ATTRIBUTES
        .iter()
        .map(|a| dialect.read_column(&a.column(), a.column_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Select-list expressions for the job's parameters and metadata, which live in their own
/// tables, for the job whose PandaID is `panda_id` (a placeholder or a column).
pub(crate) fn job_texts_select(panda_id: &str) -> String {
    format!(
        "(SELECT jobparameters FROM jobparamstable WHERE jobparamstable.pandaid = {panda_id}), \
         (SELECT metadata FROM metatable WHERE metatable.pandaid = {panda_id})"
    )
}

/// A select-list expression for the files of the job whose PandaID is `panda_id`, as one
/// JSON array of rows (each an array in attribute order), NULL when it has none; read back
/// with [`files_from_json`]. Lets one statement return jobs with their files.
pub(crate) fn files_json_select(panda_id: &str) -> String {
    let columns: Vec<String> = FILE_ATTRIBUTES.iter().map(|a| a.column()).collect();
    format!(
        "(SELECT CAST(json_agg(json_build_array({}) ORDER BY row_id) AS TEXT) FROM filestable4 \
         WHERE filestable4.pandaid = {panda_id})",
        columns.join(", ")
    )
}

/// The files selected by [`files_json_select`].
pub(crate) fn files_from_json(text: Option<&str>) -> Result<Vec<FileSpec>> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("file rows as JSON: {what}"));
    let rows: Vec<Vec<serde_json::Value>> =
        serde_json::from_str(text).map_err(|e| corrupt(&e.to_string()))?;
    rows.into_iter()
        .map(|row| {
            let values = row
                .into_iter()
                .zip(FILE_ATTRIBUTES.iter())
                .map(|(value, attr)| {
                    let parsed = match (value, attr.column_type.null()) {
                        (serde_json::Value::Null, null) => Ok(null),
                        // Text as stored: `Value::parse` would read the text "NULL" as NULL.
                        (serde_json::Value::String(s), Value::Text(_)) => Ok(Value::Text(Some(s))),
                        (serde_json::Value::String(s), _) => Value::parse(attr.column_type, &s),
                        (other, _) => Value::parse(attr.column_type, &other.to_string()),
                    };
                    parsed.map_err(|e| corrupt(&format!("{}: {e}", attr.column())))
                })
                .collect::<Result<Vec<Value>>>()?;
            FileSpec::from_values(values).ok_or_else(|| corrupt("a row has the wrong width"))
        })
        .collect()
}

/// Sets the parameters and metadata read by [`job_texts_select`].
pub(crate) fn set_job_texts(job: &mut JobSpec, mut texts: Vec<Value>) {
    if let Some(metadata) = texts.pop() {
        job.set(JobAttr::metadata, metadata);
    }
    if let Some(parameters) = texts.pop() {
        job.set(JobAttr::jobParameters, parameters);
    }
}

pub(crate) fn job_types() -> Vec<ColumnType> {
    JOB_ATTRIBUTES.iter().map(|a| a.column_type).collect()
}

fn file_types() -> Vec<ColumnType> {
    FILE_ATTRIBUTES.iter().map(|a| a.column_type).collect()
}

/// The job row's parameters for `table`: strings cut to that table's column lengths (the
/// tables differ), the two attributes kept in their own tables bound as NULL, and a NULL in
/// the two NOT NULL id columns that are not zero attributes written as their default, 0.
fn job_row_params(job: &JobSpec, table: JobTable) -> Vec<Value> {
    job.values()
        .iter()
        .enumerate()
        .map(|(i, value)| match (JOB_ATTRIBUTES[i].name, value) {
            ("jobParameters" | "metadata", _) => Value::Text(None),
            ("PandaID" | "jobDefinitionID", Value::Int(None)) => Value::Int(Some(0)),
            (_, Value::Text(Some(s))) => match job_column_type(table, i).max_len() {
                Some(max) if s.chars().count() > max => {
                    Value::Text(Some(s.chars().take(max).collect()))
                }
                _ => value.clone(),
            },
            _ => value.clone(),
        })
        .collect()
}

fn status_table(job: &JobSpec) -> Result<JobTable> {
    match job.status() {
        Some(status) => Ok(status.table()),
        None => Err(StoreError::Conflict(format!(
            "job {} has unknown status {:?}",
            job.panda_id(),
            job.get(JobAttr::jobStatus).render()
        ))),
    }
}

/// Bound values one multi-row statement carries at most (below SQLite's 32,766 and
/// PostgreSQL's 65,535).
pub(crate) const MAX_STATEMENT_VALUES: usize = 30_000;

/// Inserts `rows` (each in `columns` order) into `table` with multi-row INSERTs.
pub(crate) async fn insert_rows(
    tx: &mut dyn Tx,
    table: &str,
    columns: &[String],
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    let width = columns.len().max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows
            .by_ref()
            .take((MAX_STATEMENT_VALUES / width).max(1))
            .collect();
        let marks: Vec<String> = (0..chunk.len())
            .map(|r| format!("({})", placeholders(r * width + 1, width)))
            .collect();
        let params: Vec<Value> = chunk.into_iter().flatten().collect();
        tx.execute(
            &format!(
                "INSERT INTO {table} ({}) VALUES {}",
                columns.join(", "),
                marks.join(", ")
            ),
            &params,
        )
        .await?;
    }
    Ok(())
}

/// Tries of an unlocked row change before [`Store::change_job_row`] takes the row lock.
const UNLOCKED_ATTEMPTS: usize = 3;

/// The columns of a `jobs_statuslog` row, in the order every insert writes them.
pub(crate) const STATUS_LOG_COLUMNS: &str = "pandaid, modificationtime, jobstatus, \
     prodsourcelabel, cloud, computingsite, modificationhost, modiftime_extended";

/// An INSERT of one `jobs_statuslog` row per row of `source` (a CTE of job rows), stamped with
/// the time `$at` and the host `$host`.
pub(crate) fn status_log_from(source: &str, at: usize, host: usize) -> String {
    format!(
        "INSERT INTO jobs_statuslog ({STATUS_LOG_COLUMNS}) SELECT pandaid, ${at}, jobstatus, \
         prodsourcelabel, cloud, computingsite, ${host}, ${at} FROM {source}"
    )
}

/// The columns an UPDATE returns for its `jobs_statuslog` row.
const STATUS_LOG_SOURCE: &str = "pandaid, jobstatus, prodsourcelabel, cloud, computingsite";

enum Unlocked<R> {
    Done(JobSpec, R),
    /// Another writer changed the job between the read and the write.
    Raced,
    /// The change cannot be written in one statement.
    NeedsLock,
}

/// A change to a job, decided and stamped, not yet written.
struct Change<R> {
    job: JobSpec,
    /// The job as read.
    unchanged: JobSpec,
    outcome: R,
    side_writes: Vec<SideWrite>,
    old_table: JobTable,
    new_table: JobTable,
    now: chrono::NaiveDateTime,
}

enum Decided<R> {
    Keep(JobSpec, R),
    Write(Change<R>),
}

/// Runs `change` on the job as read from `table` and stamps what every write stamps.
fn decide<F, R>(panda_id: i64, job: JobSpec, table: JobTable, change: F) -> Result<Decided<R>>
where
    F: FnOnce(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<R>>,
{
    let unchanged = job.clone();
    let mut job = job;
    let mut side_writes = Vec::new();
    let outcome = match change(&mut job, &mut side_writes)? {
        Decision::Write(outcome) => outcome,
        Decision::Keep(outcome) => return Ok(Decided::Keep(unchanged, outcome)),
    };
    if job.panda_id() != panda_id {
        return Err(StoreError::Conflict(
            "a change may not alter the PandaID".into(),
        ));
    }
    let now = time::now();
    job.set(JobAttr::modificationTime, Value::Time(Some(now)));
    let new_table = status_table(&job)?;
    if new_table == JobTable::Archived && job.get(JobAttr::endTime).is_null() {
        job.set(JobAttr::endTime, Value::Time(Some(now)));
    }
    Ok(Decided::Write(Change {
        job,
        unchanged,
        outcome,
        side_writes,
        old_table: table,
        new_table,
        now,
    }))
}

/// For a change within one table: the values to bind (the PandaID first) and the
/// `column = $n` assignments of the columns that changed.
fn changed_columns<R>(change: &Change<R>) -> (Vec<Value>, Vec<String>) {
    let after = job_row_params(&change.job, change.new_table);
    let before = job_row_params(&change.unchanged, change.old_table);
    let mut values = vec![Value::Int(Some(change.job.panda_id()))];
    let mut assignments = Vec::new();
    for (i, (new, old)) in after.into_iter().zip(&before).enumerate().skip(1) {
        if new != *old {
            values.push(new);
            assignments.push(format!(
                "{} = ${}",
                JOB_ATTRIBUTES[i].column(),
                values.len()
            ));
        }
    }
    (values, assignments)
}

impl Store {
    /// Hands out `count` new PandaIDs from upstream's sequence.
    pub async fn allocate_panda_ids(&self, count: usize) -> Result<Vec<i64>> {
        let mut tx = self.begin(TxMode::Write).await?;
        let ids = next_ids(tx.as_mut(), self.dialect(), PANDAID_SEQUENCE, count).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Stores new jobs with their files, parameters and metadata, in one transaction.
    ///
    /// Assigns each job without one a PandaID (jobs may bring one from
    /// [`Store::allocate_panda_ids`]) and each file a row ID (written back into `jobs`), stamps
    /// creation, modification and state-change times, and puts each job in the table of its
    /// status (`defined` when none is set).
    pub async fn insert_jobs(&self, jobs: &mut [JobSpec]) -> Result<()> {
        self.insert_jobs_via(jobs, None).await
    }

    /// Like [`Store::insert_jobs`] for jobs already moved on from `via` (submission runs the
    /// data-management step before storing): `jobs_statuslog` gets a `via` row, then the row
    /// of the job's status, as if the job had been stored and then changed.
    pub async fn insert_jobs_via(
        &self,
        jobs: &mut [JobSpec],
        via: Option<JobStatus>,
    ) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let now = time::now();
        let dialect = self.dialect();
        let mut tx = self.begin(TxMode::Write).await?;
        let missing = jobs.iter().filter(|j| j.panda_id() <= 0).count();
        let mut fresh = next_ids(tx.as_mut(), dialect, PANDAID_SEQUENCE, missing)
            .await?
            .into_iter();
        let ids: Vec<i64> = jobs
            .iter()
            .map(|j| match j.panda_id() {
                id if id > 0 => Some(id),
                _ => fresh.next(),
            })
            .collect::<Option<_>>()
            .ok_or_else(|| StoreError::Corrupt("the PandaID sequence fell short".into()))?;
        let file_count = jobs.iter().map(|j| j.files.len()).sum();
        let mut row_ids = next_ids(tx.as_mut(), dialect, FILE_ROW_SEQUENCE, file_count)
            .await?
            .into_iter();
        for (job, id) in jobs.iter_mut().zip(ids) {
            job.set(JobAttr::PandaID, Value::Int(Some(id)));
            if job.get(JobAttr::jobStatus).is_null() {
                job.set_status(JobStatus::Defined, now);
            }
            for attr in [
                JobAttr::creationTime,
                JobAttr::modificationTime,
                JobAttr::stateChangeTime,
                JobAttr::prodDBUpdateTime,
            ] {
                job.set(attr, Value::Time(Some(now)));
            }
            for file in job.files.iter_mut() {
                file.set(FileAttr::row_ID, Value::Int(row_ids.next()));
                file.set(FileAttr::PandaID, Value::Int(Some(id)));
            }
        }
        self.insert_jobs_in(tx.as_mut(), jobs, via).await?;
        tx.commit().await
    }

    /// Inserts jobs with as few statements as the bound-value limit allows: the job rows per
    /// table, their files, parameters, metadata and status-log rows, each as multi-row
    /// INSERTs. A job stored in another status than `via` gets a `via` row first, one
    /// microsecond earlier, so that the log orders the two.
    async fn insert_jobs_in(
        &self,
        tx: &mut dyn Tx,
        jobs: &[JobSpec],
        via: Option<JobStatus>,
    ) -> Result<()> {
        let mut by_table: [Vec<Vec<Value>>; 3] = Default::default();
        let mut archived = Vec::new();
        for job in jobs {
            let table = status_table(job)?;
            by_table[table_index(table)].push(job_row_params(job, table));
            if table == JobTable::Archived {
                archived.push(job);
            }
        }
        let job_columns: Vec<String> = JOB_ATTRIBUTES.iter().map(|a| a.column()).collect();
        for (table, rows) in JobTable::ALL.iter().zip(by_table) {
            insert_rows(tx, table.name(), &job_columns, rows).await?;
        }
        let file_columns: Vec<String> = FILE_ATTRIBUTES.iter().map(|a| a.column()).collect();
        let files = jobs
            .iter()
            .flat_map(|j| j.files.iter().map(|f| f.values().to_vec()))
            .collect();
        insert_rows(tx, "filestable4", &file_columns, files).await?;
        let pair = |column: &str| vec!["pandaid".to_string(), column.to_string()];
        let parameters = jobs
            .iter()
            .map(|j| {
                vec![
                    j.get(JobAttr::PandaID).clone(),
                    j.get(JobAttr::jobParameters).clone(),
                ]
            })
            .collect();
        insert_rows(tx, "jobparamstable", &pair("jobparameters"), parameters).await?;
        let metadata = jobs
            .iter()
            .filter(|j| !j.get(JobAttr::metadata).is_null())
            .map(|j| {
                vec![
                    j.get(JobAttr::PandaID).clone(),
                    j.get(JobAttr::metadata).clone(),
                ]
            })
            .collect();
        insert_rows(tx, "metatable", &pair("metadata"), metadata).await?;
        for job in archived {
            stamp_archived(tx, job).await?;
        }
        if !self.options().record_status_change {
            return Ok(());
        }
        let now = time::now();
        let host = Value::Text(Some(self.options().host_name.clone()));
        let log_row = |job: &JobSpec, status: Value, at: chrono::NaiveDateTime| {
            let at = Value::Time(Some(at));
            vec![
                job.get(JobAttr::PandaID).clone(),
                at.clone(),
                status,
                job.get(JobAttr::prodSourceLabel).clone(),
                job.get(JobAttr::cloud).clone(),
                job.get(JobAttr::computingSite).clone(),
                host.clone(),
                at,
            ]
        };
        let mut log = Vec::with_capacity(jobs.len() * 2);
        for job in jobs {
            match via.filter(|v| job.status() != Some(*v)) {
                Some(earlier) => {
                    log.push(log_row(
                        job,
                        Value::Text(Some(earlier.as_str().into())),
                        now,
                    ));
                    let later = now + chrono::Duration::microseconds(1);
                    log.push(log_row(job, job.get(JobAttr::jobStatus).clone(), later));
                }
                None => log.push(log_row(job, job.get(JobAttr::jobStatus).clone(), now)),
            }
        }
        let log_columns: Vec<String> = STATUS_LOG_COLUMNS
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        insert_rows(tx, "jobs_statuslog", &log_columns, log).await
    }

    /// Reads a job from whichever table holds it, with its files, parameters and metadata.
    pub async fn get_job(&self, panda_id: i64) -> Result<Option<JobSpec>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let found = self.find_job_in(tx.as_mut(), panda_id, false).await?;
        tx.commit().await?;
        Ok(found.map(|(job, _)| job))
    }

    pub(crate) async fn find_job_in(
        &self,
        tx: &mut dyn Tx,
        panda_id: i64,
        for_update: bool,
    ) -> Result<Option<(JobSpec, JobTable)>> {
        self.find_job_row_in(tx, panda_id, for_update, true).await
    }

    /// The job row, with its files, parameters and metadata when `details`.
    async fn find_job_row_in(
        &self,
        tx: &mut dyn Tx,
        panda_id: i64,
        for_update: bool,
        details: bool,
    ) -> Result<Option<(JobSpec, JobTable)>> {
        let sql = self.sql();
        let id = [Value::Int(Some(panda_id))];
        for table in LOOKUP_ORDER {
            let statement = match for_update {
                true => &sql.select_job_for_update[table_index(table)],
                false => &sql.select_job[table_index(table)],
            };
            let mut rows = tx.fetch(statement, &id, &job_types()).await?;
            if let Some(row) = rows.pop() {
                let attrs = Record::from_values(row)
                    .ok_or_else(|| StoreError::Corrupt("job row has the wrong width".into()))?;
                let mut job = JobSpec {
                    attrs,
                    files: Vec::new(),
                };
                if details {
                    self.load_details(tx, &mut job).await?;
                }
                return Ok(Some((job, table)));
            }
        }
        Ok(None)
    }

    /// Some columns of the job (always its PandaID, status and modification time), from
    /// whichever table holds it; the other attributes at their defaults.
    async fn find_job_columns_in(
        &self,
        tx: &mut dyn Tx,
        panda_id: i64,
        reads: &[JobAttr],
    ) -> Result<Option<(JobSpec, JobTable)>> {
        let mut attrs = vec![
            JobAttr::PandaID,
            JobAttr::jobStatus,
            JobAttr::modificationTime,
        ];
        for attr in reads {
            if !attrs.contains(attr) {
                attrs.push(*attr);
            }
        }
        let metas: Vec<_> = attrs.iter().map(|a| &JOB_ATTRIBUTES[a.index()]).collect();
        let select_list = metas
            .iter()
            .map(|m| self.dialect().read_column(&m.column(), m.column_type))
            .collect::<Vec<_>>()
            .join(", ");
        let types: Vec<ColumnType> = metas.iter().map(|m| m.column_type).collect();
        let id = [Value::Int(Some(panda_id))];
        for table in LOOKUP_ORDER {
            let sql = format!(
                "SELECT {select_list} FROM {} WHERE pandaid = $1",
                table.name()
            );
            if let Some(row) = tx.fetch(&sql, &id, &types).await?.pop() {
                let mut job = JobSpec::new();
                for (attr, value) in attrs.iter().zip(row) {
                    job.set(*attr, value);
                }
                return Ok(Some((job, table)));
            }
        }
        Ok(None)
    }

    pub(crate) async fn load_details(&self, tx: &mut dyn Tx, job: &mut JobSpec) -> Result<()> {
        self.load_files(tx, job).await?;
        let id = [Value::Int(Some(job.panda_id()))];
        // Parameters and metadata in one round trip.
        let texts = tx
            .fetch(
                &format!("SELECT {}", job_texts_select("$1")),
                &id,
                &[ColumnType::Text, ColumnType::Text],
            )
            .await?;
        if let Some(row) = texts.into_iter().next() {
            set_job_texts(job, row);
        }
        Ok(())
    }

    /// Reads the job's files, in the order they were stored.
    pub(crate) async fn load_files(&self, tx: &mut dyn Tx, job: &mut JobSpec) -> Result<()> {
        let id = [Value::Int(Some(job.panda_id()))];
        let rows = tx
            .fetch(&self.sql().select_files, &id, &file_types())
            .await?;
        job.files = rows
            .into_iter()
            .map(|row| {
                FileSpec::from_values(row)
                    .ok_or_else(|| StoreError::Corrupt("file row has the wrong width".into()))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Changes a job under a row lock: `change` edits it (and may queue writes to side tables),
    /// then the store writes it back, moving it to the table of its new status if that
    /// differs, all in one transaction. Returns the job as stored and what `change` returned.
    ///
    /// `modificationTime` is stamped; setting the status through [`JobSpec::set_status`]
    /// stamps `stateChangeTime`. Files are not rewritten.
    pub async fn modify_job<F, R>(&self, panda_id: i64, change: F) -> Result<(JobSpec, R)>
    where
        F: FnOnce(&mut JobSpec, &mut Vec<SideWrite>) -> Result<R> + Send,
        R: Send,
    {
        self.change_job(panda_id, |job, side| change(job, side).map(Decision::Write))
            .await
    }

    /// Like [`Store::modify_job`], but `change` may decide to leave the job as it was
    /// ([`Decision::Keep`]): nothing is written, and the job is returned as stored.
    pub async fn change_job<F, R>(&self, panda_id: i64, change: F) -> Result<(JobSpec, R)>
    where
        F: FnOnce(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<R>> + Send,
        R: Send,
    {
        self.change_job_in(panda_id, true, change).await
    }

    /// Like [`Store::change_job`], for changes that read only some of the job's columns,
    /// `reads` (the pilot's heartbeat path). `change` sees those columns (and the PandaID,
    /// status and modification time) as stored, every other attribute at its default; it may
    /// set any attribute, and only the attributes it changed are written. Files, parameters
    /// and metadata are neither read nor written. The job returned has the same partial view.
    ///
    /// On PostgreSQL the change is first tried without a row lock: the columns are read in
    /// autocommit, and the change is written in one statement (with its status-log row and
    /// side writes) that applies only if the job still has the status and modification time
    /// it was read with; every writer of a job row stamps `modificationtime`. Two statements
    /// instead of a transaction of four to six. A lost race reads again; after
    /// [`UNLOCKED_ATTEMPTS`], or for a change that moves the job to another table or needs a
    /// side write that cannot go in that statement, the change runs under the row lock, so
    /// `change` may be called more than once and must not depend on being called only once.
    pub async fn change_job_row<F, R>(
        &self,
        panda_id: i64,
        reads: &[JobAttr],
        mut change: F,
    ) -> Result<(JobSpec, R)>
    where
        F: FnMut(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<R>> + Send,
        R: Send,
    {
        if self.dialect() == Dialect::Postgres {
            for _ in 0..UNLOCKED_ATTEMPTS {
                match self
                    .change_row_unlocked(panda_id, reads, &mut change)
                    .await?
                {
                    Unlocked::Done(job, outcome) => return Ok((job, outcome)),
                    Unlocked::Raced => continue,
                    Unlocked::NeedsLock => break,
                }
            }
        }
        self.change_job_in(panda_id, false, change).await
    }

    async fn change_row_unlocked<F, R>(
        &self,
        panda_id: i64,
        reads: &[JobAttr],
        change: &mut F,
    ) -> Result<Unlocked<R>>
    where
        F: FnMut(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<R>> + Send,
        R: Send,
    {
        let mut tx = self.begin(TxMode::Autocommit).await?;
        let (job, table) = self
            .find_job_columns_in(tx.as_mut(), panda_id, reads)
            .await?
            .ok_or(StoreError::JobNotFound(panda_id))?;
        let change = match decide(panda_id, job, table, change)? {
            Decided::Keep(job, outcome) => return Ok(Unlocked::Done(job, outcome)),
            Decided::Write(change) => change,
        };
        if change.new_table != change.old_table {
            return Ok(Unlocked::NeedsLock);
        }
        let (mut values, assignments) = changed_columns(&change);
        if assignments.is_empty() {
            return Ok(Unlocked::NeedsLock);
        }
        let old_status = values.len() + 1;
        values.push(change.unchanged.get(JobAttr::jobStatus).clone());
        values.push(change.unchanged.get(JobAttr::modificationTime).clone());
        // The row as read is compared with IS NOT DISTINCT FROM, which no index serves, so
        // the row is always found by its primary key. With `jobstatus = $n` PostgreSQL may
        // walk an index on the status instead (upstream's layout has three, led by
        // `jobstatus`): statistics taken while a queue's jobs were all `activated` make every
        // other status look rare, and the walk then reads every job in that state.
        let mut statement = format!(
            "WITH updated AS (UPDATE {} SET {} WHERE pandaid = $1 \
             AND jobstatus IS NOT DISTINCT FROM ${old_status} \
             AND modificationtime IS NOT DISTINCT FROM ${} RETURNING {STATUS_LOG_SOURCE})",
            change.new_table.name(),
            assignments.join(", "),
            old_status + 1,
        );
        if self.logs_status_change(&change) {
            statement.push_str(&format!(
                ", logged AS ({})",
                self.status_log_from_updated(&mut values, change.now)
            ));
        }
        for (i, write) in change.side_writes.iter().enumerate() {
            match write.insert_sql(&change.job, JobSource::Updated, &mut values) {
                Some(insert) => statement.push_str(&format!(", side{i} AS ({insert})")),
                None => return Ok(Unlocked::NeedsLock),
            }
        }
        statement.push_str(" SELECT pandaid FROM updated");
        let written = tx.fetch(&statement, &values, &[ColumnType::BigInt]).await?;
        tx.commit().await?;
        Ok(match written.len() {
            0 => Unlocked::Raced,
            _ => Unlocked::Done(change.job, change.outcome),
        })
    }

    async fn change_job_in<F, R>(
        &self,
        panda_id: i64,
        details: bool,
        change: F,
    ) -> Result<(JobSpec, R)>
    where
        F: FnOnce(&mut JobSpec, &mut Vec<SideWrite>) -> Result<Decision<R>> + Send,
        R: Send,
    {
        let mut tx = self.begin(TxMode::Write).await?;
        let (job, old_table) = self
            .find_job_row_in(tx.as_mut(), panda_id, true, details)
            .await?
            .ok_or(StoreError::JobNotFound(panda_id))?;
        let change = match decide(panda_id, job, old_table, change)? {
            Decided::Keep(job, outcome) => return Ok((job, outcome)),
            Decided::Write(change) => change,
        };
        let sql = self.sql();
        let mut logged = false;
        if change.new_table == old_table {
            // Only the columns that changed: a heartbeat touches a handful of 127.
            let (mut values, assignments) = changed_columns(&change);
            let update = format!(
                "UPDATE {} SET {} WHERE pandaid = $1",
                old_table.name(),
                assignments.join(", ")
            );
            if self.logs_status_change(&change) && self.dialect() == Dialect::Postgres {
                // The status-log row in the same statement: one round trip less per change.
                let log = self.status_log_from_updated(&mut values, change.now);
                tx.execute(
                    &format!("WITH updated AS ({update} RETURNING {STATUS_LOG_SOURCE}) {log}"),
                    &values,
                )
                .await?;
                logged = true;
            } else if !assignments.is_empty() {
                tx.execute(&update, &values).await?;
            }
        } else {
            let id = [Value::Int(Some(panda_id))];
            let deleted = tx
                .execute(&sql.delete_job[table_index(old_table)], &id)
                .await?;
            if deleted != 1 {
                return Err(StoreError::Conflict(format!(
                    "job {panda_id} left {} while being moved",
                    old_table.name()
                )));
            }
            tx.execute(
                &sql.insert_job[table_index(change.new_table)],
                &job_row_params(&change.job, change.new_table),
            )
            .await?;
        }
        let job = change.job;
        for write in &change.side_writes {
            write.apply(tx.as_mut(), &job).await?;
        }
        if change.new_table == JobTable::Archived && old_table != JobTable::Archived {
            stamp_archived(tx.as_mut(), &job).await?;
        }
        if job.status() != change.unchanged.status() && !logged {
            self.record_status_in(tx.as_mut(), &job).await?;
        }
        tx.commit().await?;
        Ok((job, change.outcome))
    }

    /// Whether `change` writes a `jobs_statuslog` row.
    fn logs_status_change<R>(&self, change: &Change<R>) -> bool {
        change.job.status() != change.unchanged.status() && self.options().record_status_change
    }

    /// An INSERT into `jobs_statuslog` of the row RETURNING [`STATUS_LOG_SOURCE`] from a CTE
    /// named `updated`, binding its time and host after `values`.
    fn status_log_from_updated(
        &self,
        values: &mut Vec<Value>,
        now: chrono::NaiveDateTime,
    ) -> String {
        values.push(Value::Time(Some(now)));
        values.push(Value::Text(Some(self.options().host_name.clone())));
        let (at, host) = (values.len() - 1, values.len());
        status_log_from("updated", at, host)
    }

    /// Appends to `jobs_statuslog` when `record_statuschange` is on.
    pub(crate) async fn record_status_in(&self, tx: &mut dyn Tx, job: &JobSpec) -> Result<()> {
        self.record_status_at(tx, job, time::now()).await
    }

    async fn record_status_at(
        &self,
        tx: &mut dyn Tx,
        job: &JobSpec,
        at: chrono::NaiveDateTime,
    ) -> Result<()> {
        let options = self.options();
        if !options.record_status_change {
            return Ok(());
        }
        let now = Value::Time(Some(at));
        tx.execute(
            &format!("INSERT INTO jobs_statuslog ({STATUS_LOG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                job.get(JobAttr::PandaID).clone(),
                now.clone(),
                job.get(JobAttr::jobStatus).clone(),
                job.get(JobAttr::prodSourceLabel).clone(),
                job.get(JobAttr::cloud).clone(),
                job.get(JobAttr::computingSite).clone(),
                Value::Text(Some(options.host_name.clone())),
                now,
            ],
        )
        .await?;
        Ok(())
    }

    /// The table a job is in now, if it exists.
    pub async fn job_table(&self, panda_id: i64) -> Result<Option<JobTable>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let id = [Value::Int(Some(panda_id))];
        let mut found = None;
        for table in JobTable::ALL {
            let sql = format!("SELECT pandaid FROM {} WHERE pandaid = $1", table.name());
            if !tx.fetch(&sql, &id, &[ColumnType::BigInt]).await?.is_empty() {
                found = Some(table);
                break;
            }
        }
        tx.commit().await?;
        Ok(found)
    }
}

/// Moves the job's auxiliary rows out of the initial partition, as upstream's archiveJob.
async fn stamp_archived(tx: &mut dyn Tx, job: &JobSpec) -> Result<()> {
    let params = [
        job.get(JobAttr::modificationTime).clone(),
        Value::Int(Some(job.panda_id())),
    ];
    for table in ["filestable4", "jobparamstable", "metatable"] {
        tx.execute(
            &format!("UPDATE {table} SET modificationtime = $1 WHERE pandaid = $2"),
            &params,
        )
        .await?;
    }
    Ok(())
}

/// Takes `count` values from a sequence: `nextval` on PostgreSQL, a counter row on SQLite
/// (advanced under the write lock, so concurrent writers never share a value).
pub(crate) async fn next_ids(
    tx: &mut dyn Tx,
    dialect: Dialect,
    sequence: &str,
    count: usize,
) -> Result<Vec<i64>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let n = i64::try_from(count).map_err(|_| StoreError::Conflict("too many ids".into()))?;
    let big = [ColumnType::BigInt];
    match dialect {
        Dialect::Postgres => {
            let sql = format!("SELECT nextval('{sequence}') FROM generate_series(1, $1)");
            let rows = tx.fetch(&sql, &[Value::Int(Some(n))], &big).await?;
            rows.into_iter()
                .map(|r| r.first().and_then(Value::as_i64))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| StoreError::Corrupt(format!("{sequence} returned NULL")))
        }
        Dialect::Sqlite => {
            let rows = tx
                .fetch(
                    "UPDATE panda_sequences SET last_value = last_value + $1 WHERE name = $2 \
                     RETURNING last_value",
                    &[Value::Int(Some(n)), Value::Text(Some(sequence.into()))],
                    &big,
                )
                .await?;
            let last = rows
                .first()
                .and_then(|r| r.first())
                .and_then(Value::as_i64)
                .ok_or_else(|| StoreError::Corrupt(format!("sequence {sequence} is missing")))?;
            Ok((last - n + 1..=last).collect())
        }
    }
}
