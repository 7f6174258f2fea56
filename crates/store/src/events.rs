//! The event service's table, `jedi_events`: the ranges an event-service task's files are
//! cut into, handed to consumers (the ES jobs) a few at a time.
//!
//! Upstream's row life: a range waits `ready` under its jobset (`pandaid` = the jobset ID,
//! kept in `event_offset` as well); a consumer takes it (`pandaid` = the consumer, `sent`);
//! the pilot reports it `finished` or `failed`; when the consumer ends, its finished ranges
//! become `done`, the others go back to the jobset `ready` with one attempt fewer, and a
//! failed range is copied back the same way (the failed row stays, `processed_upto_eventid`
//! NULL marks it copied). `attemptnr` counts the attempts left: a range at 0 is never handed
//! out again. Every change is a compare-and-set on the row's status, so a late or repeated
//! report changes nothing.
//!
//! On PostgreSQL, takes and reports that wait at the same moment share one statement
//! (`group_commit`); each is answered as if it had been applied alone.

use std::sync::{Arc, Weak};

use panda_core::event::{EventRangeId, EventStatus};
use panda_core::{time, ColumnType, Value};

use crate::driver::{Dialect, TxMode};
use crate::error::Result;
use crate::group_commit::{Bounds, GroupCommit, GroupCommitStats};
use crate::jobs::next_ids;
use crate::{Inner, Store};

/// The ranges of one file of a new jobset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEventRanges {
    pub task_id: i64,
    pub dataset_id: i64,
    pub file_id: i64,
    pub jobset_id: i64,
    /// `(job_processID, first event, last event)`.
    pub ranges: Vec<(i64, i64, i64)>,
    /// Attempts each range has (`maxAttemptES`).
    pub attempts: i64,
}

/// A range handed to a consumer, with its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquiredRange {
    pub id: EventRangeId,
    pub first_event: i64,
    pub last_event: i64,
    pub lfn: Option<String>,
    pub guid: Option<String>,
    pub scope: Option<String>,
}

/// The zipped output a version-1 report names for its ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZipFile {
    pub lfn: String,
    /// The GUID a new file row gets.
    pub guid: String,
    pub objstore_id: i64,
    pub fsize: Option<i64>,
    pub adler32: Option<String>,
    pub num_events: Option<i64>,
    pub path_convention: Option<i64>,
}

/// One reported range, checked by the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeReport {
    pub id: EventRangeId,
    /// `finished`, `failed` or `fatal` (upstream stores only these).
    pub status: EventStatus,
    pub error_code: Option<i64>,
    pub error_diag: Option<String>,
    pub objstore_id: Option<i64>,
    pub path_convention: Option<i64>,
    /// Index into the call's zip files.
    pub zip: Option<usize>,
}

/// What the store made of one reported range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Accepted (upstream's `true`: the row changed if it was still the consumer's).
    Accepted,
    /// Its job is not an active consumer that may report (`false`).
    Refused,
}

/// The outcome of a range report: an answer per range and the command for each job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeReportOutcome {
    pub answers: Vec<RangeAnswer>,
    /// `(PandaID, command)`: `tobekilled` for a job that is not active.
    pub commands: Vec<(i64, String)>,
}

/// The state of a jobset after one of its consumers ended (see [`Store::end_event_consumer`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerEnd {
    /// Ranges this consumer finished (now `done`).
    pub done_by_consumer: i64,
    /// Ranges of the jobset still to be handed out.
    pub ready: i64,
    /// Ranges of the jobset done, by any consumer.
    pub done: i64,
    /// Ranges of the jobset out of attempts without being done.
    pub hopeless: i64,
}

/// One range's status, for `get_events_status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeStatus {
    pub id: EventRangeId,
    pub status: Option<EventStatus>,
    pub error_code: Option<i64>,
    pub error_diag: Option<String>,
}

fn int(v: i64) -> Value {
    Value::Int(Some(v))
}

fn opt_int(v: Option<i64>) -> Value {
    Value::Int(v)
}

fn code(status: EventStatus) -> Value {
    int(status.code())
}

/// A take of at most this many ranges waits for the group committer (when it is on); a
/// larger one has a statement of its own, so that it slows no other.
const GROUPED_TAKE_RANGES: i64 = 64;
/// Reports of at most this many ranges and zip files are grouped; a batch of them stays
/// well within [`ONE_STATEMENT_RANGES`].
const GROUPED_REPORT_RANGES: usize = 64;
const GROUPED_REPORT_ZIPS: usize = 8;
/// Takes or reports applied in one statement, at most. Measured (`bench-events.sh`, 64
/// pilots): 16 gave 3,029 calls/s, 8 gave 3,680 and a lower tail, 4 gave 3,551.
const GROUP_SIZE: usize = 8;

/// One report waiting for the group committer.
pub(crate) struct GroupedReport {
    reports: Vec<RangeReport>,
    zips: Vec<ZipFile>,
}

/// The group committers of the event service's two busy calls.
pub(crate) struct EventGroups {
    takes: GroupCommit<(i64, i64), Vec<AcquiredRange>>,
    reports: GroupCommit<Arc<GroupedReport>, RangeReportOutcome>,
}

impl EventGroups {
    /// Starts them, each with `workers` statements at a time.
    pub(crate) fn start(store: &Weak<Inner>, workers: usize) -> EventGroups {
        let bounds = Bounds {
            max_batch: GROUP_SIZE,
            workers,
        };
        EventGroups {
            takes: GroupCommit::start(
                "event-range takes",
                store.clone(),
                bounds,
                |take| vec![take.0],
                |store, batch| Box::pin(async move { store.acquire_together(&batch).await }),
            ),
            reports: GroupCommit::start(
                "event-range reports",
                store.clone(),
                bounds,
                |report| consumers_of(&report.reports),
                |store, batch| {
                    Box::pin(async move {
                        let batch: Vec<Arc<GroupedReport>> = batch.to_vec();
                        store.report_together(&batch).await
                    })
                },
            ),
        }
    }

