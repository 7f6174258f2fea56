//! JEDI's side of a task: its datasets (`jedi_datasets`), their files
//! (`jedi_dataset_contents`), the job-parameter template (`jedi_jobparams_template`) and the
//! output templates (`jedi_output_template`), with the jobset ID from `users.jobid`.
//!
//! Every step that moves a task on is one transaction that first locks the task row and
//! checks its status, so two nodes running the same step cannot both apply it; files are
//! claimed for jobs with a compare-and-set on their status, so no file goes to two jobs.

use panda_core::jedi::{DATASET_ATTRIBUTES, TASK_FILE_ATTRIBUTES};
use panda_core::{
    time, AttrSet, Attribute, ColumnType, DatasetAttr, DatasetSpec, Record, TaskAttr, TaskFileAttr,
    TaskFileSpec, TaskSpec, Value,
};

use crate::bind::{placeholders, record_values};
use crate::driver::{Tx, TxMode};
use crate::error::{Result, StoreError};
use crate::jobs::{insert_rows, next_ids, MAX_STATEMENT_VALUES};
use crate::row::Columns;
use crate::Store;

const DATASET_ID_SEQUENCE: &str = "jedi_datasets_id_seq";
const FILE_ID_SEQUENCE: &str = "jedi_dataset_cont_fileid_seq";
const TEMPLATE_ID_SEQUENCE: &str = "jedi_output_template_id_seq";

/// The dataset types whose files are units of work (the master input).
pub const INPUT_TYPES: [&str; 2] = ["input", "pseudo_input"];

/// How a dataset's files are named (a row of `jedi_output_template`).
#[derive(Clone, Debug, PartialEq)]
pub struct OutputTemplate {
    pub dataset_id: i64,
    pub file_name_template: String,
    /// `LOG0`, `OUTPUT0`, ...
    pub stream: String,
    /// `log` or `output`.
    pub out_type: String,
    /// The next serial number (`${SN}`) to use.
    pub serial_nr: i64,
}

/// A dataset a refined task gets, with its output template when it receives files.
#[derive(Clone, Debug)]
pub struct NewDataset {
    pub spec: DatasetSpec,
    pub template: Option<OutputTemplate>,
}

/// What refinement made of a registered task.
#[derive(Clone, Debug)]
pub struct RefinedTask {
    /// The task with its refined attributes and its new status.
    pub task: TaskSpec,
    pub job_params_template: String,
    pub datasets: Vec<NewDataset>,
}

/// A task's datasets, templates and job-parameter template, as generation reads them.
#[derive(Clone, Debug, Default)]
pub struct TaskLayout {
    pub datasets: Vec<DatasetSpec>,
    pub templates: Vec<OutputTemplate>,
    pub job_params_template: String,
}

/// A built library as the jobs held for it get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLibrary {
    pub lfn: String,
    pub fsize: Option<i64>,
    pub checksum: Option<String>,
}

/// A file given to a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileClaim {
    pub dataset_id: i64,
    pub file_id: i64,
    pub panda_id: i64,
}

/// How a file's attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOutcome {
    Finished,
    /// Failed, with attempts left: back to `ready`.
    Retry,
    /// Failed for good.
    Failed,
}

/// The end of one attempt of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileResult {
    pub dataset_id: i64,
    pub file_id: i64,
    pub outcome: FileOutcome,
    /// Whether the attempt counts against `maxFailure` (not for killed jobs).
    pub counts_as_failure: bool,
}

/// Files of a task's master input by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub total: i64,
    pub ready: i64,
    pub running: i64,
    pub finished: i64,
    pub failed: i64,
}