    /// What each has done so far.
    pub(crate) fn stats(&self) -> Vec<GroupCommitStats> {
        vec![self.takes.stats(), self.reports.stats()]
    }
}

/// The consumers a report names, in order, each once.
fn consumers_of(reports: &[RangeReport]) -> Vec<i64> {
    let mut jobs: Vec<i64> = reports.iter().map(|r| r.id.panda_id).collect();
    jobs.sort_unstable();
    jobs.dedup();
    jobs
}

/// A taken range of `panda_id` from a take's row (task, -, file, process, attempt, first
/// and last event, LFN, GUID, scope).
fn acquired(panda_id: i64, r: &[Value]) -> AcquiredRange {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let number = |v: &Value| v.as_i64().unwrap_or_default();
    AcquiredRange {
        id: EventRangeId {
            task_id: number(&r[0]),
            panda_id,
            file_id: number(&r[2]),
            process_id: number(&r[3]),
            attempt_nr: number(&r[4]),
        },
        first_event: number(&r[5]),
        last_event: number(&r[6]),
        lfn: text(&r[7]),
        guid: text(&r[8]),
        scope: text(&r[9]),
    }
}

/// Job states in which a consumer may take ranges (upstream's).
const TAKING: &str = "'sent', 'running', 'starting'";
/// Job states in which a consumer may report ranges (upstream's).
const REPORTING: [&str; 4] = ["sent", "running", "starting", "transferring"];
/// Most reported ranges PostgreSQL takes in one statement (12 parameters each, and 9 per
/// zip file, within its 65,535); a larger report is applied in steps.
const ONE_STATEMENT_RANGES: usize = 2_000;
/// Reported ranges changed by one statement (12 parameters each, within SQLite's 32,766).
const UPDATE_CHUNK: usize = 1_000;
/// Ranges a consumer is done with: done, failed, discarded, cancelled.
const SETTLED: &str = "6, 7, 5, 4";

impl Store {
    /// The jobset of each of the files that have ranges already: `(fileID, jobset)`, one
    /// query for a whole batch of files.
    pub async fn event_jobsets(&self, task_id: i64, file_ids: &[i64]) -> Result<Vec<(i64, i64)>> {
        let mut found = Vec::new();
        for chunk in file_ids.chunks(1_000) {
            let mut params = vec![int(task_id)];
            params.extend(chunk.iter().map(|f| int(*f)));
            let rows = self
                .query(
                    &format!(
                        "SELECT fileid, MAX(event_offset) FROM jedi_events \
                         WHERE jeditaskid = $1 AND fileid IN ({}) GROUP BY fileid",
                        crate::bind::placeholders(2, chunk.len())
                    ),
                    &params,
                    &[ColumnType::BigInt, ColumnType::BigInt],
                )
                .await?;
            found.extend(
                rows.iter()
                    .filter_map(|r| Some((r[0].as_i64()?, r[1].as_i64()?))),
            );
        }
        Ok(found)
    }