pub(crate) fn select_list(attributes: &[Attribute], prefix: &str) -> String {
    attributes
        .iter()
        .map(|a| format!("{prefix}{}", a.column()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn types(attributes: &[Attribute]) -> Vec<ColumnType> {
    attributes.iter().map(|a| a.column_type).collect()
}

fn records<A: AttrSet>(rows: Vec<Vec<Value>>) -> Result<Vec<Record<A>>> {
    rows.into_iter()
        .map(|row| {
            Record::from_values(row)
                .ok_or_else(|| StoreError::Corrupt("a JEDI row has the wrong width".into()))
        })
        .collect()
}

/// Inserts records with as few statements as the bound-value limit allows.
async fn insert_records<A: AttrSet>(
    tx: &mut dyn Tx,
    table: &str,
    records: &[Record<A>],
) -> Result<()> {
    let columns: Vec<String> = A::attributes().iter().map(|a| a.column()).collect();
    insert_rows(
        tx,
        table,
        &columns,
        records.iter().map(record_values).collect(),
    )
    .await
}

fn int(v: i64) -> Value {
    Value::Int(Some(v))
}

fn text(v: &str) -> Value {
    Value::Text(Some(v.to_string()))
}

impl Store {
    /// Tasks in one of `statuses`, oldest first, at most `limit`.
    pub async fn tasks_in_status(&self, statuses: &[&str], limit: i64) -> Result<Vec<TaskSpec>> {
        let mut params: Vec<Value> = statuses.iter().map(|s| text(s)).collect();
        params.push(int(limit));
        let sql = format!(
            "SELECT {} FROM jedi_tasks WHERE status IN ({}) ORDER BY jeditaskid LIMIT ${}",
            crate::tasks::select_list(self.dialect()),
            placeholders(1, statuses.len()),
            params.len()
        );
        let rows = self
            .query(&sql, &params, &crate::tasks::task_types())
            .await?;
        records(rows)
    }

    /// Stores a refinement if the task is still `registered`: its datasets, templates and
    /// job-parameter template, the task's new attributes, and `reqID` from the owner's next
    /// jobset ID (`users.jobid`). `false` when the task moved on meanwhile.
    pub async fn register_refined_task(&self, refined: &RefinedTask) -> Result<bool> {
        let dialect = self.dialect();
        let task_id = refined
            .task
            .get_i64(TaskAttr::jediTaskID)
            .unwrap_or_default();
        let mut tx = self.begin(TxMode::Write).await?;
        let Some(current) = self.find_task_in(tx.as_mut(), task_id, true).await? else {
            tx.commit().await?;
            return Ok(false);
        };
        if current.get_str(TaskAttr::status) != Some("registered") {
            tx.commit().await?;
            return Ok(false);
        }
        let owner = current
            .get_str(TaskAttr::userName)
            .unwrap_or_default()
            .to_string();
        let jobset = self.next_jobset_id_in(tx.as_mut(), &owner).await?;
        let now = Value::Time(Some(time::now()));
        let ids = next_ids(
            tx.as_mut(),
            dialect,
            DATASET_ID_SEQUENCE,
            refined.datasets.len(),
        )
        .await?;
        for (dataset, id) in refined.datasets.iter().zip(ids) {
            let spec = new_dataset_row(&dataset.spec, task_id, id, &now);
            insert_records(tx.as_mut(), "jedi_datasets", std::slice::from_ref(&spec)).await?;
            if let Some(template) = &dataset.template {
                let template_id = next_ids(tx.as_mut(), dialect, TEMPLATE_ID_SEQUENCE, 1)
                    .await?
                    .pop()
                    .unwrap_or_default();
                tx.execute(
                    "INSERT INTO jedi_output_template (jeditaskid, datasetid, outtempid, \
                     filenametemplate, serialnr, streamname, outtype) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        int(task_id),
                        int(id),
                        int(template_id),
                        text(&template.file_name_template),
                        int(template.serial_nr),
                        text(&template.stream),
                        text(&template.out_type),
                    ],
                )
                .await?;
            }
        }
        tx.execute(
            "INSERT INTO jedi_jobparams_template (jeditaskid, jobparamstemplate) VALUES ($1, $2)",
            &[int(task_id), text(&refined.job_params_template)],
        )
        .await?;
        let mut task = refined.task.clone();
        task.set(TaskAttr::reqID, int(jobset));
        self.write_task_in(tx.as_mut(), &mut task, current.get(TaskAttr::status))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The user's next jobset ID: `users.jobid` plus one, the user's row made if needed.
    async fn next_jobset_id_in(&self, tx: &mut dyn Tx, user: &str) -> Result<i64> {
        let rows = tx
            .fetch(
                "UPDATE users SET jobid = jobid + 1 WHERE name = $1 RETURNING jobid",
                &[text(user)],
                &[ColumnType::BigInt],
            )
            .await?;
        if let Some(id) = rows.first().and_then(|r| r.first()).and_then(Value::as_i64) {
            return Ok(id);
        }
        // Upstream's first jobset ID of a new user is 2 (the row starts at 1, then one is taken).
        crate::users::insert_user_in(tx, self.dialect(), user, "jobid", int(2)).await?;
        Ok(2)
    }

    /// A task's datasets, output templates and job-parameter template.
    pub async fn task_layout(&self, task_id: i64) -> Result<TaskLayout> {
        let mut tx = self.begin(TxMode::Read).await?;
        let datasets = tx
            .fetch(
                &format!(
                    "SELECT {} FROM jedi_datasets WHERE jeditaskid = $1 ORDER BY datasetid",
                    select_list(DATASET_ATTRIBUTES, "")
                ),
                &[int(task_id)],
                &types(DATASET_ATTRIBUTES),
            )
            .await?;
        let templates = tx
            .fetch(
                "SELECT datasetid, filenametemplate, streamname, outtype, serialnr \
                 FROM jedi_output_template WHERE jeditaskid = $1 ORDER BY outtempid",
                &[int(task_id)],
                &[
                    ColumnType::BigInt,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::BigInt,
                ],
            )
            .await?;
        let template = tx
            .fetch(
                "SELECT jobparamstemplate FROM jedi_jobparams_template WHERE jeditaskid = $1",
                &[int(task_id)],
                &[ColumnType::Text],
            )
            .await?;
        tx.commit().await?;
        Ok(TaskLayout {
            datasets: records(datasets)?,
            templates: templates
                .into_iter()
                .map(|r| OutputTemplate {
                    dataset_id: r[0].as_i64().unwrap_or_default(),
                    file_name_template: r[1].render(),
                    stream: r[2].render(),
                    out_type: r[3].render(),
                    serial_nr: r[4].as_i64().unwrap_or(1),
                })
                .collect(),
            job_params_template: template
                .first()
                .and_then(|r| r.first())
                .map(Value::render)
                .unwrap_or_default(),
        })
    }

    /// Adds the files of a `defined` task's master input and makes the task `ready`:
    /// the dataset's file and event counts are set and the dataset is `ready`. `false` when
    /// the task is no longer `defined`.
    pub async fn add_task_files(
        &self,
        task_id: i64,
        dataset_id: i64,
        files: &[TaskFileSpec],
    ) -> Result<bool> {
        let mut tx = self.begin(TxMode::Write).await?;
        let Some(mut task) = self.find_task_in(tx.as_mut(), task_id, true).await? else {
            tx.commit().await?;
            return Ok(false);
        };
        if task.get_str(TaskAttr::status) != Some("defined") {
            tx.commit().await?;
            return Ok(false);
        }
        let ids = next_ids(tx.as_mut(), self.dialect(), FILE_ID_SEQUENCE, files.len()).await?;
        let now = Value::Time(Some(time::now()));
        let mut events = 0;
        let rows: Vec<TaskFileSpec> = files
            .iter()
            .zip(ids)
            .map(|(file, id)| {
                let mut file = file.clone();
                file.set(TaskFileAttr::jediTaskID, int(task_id));
                file.set(TaskFileAttr::datasetID, int(dataset_id));
                file.set(TaskFileAttr::fileID, int(id));
                file.set(TaskFileAttr::creationDate, now.clone());
                events += file.get_i64(TaskFileAttr::nEvents).unwrap_or(0);
                file
            })
            .collect();
        insert_records(tx.as_mut(), "jedi_dataset_contents", &rows).await?;
        tx.execute(
            "UPDATE jedi_datasets SET status = 'ready', nfiles = $3, nfilestobeused = $3, \
             nfilesused = 0, nfilesfinished = 0, nfilesfailed = 0, nfilesonhold = 0, \
             nevents = $4, neventstobeused = $4, neventsused = 0, modificationtime = $5 \
             WHERE jeditaskid = $1 AND datasetid = $2",
            &[
                int(task_id),
                int(dataset_id),
                int(files.len() as i64),
                int(events),
                now,
            ],
        )
        .await?;
        let old = task.get(TaskAttr::status).clone();
        task.set(TaskAttr::status, text("ready"));
        task.set(TaskAttr::superStatus, text("ready"));
        self.write_task_in(tx.as_mut(), &mut task, &old).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Files of the task's master input waiting for a job, lowest first.
    pub async fn ready_task_files(&self, task_id: i64, limit: i64) -> Result<Vec<TaskFileSpec>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {} FROM jedi_dataset_contents WHERE jeditaskid = $1 \
                     AND status = 'ready' AND type IN ('input', 'pseudo_input') \
                     ORDER BY datasetid, fileid LIMIT $2",
                    select_list(TASK_FILE_ATTRIBUTES, "")
                ),
                &[int(task_id), int(limit)],
                &types(TASK_FILE_ATTRIBUTES),
            )
            .await?;
        records(rows)
    }

    /// Gives files to jobs and takes the serial numbers the jobs' outputs will carry: each
    /// file moves `ready → running` with its job's PandaID, and each template's `serialnr`
    /// moves on by `count`. Returns the first serial number per template's dataset, or
    /// `None` (and changes nothing) when a file was no longer `ready`.
    pub async fn claim_task_files(
        &self,
        task_id: i64,
        claims: &[FileClaim],
        serials: &[(i64, i64)],
    ) -> Result<Option<Vec<(i64, i64)>>> {
        let mut tx = self.begin(TxMode::Write).await?;
        let now = Value::Time(Some(time::now()));
        // One statement per chunk: the files and their jobs as a VALUES list, each file
        // moved only if it is still `ready`.
        for chunk in claims.chunks(MAX_STATEMENT_VALUES / 3) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = 3 + 3 * i;
                    format!(
                        "(CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                        p,
                        p + 1,
                        p + 2
                    )
                })
                .collect();
            let mut params = vec![int(task_id), now.clone()];
            for claim in chunk {
                params.extend([
                    int(claim.dataset_id),
                    int(claim.file_id),
                    int(claim.panda_id),
                ]);
            }
            let changed = tx
                .execute(
                    &format!(
                        "WITH v (datasetid, fileid, pandaid) AS (VALUES {}) \
                         UPDATE jedi_dataset_contents SET status = 'running', \
                         pandaid = v.pandaid, lastattempttime = $2, proc_status = 'running' \
                         FROM v WHERE jedi_dataset_contents.jeditaskid = $1 \
                         AND jedi_dataset_contents.datasetid = v.datasetid \
                         AND jedi_dataset_contents.fileid = v.fileid \
                         AND jedi_dataset_contents.status = 'ready'",
                        rows.join(", ")
                    ),
                    &params,
                )
                .await?;
            if changed != chunk.len() as u64 {
                // Dropped uncommitted: nothing of this claim is kept.
                drop(tx);
                return Ok(None);
            }
        }
        let mut used: std::collections::BTreeMap<i64, i64> = Default::default();
        for claim in claims {
            *used.entry(claim.dataset_id).or_default() += 1;
        }
        for (dataset, n) in used {
            tx.execute(
                "UPDATE jedi_datasets SET nfilesused = COALESCE(nfilesused, 0) + $3, \
                 status = 'running', modificationtime = $4 \
                 WHERE jeditaskid = $1 AND datasetid = $2",
                &[int(task_id), int(dataset), int(n), now.clone()],
            )
            .await?;
        }
        let mut first = Vec::with_capacity(serials.len());
        for (dataset, count) in serials {
            let rows = tx
                .fetch(
                    "UPDATE jedi_output_template SET serialnr = COALESCE(serialnr, 1) + $3 \
                     WHERE jeditaskid = $1 AND datasetid = $2 RETURNING serialnr",
                    &[int(task_id), int(*dataset), int(*count)],
                    &[ColumnType::BigInt],
                )
                .await?;
            let next = rows
                .first()
                .and_then(|r| r.first())
                .and_then(Value::as_i64)
                .ok_or_else(|| {
                    StoreError::Corrupt(format!("no output template for dataset {dataset}"))
                })?;
            first.push((*dataset, next - count));
        }
        tx.commit().await?;
        Ok(Some(first))
    }

    /// Up to `limit` of the task's files given to jobs that have ended (archived) and not yet
    /// accounted for, each with its job's final status. Read from the archived jobs of the
    /// task, so the cost follows the jobs that ended, not the files still running.
    pub async fn ended_task_files(
        &self,
        task_id: i64,
        limit: i64,
    ) -> Result<Vec<(TaskFileSpec, String)>> {
        let mut columns = types(TASK_FILE_ATTRIBUTES);
        columns.push(ColumnType::Text);
        let rows = self
            .query(
                &format!(
                    "SELECT {}, j.jobstatus FROM jobsarchived4 j \
                     JOIN jedi_dataset_contents c \
                     ON c.jeditaskid = j.jeditaskid AND c.pandaid = j.pandaid \
                     WHERE j.jeditaskid = $1 AND c.status = 'running' LIMIT $2",
                    select_list(TASK_FILE_ATTRIBUTES, "c.")
                ),
                &[int(task_id), int(limit)],
                &columns,
            )
            .await?;
        rows.into_iter()
            .map(|mut row| {
                let status = row.pop().map(|v| v.render()).unwrap_or_default();
                let file = Record::from_values(row)
                    .ok_or_else(|| StoreError::Corrupt("a JEDI row has the wrong width".into()))?;
                Ok((file, status))
            })
            .collect()
    }

    /// Up to `limit` of the task's running files given out before `before` whose job is in no
    /// job table: the generator stopped between claiming them and storing their jobs.
    pub async fn lost_task_files(
        &self,
        task_id: i64,
        before: chrono::NaiveDateTime,
        limit: i64,
    ) -> Result<Vec<TaskFileSpec>> {
        let absent: Vec<String> = panda_core::JobTable::ALL
            .iter()
            .map(|t| {
                format!(
                    "NOT EXISTS (SELECT 1 FROM {} j WHERE j.pandaid = c.pandaid)",
                    t.name()
                )
            })
            .collect();
        let rows = self
            .query(
                &format!(
                    "SELECT {} FROM jedi_dataset_contents c WHERE c.jeditaskid = $1 \
                     AND c.status = 'running' AND c.lastattempttime < $2 AND {} LIMIT $3",
                    select_list(TASK_FILE_ATTRIBUTES, "c."),
                    absent.join(" AND ")
                ),
                &[int(task_id), Value::Time(Some(before)), int(limit)],
                &types(TASK_FILE_ATTRIBUTES),
            )
            .await?;
        records(rows)
    }

    /// The output and log files of finished jobs (`filestable4`), as new rows of their
    /// task's datasets: status `finished`, with the size and checksum the pilot reported.
    pub async fn finished_job_outputs(&self, panda_ids: &[i64]) -> Result<Vec<TaskFileSpec>> {
        static OUT: Columns = Columns(&[
            ("pandaid", ColumnType::BigInt),
            ("datasetid", ColumnType::BigInt),
            ("lfn", ColumnType::Text),
            ("guid", ColumnType::Text),
            ("type", ColumnType::Text),
            ("fsize", ColumnType::BigInt),
            ("checksum", ColumnType::Text),
            ("scope", ColumnType::Text),
            ("attemptnr", ColumnType::BigInt),
        ]);
        let mut files = Vec::new();
        let mut tx = self.begin(TxMode::Read).await?;
        for chunk in panda_ids.chunks(MAX_STATEMENT_VALUES / 10) {
            let sql = format!(
                "SELECT {} FROM filestable4 WHERE pandaid IN ({}) \
                 AND type IN ('output', 'log') AND datasetid IS NOT NULL",
                OUT.select_list(""),
                placeholders(1, chunk.len())
            );
            let params: Vec<Value> = chunk.iter().map(|i| int(*i)).collect();
            for row in tx.fetch(&sql, &params, &OUT.types()).await? {
                let r = OUT.read(&row);
                let mut file = TaskFileSpec::new();
                file.set(TaskFileAttr::PandaID, int(r.int("pandaid")?));
                file.set(TaskFileAttr::datasetID, int(r.int("datasetid")?));
                for (attr, column) in [
                    (TaskFileAttr::lfn, "lfn"),
                    (TaskFileAttr::GUID, "guid"),
                    (TaskFileAttr::r#type, "type"),
                    (TaskFileAttr::checksum, "checksum"),
                    (TaskFileAttr::scope, "scope"),
                ] {
                    file.set(attr, Value::Text(r.opt_text(column)?));
                }
                file.set(TaskFileAttr::fsize, Value::Int(r.opt_int("fsize")?));
                file.set(TaskFileAttr::attemptNr, Value::Int(r.opt_int("attemptnr")?));
                file.set(TaskFileAttr::status, text("finished"));
                file.set(TaskFileAttr::keepTrack, int(1));
                files.push(file);
            }
        }
        tx.commit().await?;
        Ok(files)
    }

    /// Accounts for ended attempts: each file's status and attempt, its dataset's counters,
    /// and the output files the finished jobs made (new rows of their datasets).
    pub async fn record_file_results(
        &self,
        task_id: i64,
        results: &[FileResult],
        outputs: &[TaskFileSpec],
    ) -> Result<()> {
        let mut tx = self.begin(TxMode::Write).await?;
        let now = Value::Time(Some(time::now()));
        // One statement per chunk moves each file on (if it is still `running`) and returns
        // what it moved; the datasets' counters then move by those counts.
        let mut moved: std::collections::BTreeMap<i64, [i64; 3]> = Default::default();
        for chunk in results.chunks(MAX_STATEMENT_VALUES / 4) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = 2 + 4 * i;
                    format!(
                        "(CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS TEXT), \
                         CAST(${} AS BIGINT))",
                        p,
                        p + 1,
                        p + 2,
                        p + 3
                    )
                })
                .collect();
            let mut params = vec![int(task_id)];
            for result in chunk {
                let status = match result.outcome {
                    FileOutcome::Finished => "finished",
                    FileOutcome::Retry => "ready",
                    FileOutcome::Failed => "failed",
                };
                let failure = result.counts_as_failure && result.outcome != FileOutcome::Finished;
                params.extend([
                    int(result.dataset_id),
                    int(result.file_id),
                    text(status),
                    int(i64::from(failure)),
                ]);
            }
            let changed = tx
                .fetch(
                    &format!(
                        "WITH v (datasetid, fileid, status, failure) AS (VALUES {}) \
                         UPDATE jedi_dataset_contents SET status = v.status, \
                         proc_status = v.status, \
                         attemptnr = COALESCE(jedi_dataset_contents.attemptnr, 0) + 1, \
                         failedattempt = COALESCE(jedi_dataset_contents.failedattempt, 0) \
                         + v.failure \
                         FROM v WHERE jedi_dataset_contents.jeditaskid = $1 \
                         AND jedi_dataset_contents.datasetid = v.datasetid \
                         AND jedi_dataset_contents.fileid = v.fileid \
                         AND jedi_dataset_contents.status = 'running' \
                         RETURNING jedi_dataset_contents.datasetid, jedi_dataset_contents.status",
                        rows.join(", ")
                    ),
                    &params,
                    &[ColumnType::BigInt, ColumnType::Text],
                )
                .await?;
            for row in changed {
                let dataset = row[0].as_i64().unwrap_or_default();
                let slot = match row[1].as_str() {
                    Some("finished") => 0,
                    Some("failed") => 1,
                    _ => 2,
                };
                moved.entry(dataset).or_default()[slot] += 1;
            }
        }
        for (dataset, [finished, failed, retried]) in moved {
            tx.execute(
                "UPDATE jedi_datasets SET nfilesfinished = COALESCE(nfilesfinished, 0) + $3, \
                 nfilesfailed = COALESCE(nfilesfailed, 0) + $4, \
                 nfilesused = COALESCE(nfilesused, 0) - $5, modificationtime = $6 \
                 WHERE jeditaskid = $1 AND datasetid = $2",
                &[
                    int(task_id),
                    int(dataset),
                    int(finished),
                    int(failed),
                    int(retried),
                    now.clone(),
                ],
            )
            .await?;
        }
        let ids = next_ids(tx.as_mut(), self.dialect(), FILE_ID_SEQUENCE, outputs.len()).await?;
        let mut per_dataset: std::collections::BTreeMap<i64, i64> = Default::default();
        let rows: Vec<TaskFileSpec> = outputs
            .iter()
            .zip(ids)
            .map(|(file, id)| {
                let mut file = file.clone();
                file.set(TaskFileAttr::jediTaskID, int(task_id));
                file.set(TaskFileAttr::fileID, int(id));
                file.set(TaskFileAttr::creationDate, now.clone());
                *per_dataset
                    .entry(file.get_i64(TaskFileAttr::datasetID).unwrap_or_default())
                    .or_default() += 1;
                file
            })
            .collect();
        insert_records(tx.as_mut(), "jedi_dataset_contents", &rows).await?;
        for (dataset, n) in per_dataset {
            tx.execute(
                "UPDATE jedi_datasets SET nfiles = COALESCE(nfiles, 0) + $3, \
                 nfilesfinished = COALESCE(nfilesfinished, 0) + $3, modificationtime = $4 \
                 WHERE jeditaskid = $1 AND datasetid = $2",
                &[int(task_id), int(dataset), int(n), now.clone()],
            )
            .await?;
        }
        tx.commit().await
    }

    /// The task's master-input files by status.
    pub async fn master_file_counts(&self, task_id: i64) -> Result<FileCounts> {
        let rows = self
            .query(
                "SELECT status, COUNT(*) FROM jedi_dataset_contents WHERE jeditaskid = $1 \
                 AND type IN ('input', 'pseudo_input') GROUP BY status",
                &[int(task_id)],
                &[ColumnType::Text, ColumnType::BigInt],
            )
            .await?;
        let mut counts = FileCounts::default();
        for row in rows {
            let n = row[1].as_i64().unwrap_or(0);
            counts.total += n;
            match row[0].as_str().unwrap_or("") {
                "ready" => counts.ready += n,
                "running" => counts.running += n,
                "finished" => counts.finished += n,
                "failed" => counts.failed += n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Gives failed files of the task `extra` more attempts and makes them `ready` again (a
    /// retry of the task); returns how many.
    pub async fn reset_failed_files(&self, task_id: i64, extra: i64) -> Result<u64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let reset = tx
            .execute(
                "UPDATE jedi_dataset_contents SET status = 'ready', proc_status = 'ready', \
                 maxattempt = COALESCE(attemptnr, 0) + $2 \
                 WHERE jeditaskid = $1 AND status = 'failed' \
                 AND type IN ('input', 'pseudo_input')",
                &[int(task_id), int(extra)],
            )
            .await?;
        // A library that failed its attempts gets as many more: its next build runs first.
        tx.execute(
            "UPDATE jedi_dataset_contents SET status = 'ready', proc_status = 'ready', \
             maxattempt = COALESCE(attemptnr, 0) + $2 \
             WHERE jeditaskid = $1 AND status = 'failed' AND type = 'lib'",
            &[int(task_id), int(extra)],
        )
        .await?;
        recount_inputs_in(tx.as_mut(), task_id).await?;
        tx.commit().await?;
        Ok(reset)
    }

    /// `task/increase_attempts`: `increase` more attempts for every file of the master input
    /// still to run (past its attempts or not), and the files that had used them all made
    /// `ready` again. Returns (files given more attempts, files made ready again).
    pub async fn increase_file_attempts(&self, task_id: i64, increase: i64) -> Result<(u64, u64)> {
        let mut tx = self.begin(TxMode::Write).await?;
        let params = [int(task_id), int(increase)];
        let increased = tx
            .execute(
                "UPDATE jedi_dataset_contents SET maxattempt = CASE \
                 WHEN COALESCE(maxattempt, 0) > COALESCE(attemptnr, 0) THEN maxattempt + $2 \
                 ELSE COALESCE(attemptnr, 0) + $2 END, \
                 maxfailure = CASE WHEN maxfailure IS NULL THEN NULL ELSE maxfailure + $2 END \
                 WHERE jeditaskid = $1 AND status = 'ready' AND type IN ('input', 'pseudo_input')",
                &params,
            )
            .await?;
        let reactivated = tx
            .execute(
                "UPDATE jedi_dataset_contents SET status = 'ready', proc_status = 'ready', \
                 maxattempt = COALESCE(attemptnr, 0) + $2, \
                 maxfailure = CASE WHEN maxfailure IS NULL THEN NULL ELSE maxfailure + $2 END \
                 WHERE jeditaskid = $1 AND status = 'failed' AND type IN ('input', 'pseudo_input')",
                &params,
            )
            .await?;
        recount_inputs_in(tx.as_mut(), task_id).await?;
        tx.commit().await?;
        Ok((increased + reactivated, reactivated))
    }

    /// `task/reactivate`: every file of the master input `ready` again (with its attempts
    /// reset unless `keep_attempt_nr`); returns how many.
    pub async fn reactivate_task_files(&self, task_id: i64, keep_attempt_nr: bool) -> Result<u64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let reset = match keep_attempt_nr {
            true => "",
            false => ", attemptnr = 0, failedattempt = 0",
        };
        let files = tx
            .execute(
                &format!(
                    "UPDATE jedi_dataset_contents SET status = 'ready', proc_status = 'ready'{reset} \
                     WHERE jeditaskid = $1 AND type IN ('input', 'pseudo_input')"
                ),
                &[int(task_id)],
            )
            .await?;
        recount_inputs_in(tx.as_mut(), task_id).await?;
        tx.commit().await?;
        Ok(files)
    }

    /// Sets the task's current priority and that of its jobs not yet running; `false` when
    /// the task does not exist.
    pub async fn set_task_priority(&self, task_id: i64, priority: i64) -> Result<bool> {
        let params = [int(task_id), int(priority)];
        self.set_on_task_and_jobs("currentpriority = $2", "", "", &params, &params)
            .await
    }

    /// `UPDATE jedi_tasks SET <set> WHERE jeditaskid = $1<task_filter>`, and, when that
    /// changed the task, the same `SET` on its jobs in `jobsdefined4` and `jobsactive4`
    /// (`<jobs_filter>` narrowing them, with `job_params`), in one transaction; whether the
    /// task changed.
    async fn set_on_task_and_jobs(
        &self,
        set: &str,
        task_filter: &str,
        jobs_filter: &str,
        params: &[Value],
        job_params: &[Value],
    ) -> Result<bool> {
        let mut tx = self.begin(TxMode::Write).await?;
        let changed = tx
            .execute(
                &format!("UPDATE jedi_tasks SET {set} WHERE jeditaskid = $1{task_filter}"),
                params,
            )
            .await?;
        if changed == 1 {
            for table in ["jobsdefined4", "jobsactive4"] {
                tx.execute(
                    &format!("UPDATE {table} SET {set} WHERE jeditaskid = $1{jobs_filter}"),
                    job_params,
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Sets the task's `modificationTime` (which JEDI's agents order their work by); `false`
    /// when the task does not exist.
    pub async fn set_task_modification_time(
        &self,
        task_id: i64,
        at: chrono::NaiveDateTime,
    ) -> Result<bool> {
        let mut tx = self.begin(TxMode::Write).await?;
        let changed = tx
            .execute(
                "UPDATE jedi_tasks SET modificationtime = $2 WHERE jeditaskid = $1",
                &[int(task_id), Value::Time(Some(at))],
            )
            .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// The task's datasets of the given types with their files (`lfn`, `scope`, `fileid`,
    /// `status`), at most `max_files` files in all.
    pub async fn task_datasets_and_files(
        &self,
        task_id: i64,
        kinds: &[String],
        max_files: i64,
    ) -> Result<Vec<DatasetFiles>> {
        let mut tx = self.begin(TxMode::Read).await?;
        let mut params = vec![int(task_id)];
        params.extend(kinds.iter().map(|k| text(k)));
        let datasets = tx
            .fetch(
                &format!(
                    "SELECT datasetname, datasetid FROM jedi_datasets WHERE jeditaskid = $1 \
                     AND type IN ({}) ORDER BY datasetid",
                    placeholders(2, kinds.len())
                ),
                &params,
                &[ColumnType::Text, ColumnType::BigInt],
            )
            .await?;
        let mut out = Vec::with_capacity(datasets.len());
        let mut left = max_files;
        for row in datasets {
            let id = row[1].as_i64().unwrap_or_default();
            let files = tx
                .fetch(
                    "SELECT lfn, scope, fileid, status FROM jedi_dataset_contents \
                     WHERE jeditaskid = $1 AND datasetid = $2 ORDER BY fileid LIMIT $3",
                    &[int(task_id), int(id), int(left.max(0))],
                    &[
                        ColumnType::Text,
                        ColumnType::Text,
                        ColumnType::BigInt,
                        ColumnType::Text,
                    ],
                )
                .await?;
            left -= files.len() as i64;
            out.push(DatasetFiles {
                name: row[0].render(),
                id,
                files: files
                    .into_iter()
                    .map(|f| DatasetFile {
                        lfn: f[0].render(),
                        scope: f[1].as_str().map(str::to_string),
                        id: f[2].as_i64().unwrap_or_default(),
                        status: f[3].render(),
                    })
                    .collect(),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The metadata finished user jobs of the task reported (`metatable`), by PandaID, at
    /// most `limit`.
    pub async fn analysis_job_metadata(
        &self,
        task_id: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let rows = self
            .query(
                "SELECT j.pandaid, m.metadata FROM jobsarchived4 j \
                 JOIN metatable m ON m.pandaid = j.pandaid \
                 WHERE j.jeditaskid = $1 AND j.jobstatus = 'finished' \
                 AND j.prodsourcelabel = 'user' ORDER BY j.pandaid LIMIT $2",
                &[int(task_id), int(limit)],
                &[ColumnType::BigInt, ColumnType::Text],
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r[0].as_i64()?, r[1].as_str()?.to_string())))
            .collect())
    }
}

impl Store {
    /// The task's build libraries (the files of its `lib` datasets, one per site), oldest
    /// first.
    pub async fn lib_files(&self, task_id: i64) -> Result<Vec<TaskFileSpec>> {
        let rows = self
            .query(
                &format!(
                    "SELECT {} FROM jedi_dataset_contents WHERE jeditaskid = $1 AND type = 'lib' \
                     ORDER BY fileid",
                    select_list(TASK_FILE_ATTRIBUTES, "")
                ),
                &[int(task_id)],
                &types(TASK_FILE_ATTRIBUTES),
            )
            .await?;
        records(rows)
    }

    /// Records the build of a library by the job `file.PandaID`: the library file,
    /// `running`, in its `lib` dataset (`file.datasetID`), unless that dataset has a library
    /// already (then `false`: another generator started it).
    pub async fn start_build(&self, task_id: i64, file: &TaskFileSpec) -> Result<bool> {
        let dataset = file.get(TaskFileAttr::datasetID).clone();
        let mut tx = self.begin(TxMode::Write).await?;
        if self
            .find_task_in(tx.as_mut(), task_id, true)
            .await?
            .is_none()
        {
            tx.commit().await?;
            return Ok(false);
        }
        let existing = tx
            .fetch(
                "SELECT fileid FROM jedi_dataset_contents WHERE jeditaskid = $1 \
                 AND datasetid = $2 AND type = 'lib'",
                &[int(task_id), dataset.clone()],
                &[ColumnType::BigInt],
            )
            .await?;
        if !existing.is_empty() {
            tx.commit().await?;
            return Ok(false);
        }
        let id = next_ids(tx.as_mut(), self.dialect(), FILE_ID_SEQUENCE, 1)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("the file ID sequence gave nothing".into()))?;
        let mut row = file.clone();
        row.set(TaskFileAttr::jediTaskID, int(task_id));
        row.set(TaskFileAttr::fileID, int(id));
        row.set(TaskFileAttr::creationDate, Value::Time(Some(time::now())));
        row.set(
            TaskFileAttr::lastAttemptTime,
            Value::Time(Some(time::now())),
        );
        insert_records(tx.as_mut(), "jedi_dataset_contents", &[row]).await?;
        tx.execute(
            "UPDATE jedi_datasets SET status = 'running', nfiles = 1, nfilesused = 1 \
             WHERE jeditaskid = $1 AND datasetid = $2",
            &[int(task_id), dataset],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The task's datasets at `site` after adding those of `wanted` it lacks: a wanted
    /// dataset is there when one of the same type and `templateID` has that site. Under the
    /// task's row lock, so two generators never make the same site's dataset twice. A
    /// `${DATASETID}` in a new dataset's name becomes its ID.
    pub async fn add_site_datasets(
        &self,
        task_id: i64,
        site: &str,
        wanted: &[DatasetSpec],
    ) -> Result<Vec<DatasetSpec>> {
        let mut tx = self.begin(TxMode::Write).await?;
        if self
            .find_task_in(tx.as_mut(), task_id, true)
            .await?
            .is_none()
        {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let present = site_datasets_in(tx.as_mut(), task_id, site).await?;
        let missing: Vec<&DatasetSpec> = wanted
            .iter()
            .filter(|w| !present.iter().any(|p| same_site_dataset(p, w)))
            .collect();
        if missing.is_empty() {
            tx.commit().await?;
            return Ok(present);
        }
        let ids = next_ids(
            tx.as_mut(),
            self.dialect(),
            DATASET_ID_SEQUENCE,
            missing.len(),
        )
        .await?;
        let now = Value::Time(Some(time::now()));
        let rows: Vec<DatasetSpec> = missing
            .into_iter()
            .zip(ids)
            .map(|(spec, id)| {
                let mut spec = new_dataset_row(spec, task_id, id, &now);
                spec.set(DatasetAttr::site, text(site));
                spec
            })
            .collect();
        insert_records(tx.as_mut(), "jedi_datasets", &rows).await?;
        let all = site_datasets_in(tx.as_mut(), task_id, site).await?;
        tx.commit().await?;
        Ok(all)
    }

    /// Upstream's Activator: up to `limit` of the task's jobs waiting `assigned` at `site`
    /// for the library `lib.lfn` get it (its size and checksum, `ready`), and those whose
    /// inputs are now all ready move to `jobsactive4` as `activated`, with their status-log
    /// rows; one transaction of at most six statements. A job with another input still on its
    /// way stays `assigned` for the data-management step. Returns how many jobs got the
    /// library and the PandaIDs activated.
    pub async fn activate_held_jobs(
        &self,
        task_id: i64,
        site: &str,
        lib: &HeldLibrary,
        limit: i64,
    ) -> Result<(usize, Vec<i64>)> {
        let lock = self.dialect().row_lock();
        let mut tx = self.begin(TxMode::Write).await?;
        let ids_of = |rows: Vec<Vec<Value>>| -> Vec<i64> {
            rows.into_iter()
                .filter_map(|r| r.first().and_then(Value::as_i64))
                .collect()
        };
        let waiting = ids_of(
            tx.fetch(
                &format!(
                    "SELECT j.pandaid FROM jobsdefined4 j WHERE j.jeditaskid = $1 \
                     AND j.computingsite = $2 AND j.jobstatus = 'assigned' AND EXISTS \
                     (SELECT 1 FROM filestable4 f WHERE f.pandaid = j.pandaid AND f.lfn = $3 \
                     AND f.type = 'input' AND f.status <> 'ready') \
                     ORDER BY j.pandaid LIMIT $4{lock}"
                ),
                &[
                    int(task_id),
                    text(site),
                    text(&lib.lfn),
                    int(limit.clamp(0, MAX_STATEMENT_VALUES as i64 / 2)),
                ],
                &[ColumnType::BigInt],
            )
            .await?,
        );
        if waiting.is_empty() {
            tx.commit().await?;
            return Ok((0, waiting));
        }
        let values = |ids: &[i64]| -> Vec<Value> { ids.iter().map(|i| int(*i)).collect() };
        let mut params = vec![
            text(&lib.lfn),
            Value::Int(lib.fsize),
            Value::Text(lib.checksum.clone()),
        ];
        params.extend(values(&waiting));
        tx.execute(
            &format!(
                "UPDATE filestable4 SET status = 'ready', fsize = $2, checksum = $3 \
                 WHERE lfn = $1 AND type = 'input' AND pandaid IN ({})",
                placeholders(4, waiting.len())
            ),
            &params,
        )
        .await?;
        let ready = ids_of(
            tx.fetch(
                &format!(
                    "SELECT j.pandaid FROM jobsdefined4 j WHERE j.pandaid IN ({}) AND NOT EXISTS \
                     (SELECT 1 FROM filestable4 f WHERE f.pandaid = j.pandaid \
                     AND f.type = 'input' AND f.status NOT IN ('ready', 'cached')) \
                     ORDER BY j.pandaid",
                    placeholders(1, waiting.len())
                ),
                &values(&waiting),
                &[ColumnType::BigInt],
            )
            .await?,
        );
        if ready.is_empty() {
            tx.commit().await?;
            return Ok((waiting.len(), ready));
        }
        let columns: Vec<String> = panda_core::job::JOB_ATTRIBUTES
            .iter()
            .map(|a| a.column())
            .collect();
        let select: Vec<String> = columns
            .iter()
            .map(|c| match c.as_str() {
                "jobstatus" => "'activated'".to_string(),
                "statechangetime" | "modificationtime" => "$1".to_string(),
                "modificationhost" => "$2".to_string(),
                other => other.to_string(),
            })
            .collect();
        let mut params = vec![
            Value::Time(Some(time::now())),
            text(&self.options().host_name),
        ];
        params.extend(values(&ready));
        let list = placeholders(3, ready.len());
        let moved = tx
            .execute(
                &format!(
                    "INSERT INTO jobsactive4 ({}) SELECT {} FROM jobsdefined4 \
                     WHERE pandaid IN ({list})",
                    columns.join(", "),
                    select.join(", ")
                ),
                &params,
            )
            .await?;
        let deleted = tx
            .execute(
                &format!(
                    "DELETE FROM jobsdefined4 WHERE pandaid IN ({})",
                    placeholders(1, ready.len())
                ),
                &values(&ready),
            )
            .await?;
        if moved != ready.len() as u64 || deleted != moved {
            return Err(StoreError::Conflict(format!(
                "held jobs of task {task_id} changed while being released"
            )));
        }
        if self.options().record_status_change {
            tx.execute(
                &crate::jobs::status_log_from(
                    &format!("jobsactive4 WHERE pandaid IN ({list})"),
                    1,
                    2,
                ),
                &params,
            )
            .await?;
        }
        tx.commit().await?;
        Ok((waiting.len(), ready))
    }

    /// Up to `limit` jobs of the task waiting in `assigned` (for their library), at `site`
    /// or anywhere.
    pub async fn held_task_jobs(
        &self,
        task_id: i64,
        site: Option<&str>,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let rows = match site {
            Some(site) => {
                self.query(
                    "SELECT pandaid FROM jobsdefined4 WHERE jeditaskid = $1 \
                     AND jobstatus = 'assigned' AND computingsite = $2 ORDER BY pandaid LIMIT $3",
                    &[int(task_id), text(site), int(limit)],
                    &[ColumnType::BigInt],
                )
                .await?
            }
            None => {
                self.query(
                    "SELECT pandaid FROM jobsdefined4 WHERE jeditaskid = $1 \
                     AND jobstatus = 'assigned' ORDER BY pandaid LIMIT $2",
                    &[int(task_id), int(limit)],
                    &[ColumnType::BigInt],
                )
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .filter_map(|r| r.first().and_then(Value::as_i64))
            .collect())
    }
}

impl Store {
    /// Replaces a task's parameters (a retry with new parameters).
    pub async fn set_task_parameters(&self, task_id: i64, parameters: &str) -> Result<bool> {
        let mut tx = self.begin(TxMode::Write).await?;
        let changed = tx
            .execute(
                "UPDATE jedi_taskparams SET taskparams = $2 WHERE jeditaskid = $1",
                &[int(task_id), text(parameters)],
            )
            .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    /// Adds to the task's master input the files of `files` it does not have yet (by LFN),
    /// `ready`; returns how many were new.
    pub async fn add_new_input_files(
        &self,
        task_id: i64,
        dataset_id: i64,
        files: &[TaskFileSpec],
    ) -> Result<u64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let known: std::collections::HashSet<String> = tx
            .fetch(
                "SELECT lfn FROM jedi_dataset_contents WHERE jeditaskid = $1 AND datasetid = $2",
                &[int(task_id), int(dataset_id)],
                &[ColumnType::Text],
            )
            .await?
            .into_iter()
            .filter_map(|r| r.first().map(Value::render))
            .collect();
        let fresh: Vec<&TaskFileSpec> = files
            .iter()
            .filter(|f| {
                f.get_str(TaskFileAttr::lfn)
                    .is_some_and(|l| !known.contains(l))
            })
            .collect();
        let ids = next_ids(tx.as_mut(), self.dialect(), FILE_ID_SEQUENCE, fresh.len()).await?;
        let now = Value::Time(Some(time::now()));
        let rows: Vec<TaskFileSpec> = fresh
            .into_iter()
            .zip(ids)
            .map(|(file, id)| {
                let mut file = file.clone();
                file.set(TaskFileAttr::jediTaskID, int(task_id));
                file.set(TaskFileAttr::datasetID, int(dataset_id));
                file.set(TaskFileAttr::fileID, int(id));
                file.set(TaskFileAttr::creationDate, now.clone());
                file
            })
            .collect();
        insert_records(tx.as_mut(), "jedi_dataset_contents", &rows).await?;
        tx.execute(
            "UPDATE jedi_datasets SET nfiles = COALESCE(nfiles, 0) + $3, \
             nfilestobeused = COALESCE(nfilestobeused, 0) + $3 \
             WHERE jeditaskid = $1 AND datasetid = $2",
            &[int(task_id), int(dataset_id), int(rows.len() as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}

impl Store {
    /// A task's global share and its jobs' in `statuses`; `false` when the task does not
    /// exist or is locked by an agent (upstream leaves those alone).
    pub async fn set_task_share(
        &self,
        task_id: i64,
        share: &str,
        statuses: &[&str],
    ) -> Result<bool> {
        let params = [int(task_id), text(share)];
        let mut job_params = params.to_vec();
        job_params.extend(statuses.iter().map(|s| text(s)));
        self.set_on_task_and_jobs(
            "gshare = $2",
            " AND lockedby IS NULL",
            &format!(" AND jobstatus IN ({})", placeholders(3, statuses.len())),
            &params,
            &job_params,
        )
        .await
    }

    /// Managed tasks with jumbo jobs (`usejumbo` set), finished or done, modified between
    /// `after` and `before`, with their output datasets: (task, status, datasets).
    pub async fn jumbo_task_datasets(
        &self,
        after: chrono::NaiveDateTime,
        before: chrono::NaiveDateTime,
    ) -> Result<Vec<(i64, String, Vec<String>)>> {
        let rows = self
            .query(
                "SELECT t.jeditaskid, t.status, d.datasetname FROM jedi_tasks t \
                 JOIN jedi_datasets d ON d.jeditaskid = t.jeditaskid \
                 WHERE t.prodsourcelabel = 'managed' AND t.usejumbo IS NOT NULL \
                 AND t.modificationtime > $1 AND t.modificationtime < $2 \
                 AND t.status IN ('finished', 'done') AND d.type = 'output' \
                 ORDER BY t.jeditaskid, d.datasetname LIMIT 100000",
                &[Value::Time(Some(after)), Value::Time(Some(before))],
                &[ColumnType::BigInt, ColumnType::Text, ColumnType::Text],
            )
            .await?;
        let mut out: Vec<(i64, String, Vec<String>)> = Vec::new();
        for row in rows {
            let id = row[0].as_i64().unwrap_or_default();
            let name = row[2].render();
            match out.last_mut() {
                Some((last, _, names)) if *last == id => names.push(name),
                _ => out.push((id, row[1].render(), vec![name])),
            }
        }
        Ok(out)
    }
}

/// Sets the master input datasets' counters from their files (after files were reset).
/// Whether two datasets of one site are the same one: the same type and template (each
/// output template has one instance per site; a site has one library dataset).
pub fn same_site_dataset(a: &DatasetSpec, b: &DatasetSpec) -> bool {
    a.get_str(DatasetAttr::r#type) == b.get_str(DatasetAttr::r#type)
        && a.get_i64(DatasetAttr::templateID) == b.get_i64(DatasetAttr::templateID)
}

/// A new row of `jedi_datasets`: its task, ID and times; a `${DATASETID}` in its name (a
/// per-site dataset, `<template without />.<datasetID>`) becomes the ID.
fn new_dataset_row(spec: &DatasetSpec, task_id: i64, id: i64, now: &Value) -> DatasetSpec {
    let mut spec = spec.clone();
    spec.set(DatasetAttr::jediTaskID, int(task_id));
    spec.set(DatasetAttr::datasetID, int(id));
    spec.set(DatasetAttr::creationTime, now.clone());
    spec.set(DatasetAttr::modificationTime, now.clone());
    if let Some(name) = spec.get_str(DatasetAttr::datasetName) {
        let name = name.replace("${DATASETID}", &id.to_string());
        spec.set(DatasetAttr::datasetName, text(&name));
    }
    spec
}

async fn site_datasets_in(tx: &mut dyn Tx, task_id: i64, site: &str) -> Result<Vec<DatasetSpec>> {
    let rows = tx
        .fetch(
            &format!(
                "SELECT {} FROM jedi_datasets WHERE jeditaskid = $1 AND site = $2 \
                 ORDER BY datasetid",
                select_list(DATASET_ATTRIBUTES, "")
            ),
            &[int(task_id), text(site)],
            &types(DATASET_ATTRIBUTES),
        )
        .await?;
    records(rows)
}

async fn recount_inputs_in(tx: &mut dyn Tx, task_id: i64) -> Result<()> {
    let count = |statuses: &str| {
        format!(
            "(SELECT COUNT(*) FROM jedi_dataset_contents c WHERE c.jeditaskid = \
             jedi_datasets.jeditaskid AND c.datasetid = jedi_datasets.datasetid \
             AND c.status IN ({statuses}))"
        )
    };
    tx.execute(
        &format!(
            "UPDATE jedi_datasets SET nfilesfinished = {}, nfilesfailed = {}, nfilesused = {} \
             WHERE jeditaskid = $1 AND type IN ('input', 'pseudo_input')",
            count("'finished'"),
            count("'failed'"),
            count("'finished', 'failed', 'running'")
        ),
        &[int(task_id)],
    )
    .await?;
    Ok(())
}

/// A dataset of a task with its files (`task/get_datasets_and_files`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetFiles {
    pub name: String,
    pub id: i64,
    pub files: Vec<DatasetFile>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetFile {
    pub lfn: String,
    pub scope: Option<String>,
    pub id: i64,
    pub status: String,
}