    /// Stores new jobsets' ranges, each `ready` under its jobset. Ranges already stored are
    /// left as they are. Returns how many rows were added.
    pub async fn insert_event_ranges(&self, files: &[NewEventRanges]) -> Result<u64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let mut added = 0;
        for file in files {
            for chunk in file.ranges.chunks(200) {
                let mut values = Vec::with_capacity(chunk.len());
                let mut params = vec![
                    int(file.task_id),
                    int(file.jobset_id),
                    int(file.file_id),
                    int(file.dataset_id),
                    int(file.attempts),
                ];
                for (process_id, first, last) in chunk {
                    let n = params.len();
                    values.push(format!(
                        "($1, $2, $3, ${}, $4, 0, ${}, ${}, 0, $5, $2)",
                        n + 1,
                        n + 2,
                        n + 3
                    ));
                    params.extend([int(*process_id), int(*first), int(*last)]);
                }
                added += tx
                    .execute(
                        &format!(
                            "INSERT INTO jedi_events (jeditaskid, pandaid, fileid, job_processid, \
                             datasetid, status, def_min_eventid, def_max_eventid, \
                             processed_upto_eventid, attemptnr, event_offset) VALUES {} \
                             ON CONFLICT DO NOTHING",
                            values.join(", ")
                        ),
                        &params,
                    )
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Hands up to `n` ready ranges of the consumer's jobset to the consumer, in event
    /// order. The consumer must be an active ES job in `sent`, `running` or `starting` that
    /// is not being killed; otherwise, as upstream, no range (and no error). The job row is
    /// locked first, so the pilot's final report (which locks it too) cannot pass a request
    /// in flight and leave ranges `sent` to a job that has ended. On PostgreSQL all of it is
    /// one statement in autocommit, shared with the other takes waiting at the same moment
    /// when group commit is on; on SQLite three in one write transaction.
    pub async fn acquire_event_ranges(&self, panda_id: i64, n: i64) -> Result<Vec<AcquiredRange>> {
        match &self.inner.groups {
            Some(groups) if (1..=GROUPED_TAKE_RANGES).contains(&n) => {
                groups.takes.submit((panda_id, n)).await
            }
            _ => self.acquire_alone(panda_id, n).await,
        }
    }

    /// [`Store::acquire_event_ranges`] for one consumer, in a statement of its own.
    async fn acquire_alone(&self, panda_id: i64, n: i64) -> Result<Vec<AcquiredRange>> {
        // The bound is written into the text: a bound LIMIT makes PostgreSQL plan each call.
        let n = n.max(1);
        let job_filter = format!(
            "pandaid = $1 AND jobstatus IN ({TAKING}) AND eventservice = 1 \
             AND (commandtopilot IS NULL OR commandtopilot <> 'tobekilled')"
        );
        // The job's task and jobset as scalar subqueries: the planner then treats them as
        // values and walks the key in order from the jobset's first ready range (as a join,
        // it planned a walk over the whole task).
        let candidates = format!(
            "SELECT c.jeditaskid, c.pandaid, c.fileid, c.job_processid FROM jedi_events c \
             WHERE c.jeditaskid = (SELECT jeditaskid FROM job) \
             AND c.pandaid = (SELECT jobsetid FROM job) AND c.status = 0 AND c.attemptnr > 0 \
             ORDER BY c.fileid, c.job_processid LIMIT {n}"
        );
        let columns = [
            ColumnType::BigInt,
            ColumnType::BigInt,
            ColumnType::BigInt,
            ColumnType::BigInt,
            ColumnType::BigInt,
            ColumnType::BigInt,
            ColumnType::BigInt,
            ColumnType::Text,
            ColumnType::Text,
            ColumnType::Text,
        ];
        let rows = match self.dialect() {
            Dialect::Postgres => {
                let sql = format!(
                    "WITH job AS MATERIALIZED (SELECT jeditaskid, jobsetid FROM jobsactive4 \
                     WHERE {job_filter} FOR UPDATE), \
                     taken AS (UPDATE jedi_events e SET pandaid = $1, status = 1 \
                     WHERE (e.jeditaskid, e.pandaid, e.fileid, e.job_processid) IN ({candidates}) \
                     AND e.status = 0 \
                     RETURNING e.jeditaskid, e.datasetid, e.fileid, e.job_processid, e.attemptnr, \
                     e.def_min_eventid, e.def_max_eventid) \
                     SELECT t.jeditaskid, t.datasetid, t.fileid, t.job_processid, t.attemptnr, \
                     t.def_min_eventid, t.def_max_eventid, f.lfn, f.guid, f.scope FROM taken t \
                     LEFT JOIN LATERAL (SELECT lfn, guid, scope FROM jedi_dataset_contents c \
                     WHERE c.jeditaskid = t.jeditaskid AND c.datasetid = t.datasetid \
                     AND c.fileid = t.fileid) f ON true"
                );
                let mut tx = self.begin(TxMode::Autocommit).await?;
                let rows = tx.fetch(&sql, &[int(panda_id)], &columns).await?;
                tx.commit().await?;
                rows
            }
            Dialect::Sqlite => {
                let mut tx = self.begin(TxMode::Write).await?;
                let job = tx
                    .fetch(
                        &format!("SELECT jeditaskid, jobsetid FROM jobsactive4 WHERE {job_filter}"),
                        &[int(panda_id)],
                        &[ColumnType::BigInt, ColumnType::BigInt],
                    )
                    .await?;
                let Some((Some(task), Some(jobset))) =
                    job.first().map(|r| (r[0].as_i64(), r[1].as_i64()))
                else {
                    return Ok(Vec::new());
                };
                let taken = tx
                    .fetch(
                        &format!(
                            "WITH job AS (SELECT $2 AS jeditaskid, $3 AS jobsetid) \
                             UPDATE jedi_events SET pandaid = $1, status = 1 \
                             WHERE (jeditaskid, pandaid, fileid, job_processid) IN ({candidates}) \
                             AND status = 0 \
                             RETURNING jeditaskid, datasetid, fileid, job_processid, attemptnr, \
                             def_min_eventid, def_max_eventid"
                        ),
                        &[int(panda_id), int(task), int(jobset)],
                        &columns[..7],
                    )
                    .await?;
                let mut rows = Vec::with_capacity(taken.len());
                for mut row in taken {
                    let file = tx
                        .fetch(
                            "SELECT lfn, guid, scope FROM jedi_dataset_contents \
                             WHERE jeditaskid = $1 AND datasetid = $2 AND fileid = $3",
                            &row[..3],
                            &columns[7..],
                        )
                        .await?;
                    row.extend(file.into_iter().next().unwrap_or_else(|| {
                        vec![Value::Text(None), Value::Text(None), Value::Text(None)]
                    }));
                    rows.push(row);
                }
                tx.commit().await?;
                rows
            }
        };
        let mut ranges: Vec<AcquiredRange> = rows.iter().map(|r| acquired(panda_id, r)).collect();
        ranges.sort_by_key(|r| (r.id.file_id, r.id.process_id));
        Ok(ranges)
    }

    /// Takes for several consumers (distinct PandaIDs), as one PostgreSQL statement: the
    /// jobs locked, up to each one's `n` ranges of its jobset moved to it, their files read.
    /// A consumer that got fewer than it asked for is given the rest by a take of its own:
    /// two consumers of one jobset in one batch see the same first ranges, and each range
    /// goes to only one of them. A range another request changed meanwhile is left to it:
    /// PostgreSQL checks the row's new version against `status = 0` again, and only a take
    /// (to `sent`) or a cancel changes a ready range. (A condition on the jobset there made
    /// PostgreSQL walk the jobset's whole `(pandaid, status)` index instead.)
    async fn acquire_together(&self, requests: &[(i64, i64)]) -> Result<Vec<Vec<AcquiredRange>>> {
        if requests.len() == 1 || self.dialect() != Dialect::Postgres {
            let mut answers = Vec::with_capacity(requests.len());
            for (panda_id, n) in requests {
                answers.push(self.acquire_alone(*panda_id, *n).await?);
            }
            return Ok(answers);
        }
        let list = |values: Vec<i64>| {
            let items: Vec<String> = values.iter().map(i64::to_string).collect();
            Value::Text(Some(format!("{{{}}}", items.join(","))))
        };
        let params = [
            list(requests.iter().map(|r| r.0).collect()),
            list(requests.iter().map(|r| r.1.max(1)).collect()),
        ];
        // Arrays passed as text: one statement text for any number of consumers. Every
        // step is an index or TID lookup whatever the statistics say: the jobs by key, each
        // jobset's first ready ranges along the key, the ranges changed by their row
        // address (a join of the candidates with the table was planned as a hash over the
        // whole table before the first ANALYZE).
        let sql = format!(
            "WITH r AS (SELECT * FROM unnest(CAST($1 AS TEXT)::BIGINT[], \
             CAST($2 AS TEXT)::BIGINT[]) AS r(pandaid, n)), \
             job AS MATERIALIZED (SELECT j.pandaid, j.jeditaskid, j.jobsetid FROM jobsactive4 j \
             WHERE j.pandaid = ANY (CAST($1 AS TEXT)::BIGINT[]) AND j.jobstatus IN ({TAKING}) \
             AND j.eventservice = 1 \
             AND (j.commandtopilot IS NULL OR j.commandtopilot <> 'tobekilled') \
             ORDER BY j.pandaid FOR UPDATE), \
             cand AS MATERIALIZED (SELECT job.pandaid AS consumer, c.ctid AS row_ctid FROM job \
             CROSS JOIN LATERAL (SELECT c.ctid FROM jedi_events c \
             WHERE c.jeditaskid = job.jeditaskid AND c.pandaid = job.jobsetid AND c.status = 0 \
             AND c.attemptnr > 0 ORDER BY c.fileid, c.job_processid \
             LIMIT (SELECT r.n FROM r WHERE r.pandaid = job.pandaid)) c), \
             taken AS (UPDATE jedi_events e \
             SET pandaid = (SELECT MIN(consumer) FROM cand WHERE row_ctid = e.ctid), status = 1 \
             WHERE e.ctid = ANY (ARRAY(SELECT row_ctid FROM cand)) AND e.status = 0 \
             RETURNING e.jeditaskid, e.pandaid, e.fileid, e.job_processid, e.attemptnr, \
             e.def_min_eventid, e.def_max_eventid, e.datasetid) \
             SELECT t.jeditaskid, t.pandaid, t.fileid, t.job_processid, t.attemptnr, \
             t.def_min_eventid, t.def_max_eventid, f.lfn, f.guid, f.scope FROM taken t \
             LEFT JOIN LATERAL (SELECT lfn, guid, scope FROM jedi_dataset_contents c \
             WHERE c.jeditaskid = t.jeditaskid AND c.datasetid = t.datasetid \
             AND c.fileid = t.fileid) f ON true"
        );
        let mut columns = vec![ColumnType::BigInt; 7];
        columns.extend([ColumnType::Text; 3]);
        let mut tx = self.begin(TxMode::Autocommit).await?;
        let rows = tx.fetch(&sql, &params, &columns).await?;
        tx.commit().await?;
        let mut answers: Vec<Vec<AcquiredRange>> = vec![Vec::new(); requests.len()];
        for row in &rows {
            let consumer = row[1].as_i64().unwrap_or_default();
            if let Some(at) = requests.iter().position(|r| r.0 == consumer) {
                answers[at].push(acquired(consumer, row));
            }
        }
        for ((panda_id, n), ranges) in requests.iter().zip(answers.iter_mut()) {
            let short = n.max(&1) - ranges.len() as i64;
            if short > 0 {
                ranges.extend(self.acquire_alone(*panda_id, short).await?);
            }
            ranges.sort_by_key(|r| (r.id.file_id, r.id.process_id));
        }
        Ok(answers)
    }

    /// Applies reported ranges. A range counts only while its consumer is an active job in
    /// a reporting state and the row is still the consumer's, `sent` or `running`; `fatal`
    /// is stored as `failed` with one attempt left, so its retry copy has none. A zip file
    /// is recorded once per consumer and name, as a `zipoutput` file of the consumer
    /// (`filestable4`), and its row goes in the ranges' `ziprow_id`. On PostgreSQL the whole
    /// report is one statement in autocommit (the jobs read, the zip files added and the
    /// ranges changed together); on SQLite a few in one write transaction.
    ///
    /// With group commit on (PostgreSQL), a small report goes in one statement with the
    /// other reports waiting at the same moment.
    pub async fn report_event_ranges(
        &self,
        reports: &[RangeReport],
        zips: &[ZipFile],
    ) -> Result<RangeReportOutcome> {
        match &self.inner.groups {
            Some(groups)
                if !reports.is_empty()
                    && reports.len() <= GROUPED_REPORT_RANGES
                    && zips.len() <= GROUPED_REPORT_ZIPS =>
            {
                let report = GroupedReport {
                    reports: reports.to_vec(),
                    zips: zips.to_vec(),
                };
                groups.reports.submit(Arc::new(report)).await
            }
            _ => self.report_alone(reports, zips).await,
        }
    }

    /// Several reports (of distinct consumers) as one: their ranges and zip files put
    /// together and applied by [`Store::report_alone`], then each report's answers and its
    /// jobs' commands handed back to it.
    async fn report_together(
        &self,
        batch: &[Arc<GroupedReport>],
    ) -> Result<Vec<RangeReportOutcome>> {
        if batch.len() == 1 {
            return Ok(vec![
                self.report_alone(&batch[0].reports, &batch[0].zips).await?,
            ]);
        }
        let mut reports = Vec::new();
        let mut zips = Vec::new();
        for one in batch {
            let offset = zips.len();
            reports.extend(one.reports.iter().map(|r| RangeReport {
                zip: r.zip.filter(|i| *i < one.zips.len()).map(|i| i + offset),
                ..r.clone()
            }));
            zips.extend(one.zips.iter().cloned());
        }
        let merged = self.report_alone(&reports, &zips).await?;
        let mut answers = merged.answers.into_iter();
        Ok(batch
            .iter()
            .map(|one| RangeReportOutcome {
                answers: answers.by_ref().take(one.reports.len()).collect(),
                commands: consumers_of(&one.reports)
                    .iter()
                    .filter_map(|j| merged.commands.iter().find(|(k, _)| k == j).cloned())
                    .collect(),
            })
            .collect())
    }

    /// [`Store::report_event_ranges`] in statements of its own.
    async fn report_alone(
        &self,
        reports: &[RangeReport],
        zips: &[ZipFile],
    ) -> Result<RangeReportOutcome> {
        if reports.is_empty() {
            return Ok(RangeReportOutcome::default());
        }
        let jobs = consumers_of(reports);
        // Parameters, not literals, throughout: the text then depends only on how many jobs,
        // ranges and zip files a report has, so each connection prepares it once.
        let job_params: Vec<Value> = jobs.iter().map(|j| int(*j)).collect();
        let jobs_sql = format!(
            "SELECT pandaid, jobstatus, commandtopilot, jeditaskid FROM jobsactive4 \
             WHERE pandaid IN ({}) AND eventservice = 1",
            crate::bind::placeholders(1, jobs.len())
        );
        let job_columns = [
            ColumnType::BigInt,
            ColumnType::Text,
            ColumnType::Text,
            ColumnType::BigInt,
        ];
        let now = time::now();
        if self.dialect() == Dialect::Postgres && reports.len() <= ONE_STATEMENT_RANGES {
            let (sql, params) = one_statement_report(&jobs_sql, job_params, reports, zips, now);
            let mut tx = self.begin(TxMode::Autocommit).await?;
            let rows = tx.fetch(&sql, &params, &job_columns).await?;
            tx.commit().await?;
            return Ok(judge(&jobs, &rows, reports));
        }
        let mut tx = self.begin(TxMode::Write).await?;
        let rows = tx.fetch(&jobs_sql, &job_params, &job_columns).await?;
        let outcome = judge(&jobs, &rows, reports);
        let mut zip_rows: Vec<((usize, i64), Option<i64>)> = Vec::new();
        let mut changes = Vec::with_capacity(reports.len());
        for (report, answer) in reports.iter().zip(&outcome.answers) {
            if *answer != RangeAnswer::Accepted {
                continue;
            }
            let id = report.id;
            let mut ziprow = None;
            if let Some(index) = report.zip.filter(|i| *i < zips.len()) {
                let key = (index, id.panda_id);
                ziprow = match zip_rows.iter().find(|(k, _)| *k == key) {
                    Some((_, row)) => *row,
                    None => {
                        let keys = zip_range_keys(reports, key);
                        let row = self
                            .zip_file_row(
                                tx.as_mut(),
                                keys,
                                id.panda_id,
                                id.task_id,
                                &zips[index],
                                now,
                            )
                            .await?;
                        zip_rows.push((key, row));
                        row
                    }
                };
            }
            changes.push(range_change(report, zips, opt_int(ziprow)));
        }
        for chunk in changes.chunks(UPDATE_CHUNK) {
            let mut params = Vec::with_capacity(chunk.len() * 12);
            let values: Vec<String> = chunk
                .iter()
                .map(|row| values_row(&mut params, row.clone(), None))
                .collect();
            tx.execute(
                &format!(
                    "{} FROM (VALUES {}) AS v WHERE {RANGE_MATCH}",
                    range_update("v.column11"),
                    values.join(", ")
                ),
                &params,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// The `zipoutput` file row of a consumer's zip file, for the ranges `keys` (a list of
    /// `(jeditaskid, pandaid, fileid, job_processid)`): the row one of them already names
    /// (a report sent again), else a new one if one of them is still to be reported, else
    /// none. (Looked up through the ranges, by key: a lookup by name would read every file
    /// row of the consumer, one more per report.)
    async fn zip_file_row(
        &self,
        tx: &mut dyn crate::Tx,
        keys: Vec<Value>,
        panda_id: i64,
        task_id: i64,
        zip: &ZipFile,
        now: chrono::NaiveDateTime,
    ) -> Result<Option<i64>> {
        let key = "(jeditaskid, pandaid, fileid, job_processid)";
        let list = (0..keys.len() / 4)
            .map(|i| {
                format!(
                    "(${}, ${}, ${}, ${})",
                    4 * i + 1,
                    4 * i + 2,
                    4 * i + 3,
                    4 * i + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let named = tx
            .fetch(
                &format!(
                    "SELECT ziprow_id FROM jedi_events WHERE {key} IN ({list}) \
                     AND ziprow_id IS NOT NULL LIMIT 1"
                ),
                &keys,
                &[ColumnType::BigInt],
            )
            .await?;
        if let Some(row) = named.first().and_then(|r| r[0].as_i64()) {
            return Ok(Some(row));
        }
        let pending = tx
            .fetch(
                &format!(
                    "SELECT 1 FROM jedi_events WHERE {key} IN ({list}) AND status IN (1, 2) LIMIT 1"
                ),
                &keys,
                &[ColumnType::BigInt],
            )
            .await?;
        if pending.is_empty() {
            return Ok(None);
        }
        let row = next_ids(tx, self.dialect(), "filestable4_row_id_seq", 1)
            .await?
            .pop()
            .unwrap_or_default();
        let mut params = vec![int(row)];
        params.extend(zip_values(zip, panda_id, task_id, now));
        tx.execute(
            &format!(
                "INSERT INTO filestable4 ({ZIP_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, 'zipoutput', 'ready', $6, $7, $8, $9, $10)"
            ),
            &params,
        )
        .await?;
        Ok(Some(row))
    }

    /// Ready ranges of a jobset with attempts left (`checkEventsAvailability`).
    pub async fn available_event_ranges(&self, task_id: i64, jobset_id: i64) -> Result<i64> {
        let rows = self
            .query(
                "SELECT COUNT(*) FROM jedi_events WHERE jeditaskid = $1 AND pandaid = $2 \
                 AND status = 0 AND attemptnr > 0",
                &[int(task_id), int(jobset_id)],
                &[ColumnType::BigInt],
            )
            .await?;
        Ok(rows
            .first()
            .and_then(|r| r.first())
            .and_then(Value::as_i64)
            .unwrap_or(0))
    }

    /// The ranges a job holds or held (`get_events_status`), at most `limit`.
    pub async fn event_range_statuses(
        &self,
        task_id: i64,
        panda_id: i64,
        limit: i64,
    ) -> Result<Vec<RangeStatus>> {
        let rows = self
            .query(
                "SELECT fileid, job_processid, attemptnr, status, error_code, error_diag \
                 FROM jedi_events WHERE jeditaskid = $1 AND pandaid = $2 \
                 ORDER BY fileid, job_processid LIMIT $3",
                &[int(task_id), int(panda_id), int(limit)],
                &[
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::BigInt,
                    ColumnType::Text,
                ],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| RangeStatus {
                id: EventRangeId {
                    task_id,
                    panda_id,
                    file_id: r[0].as_i64().unwrap_or_default(),
                    process_id: r[1].as_i64().unwrap_or_default(),
                    attempt_nr: r[2].as_i64().unwrap_or_default(),
                },
                status: r[3].as_i64().and_then(EventStatus::from_code),
                error_code: r[4].as_i64(),
                error_diag: r[5].as_str().map(str::to_string),
            })
            .collect())
    }

    /// Settles the ranges of a consumer that ended, as upstream's job-end step does, and
    /// tells what is left of its jobset: its finished ranges become `done`; its other
    /// unsettled ranges go back to the jobset `ready` with one attempt fewer; each failed
    /// range not yet retried is copied back to the jobset `ready` with one attempt fewer.
    /// Safe to repeat: a second run finds nothing of the consumer's to move.
    pub async fn end_event_consumer(
        &self,
        task_id: i64,
        panda_id: i64,
        jobset_id: i64,
    ) -> Result<ConsumerEnd> {
        let mut tx = self.begin(TxMode::Write).await?;
        let key = [int(task_id), int(panda_id), int(jobset_id)];
        let consumer = &key[..2];
        let done_by_consumer = tx
            .execute(
                "UPDATE jedi_events SET status = 6 \
                 WHERE jeditaskid = $1 AND pandaid = $2 AND status = 3",
                consumer,
            )
            .await? as i64;
        tx.execute(
            &format!(
                "UPDATE jedi_events SET status = 0, pandaid = $3, attemptnr = attemptnr - 1 \
                 WHERE jeditaskid = $1 AND pandaid = $2 AND status NOT IN ({SETTLED}) \
                 AND NOT EXISTS (SELECT 1 FROM jedi_events o WHERE o.jeditaskid = $1 \
                   AND o.pandaid = $3 AND o.fileid = jedi_events.fileid \
                   AND o.job_processid = jedi_events.job_processid)"
            ),
            &key,
        )
        .await?;
        tx.execute(
            "INSERT INTO jedi_events (jeditaskid, pandaid, fileid, job_processid, datasetid, \
             status, def_min_eventid, def_max_eventid, processed_upto_eventid, attemptnr, \
             event_offset) \
             SELECT jeditaskid, $3, fileid, job_processid, datasetid, 0, def_min_eventid, \
             def_max_eventid, processed_upto_eventid, attemptnr - 1, event_offset \
             FROM jedi_events WHERE jeditaskid = $1 AND pandaid = $2 AND status = 7 \
             AND processed_upto_eventid IS NOT NULL \
             ON CONFLICT DO NOTHING",
            &key,
        )
        .await?;
        tx.execute(
            "UPDATE jedi_events SET processed_upto_eventid = NULL \
             WHERE jeditaskid = $1 AND pandaid = $2 AND status = 7",
            consumer,
        )
        .await?;
        // The jobset's ranges: those still under it, and those its consumers hold or held.
        let counts = tx
            .fetch(
                "SELECT \
                 SUM(CASE WHEN pandaid = $2 AND status = 0 AND attemptnr > 0 THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN status IN (6, 9) THEN 1 ELSE 0 END), \
                 SUM(CASE WHEN pandaid = $2 AND attemptnr <= 0 AND status NOT IN (4, 5) \
                     THEN 1 ELSE 0 END) \
                 FROM jedi_events WHERE jeditaskid = $1 AND event_offset = $2",
                &[int(task_id), int(jobset_id)],
                &[ColumnType::BigInt; 3],
            )
            .await?;
        tx.commit().await?;
        let count = |i: usize| {
            counts
                .first()
                .and_then(|r| r.get(i))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        Ok(ConsumerEnd {
            done_by_consumer,
            ready: count(0),
            done: count(1),
            hopeless: count(2),
        })
    }

    /// Cancels a jobset's ranges that were never done (its last consumer failed).
    pub async fn cancel_event_ranges(&self, task_id: i64, jobset_id: i64) -> Result<u64> {
        let mut tx = self.begin(TxMode::Write).await?;
        let n = tx
            .execute(
                "UPDATE jedi_events SET status = 4 WHERE jeditaskid = $1 AND pandaid = $2 \
                 AND status = 0",
                &[int(task_id), int(jobset_id)],
            )
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}

/// The change of reported ranges, from `VALUES` rows `v` (`column1`... on both backends):
/// key, attempt, then the new values; `zip_row` the expression of the zip file's row.
fn range_update(zip_row: &str) -> String {
    format!(
        "UPDATE jedi_events SET status = v.column6, error_code = v.column7, \
         error_diag = v.column8, objstore_id = COALESCE(v.column9, objstore_id), \
         path_convention = COALESCE(v.column10, path_convention), \
         ziprow_id = COALESCE({zip_row}, ziprow_id), attemptnr = COALESCE(v.column12, attemptnr)"
    )
}

/// Which row a `VALUES` row changes: its consumer's, while `sent` or `running`.
const RANGE_MATCH: &str = "jedi_events.jeditaskid = v.column1 AND jedi_events.pandaid = v.column2 \
     AND jedi_events.fileid = v.column3 AND jedi_events.job_processid = v.column4 \
     AND jedi_events.attemptnr = v.column5 AND jedi_events.status IN (1, 2)";
/// The types of a `VALUES` row's columns (PostgreSQL needs them stated for parameters).
const RANGE_TYPES: [&str; 12] = [
    "BIGINT",
    "BIGINT",
    "BIGINT",
    "BIGINT",
    "BIGINT",
    "BIGINT",
    "BIGINT",
    "VARCHAR(500)",
    "BIGINT",
    "BIGINT",
    "BIGINT",
    "BIGINT",
];

/// Which reported ranges are accepted, and each job's command: a range of a job that is an
/// active ES job of the range's task, in a reporting state, is accepted; a job that is not
/// active is told `tobekilled`.
fn judge(jobs: &[i64], rows: &[Vec<Value>], reports: &[RangeReport]) -> RangeReportOutcome {
    let mut open = std::collections::HashMap::new();
    let mut commands = Vec::with_capacity(jobs.len());
    for job in jobs {
        let row = rows.iter().find(|r| r[0].as_i64() == Some(*job));
        let command = match row {
            None => "tobekilled".to_string(),
            Some(r) => r[2]
                .as_str()
                .filter(|c| !c.is_empty())
                .unwrap_or("NULL")
                .to_string(),
        };
        if let Some(r) = row {
            let reporting = r[1].as_str().is_some_and(|s| REPORTING.contains(&s));
            open.insert(*job, (reporting, r[3].as_i64()));
        }
        commands.push((*job, command));
    }
    let answers = reports
        .iter()
        .map(|r| match open.get(&r.id.panda_id) {
            Some((true, Some(task))) if *task == r.id.task_id => RangeAnswer::Accepted,
            _ => RangeAnswer::Refused,
        })
        .collect();
    RangeReportOutcome { answers, commands }
}

/// The `VALUES` row of one reported range (see [`RANGE_UPDATE`]); `ziprow` its zip file's
/// row, when known.
fn range_change(report: &RangeReport, zips: &[ZipFile], ziprow: Value) -> [Value; 12] {
    let id = report.id;
    let (status, attempt) = match report.status {
        EventStatus::Fatal => (EventStatus::Failed, Some(1)),
        other => (other, None),
    };
    let objstore = report
        .objstore_id
        .or(report.zip.and_then(|i| zips.get(i)).map(|z| z.objstore_id));
    [
        int(id.task_id),
        int(id.panda_id),
        int(id.file_id),
        int(id.process_id),
        int(id.attempt_nr),
        code(status),
        opt_int(report.error_code),
        Value::Text(report.error_diag.clone()),
        opt_int(objstore),
        opt_int(report.path_convention),
        ziprow,
        opt_int(attempt),
    ]
}

/// Adds a `VALUES` row's parameters to `params` and returns its text; `zip_expr`, when
/// given, stands for the zip row's column.
fn values_row(params: &mut Vec<Value>, row: [Value; 12], zip_expr: Option<&str>) -> String {
    let cells: Vec<String> = row
        .into_iter()
        .zip(RANGE_TYPES)
        .enumerate()
        .map(|(i, (value, ty))| match (i, zip_expr) {
            (10, Some(expr)) => expr.to_string(),
            _ => {
                params.push(value);
                format!("CAST(${} AS {ty})", params.len())
            }
        })
        .collect();
    format!("({})", cells.join(", "))
}

/// The whole report as one PostgreSQL statement: the jobs (`jobs_sql`) read once, the
/// ranges as a `VALUES` list (`column13` the range's zip slot, one per zip file and
/// consumer, -1 for none), a zip file row per slot added unless one of its ranges names one
/// already (a report sent again) and only while its job may report and a range is pending,
/// then the ranges changed where their job may report; it returns the jobs' rows.
fn one_statement_report(
    jobs_sql: &str,
    job_params: Vec<Value>,
    reports: &[RangeReport],
    zips: &[ZipFile],
    now: chrono::NaiveDateTime,
) -> (String, Vec<Value>) {
    let mut params = job_params;
    let reporting = REPORTING
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut slots: Vec<(usize, i64)> = Vec::new();
    let slot_of: Vec<i64> = reports
        .iter()
        .map(|r| match r.zip.filter(|i| *i < zips.len()) {
            None => -1,
            Some(index) => {
                let key = (index, r.id.panda_id);
                let at = slots.iter().position(|k| *k == key).unwrap_or_else(|| {
                    slots.push(key);
                    slots.len() - 1
                });
                at as i64
            }
        })
        .collect();
    let values: Vec<String> = reports
        .iter()
        .zip(&slot_of)
        .map(|(report, slot)| {
            let row = values_row(
                &mut params,
                range_change(report, zips, Value::Int(None)),
                None,
            );
            params.push(int(*slot));
            // The row's text less its closing parenthesis, then the slot.
            let open_row = row.strip_suffix(')').unwrap_or(&row);
            format!("{open_row}, CAST(${} AS BIGINT))", params.len())
        })
        .collect();
    let mut ctes = vec![
        format!("jobs AS MATERIALIZED ({jobs_sql})"),
        format!(
            "v AS MATERIALIZED (SELECT * FROM (VALUES {}) AS t)",
            values.join(", ")
        ),
    ];
    let by_key = "e.jeditaskid = v.column1 AND e.pandaid = v.column2 AND e.fileid = v.column3 \
                  AND e.job_processid = v.column4";
    let mut cases = Vec::new();
    for (slot, (index, panda_id)) in slots.iter().enumerate() {
        let task_id = reports
            .iter()
            .find(|r| r.zip == Some(*index) && r.id.panda_id == *panda_id)
            .map(|r| r.id.task_id)
            .unwrap_or_default();
        let cells: Vec<String> = zip_values(&zips[*index], *panda_id, task_id, now)
            .into_iter()
            .map(|v| {
                params.push(v);
                format!("${}", params.len())
            })
            .collect();
        let (job, task) = (&cells[0], &cells[8]);
        ctes.push(format!(
            "z{slot}_old AS (SELECT e.ziprow_id AS row_id FROM jedi_events e, v \
             WHERE v.column13 = {slot} AND {by_key} AND e.ziprow_id IS NOT NULL LIMIT 1), \
             z{slot}_new AS (INSERT INTO filestable4 ({ZIP_COLUMNS}) \
             SELECT nextval('filestable4_row_id_seq'), {}, 'zipoutput', 'ready', {} \
             WHERE NOT EXISTS (SELECT 1 FROM z{slot}_old) \
             AND EXISTS (SELECT 1 FROM jobs WHERE pandaid = {job} AND jeditaskid = {task} \
             AND jobstatus IN ({reporting})) \
             AND EXISTS (SELECT 1 FROM jedi_events e, v WHERE v.column13 = {slot} AND {by_key} \
             AND e.status IN (1, 2)) RETURNING row_id)",
            cells[..4].join(", "),
            cells[4..].join(", "),
        ));
        cases.push(format!(
            "WHEN {slot} THEN COALESCE((SELECT row_id FROM z{slot}_new), \
             (SELECT row_id FROM z{slot}_old))"
        ));
    }
    let zip_row = match cases.is_empty() {
        true => "v.column11".to_string(),
        false => format!("CASE v.column13 {} END", cases.join(" ")),
    };
    ctes.push(format!(
        "changed AS ({} FROM v, jobs j WHERE j.pandaid = v.column2 AND j.jeditaskid = v.column1 \
         AND j.jobstatus IN ({reporting}) AND {RANGE_MATCH} RETURNING 1)",
        range_update(&zip_row)
    ));
    let sql = format!(
        "WITH {} SELECT pandaid, jobstatus, commandtopilot, jeditaskid FROM jobs",
        ctes.join(", ")
    );
    (sql, params)
}

/// Ranges of a zip file looked at to tell whether it was recorded already.
const ZIP_KEYS: usize = 1_000;

/// The columns of a zip file's `filestable4` row, as written.
const ZIP_COLUMNS: &str = "row_id, pandaid, modificationtime, guid, lfn, type, status, \
     destinationse, fsize, checksum, dispatchdblocktoken, jeditaskid";

/// A zip file row's values after `row_id`, less its constant type and status: the consumer,
/// the time, GUID, name, destination (`<objstoreID>/<pathConvention>`), size, checksum,
/// event count (in `dispatchdblocktoken`, as upstream) and the task.
fn zip_values(
    zip: &ZipFile,
    panda_id: i64,
    task_id: i64,
    now: chrono::NaiveDateTime,
) -> [Value; 9] {
    let destination = match zip.path_convention {
        Some(convention) => format!("{}/{convention}", zip.objstore_id),
        None => zip.objstore_id.to_string(),
    };
    [
        int(panda_id),
        Value::Time(Some(now)),
        Value::Text(Some(zip.guid.clone())),
        Value::Text(Some(zip.lfn.clone())),
        Value::Text(Some(destination)),
        int(zip.fsize.unwrap_or(0)),
        Value::Text(zip.adler32.as_ref().map(|a| format!("ad:{a}"))),
        Value::Text(zip.num_events.map(|n| n.to_string())),
        int(task_id),
    ]
}

/// The keys `(jeditaskid, pandaid, fileid, job_processid)` of the reported ranges of zip
/// file `index` and consumer `panda_id`, four values each; of the first
/// [`ZIP_KEYS`] of them, which tell a report sent again as well as all would, within
/// SQLite's bound on parameters.
fn zip_range_keys(reports: &[RangeReport], (index, panda_id): (usize, i64)) -> Vec<Value> {
    reports
        .iter()
        .filter(|r| r.zip == Some(index) && r.id.panda_id == panda_id)
        .take(ZIP_KEYS)
        .flat_map(|r| {
            [
                int(r.id.task_id),
                int(r.id.panda_id),
                int(r.id.file_id),
                int(r.id.process_id),
            ]
        })
        .collect()
}
