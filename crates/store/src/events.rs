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

use panda_core::event::{EventRangeId, EventStatus};
use panda_core::{time, ColumnType, Value};

use crate::driver::TxMode;
use crate::error::Result;
use crate::jobs::next_ids;
use crate::Store;

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

/// Job states in which a consumer may take ranges (upstream's).
const TAKING: &str = "'sent', 'running', 'starting'";
/// Job states in which a consumer may report ranges (upstream's).
const REPORTING: [&str; 4] = ["sent", "running", "starting", "transferring"];
/// Ranges a consumer is done with: done, failed, discarded, cancelled.
const SETTLED: &str = "6, 7, 5, 4";

impl Store {
    /// The jobset of a file's ranges, if the file has any.
    pub async fn event_jobset(&self, task_id: i64, file_id: i64) -> Result<Option<i64>> {
        let rows = self
            .query(
                "SELECT MAX(event_offset) FROM jedi_events WHERE jeditaskid = $1 AND fileid = $2",
                &[int(task_id), int(file_id)],
                &[ColumnType::BigInt],
            )
            .await?;
        Ok(rows.first().and_then(|r| r.first()).and_then(Value::as_i64))
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
    /// is not being killed; otherwise, as upstream, no range (and no error).
    pub async fn acquire_event_ranges(&self, panda_id: i64, n: i64) -> Result<Vec<AcquiredRange>> {
        let mut tx = self.begin(TxMode::Write).await?;
        let job = tx
            .fetch(
                &format!(
                    "SELECT jeditaskid, jobsetid FROM jobsactive4 WHERE pandaid = $1 \
                     AND jobstatus IN ({TAKING}) AND eventservice = 1 \
                     AND (commandtopilot IS NULL OR commandtopilot <> 'tobekilled'){}",
                    self.dialect().row_lock()
                ),
                &[int(panda_id)],
                &[ColumnType::BigInt, ColumnType::BigInt],
            )
            .await?;
        let Some((Some(task_id), Some(jobset_id))) = job
            .first()
            .map(|r| (r[0].as_i64(), r.get(1).and_then(Value::as_i64)))
        else {
            return Ok(Vec::new());
        };
        let taken = tx
            .fetch(
                "UPDATE jedi_events SET pandaid = $1, status = $2 \
                 WHERE (jeditaskid, pandaid, fileid, job_processid) IN \
                 (SELECT jeditaskid, pandaid, fileid, job_processid FROM jedi_events \
                  WHERE jeditaskid = $3 AND pandaid = $4 AND status = $5 AND attemptnr > 0 \
                  ORDER BY fileid, job_processid LIMIT $6) \
                 AND pandaid = $4 AND status = $5 \
                 RETURNING fileid, job_processid, attemptnr, def_min_eventid, def_max_eventid",
                &[
                    int(panda_id),
                    code(EventStatus::Sent),
                    int(task_id),
                    int(jobset_id),
                    code(EventStatus::Ready),
                    int(n),
                ],
                &[ColumnType::BigInt; 5],
            )
            .await?;
        if taken.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let mut file_ids: Vec<i64> = taken.iter().filter_map(|r| r[0].as_i64()).collect();
        file_ids.sort_unstable();
        file_ids.dedup();
        let list = file_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let files = tx
            .fetch(
                &format!(
                    "SELECT fileid, lfn, guid, scope FROM jedi_dataset_contents \
                     WHERE jeditaskid = $1 AND fileid IN ({list})"
                ),
                &[int(task_id)],
                &[
                    ColumnType::BigInt,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::Text,
                ],
            )
            .await?;
        tx.commit().await?;
        let text = |v: &Value| v.as_str().map(str::to_string);
        let mut ranges: Vec<AcquiredRange> = taken
            .iter()
            .map(|r| {
                let file_id = r[0].as_i64().unwrap_or_default();
                let file = files.iter().find(|f| f[0].as_i64() == Some(file_id));
                AcquiredRange {
                    id: EventRangeId {
                        task_id,
                        panda_id,
                        file_id,
                        process_id: r[1].as_i64().unwrap_or_default(),
                        attempt_nr: r[2].as_i64().unwrap_or_default(),
                    },
                    first_event: r[3].as_i64().unwrap_or_default(),
                    last_event: r[4].as_i64().unwrap_or_default(),
                    lfn: file.and_then(|f| text(&f[1])),
                    guid: file.and_then(|f| text(&f[2])),
                    scope: file.and_then(|f| text(&f[3])),
                }
            })
            .collect();
        ranges.sort_by_key(|r| (r.id.file_id, r.id.process_id));
        Ok(ranges)
    }

    /// Applies reported ranges in one transaction. A range counts only while its consumer
    /// is an active job in a reporting state and the row is still the consumer's, `sent` or
    /// `running`; `fatal` is stored as `failed` with one attempt left, so its retry copy has
    /// none. A zip file is recorded once per consumer and name, as a `zipoutput` file of the
    /// consumer (`filestable4`), and its row goes in the ranges' `ziprow_id`.
    pub async fn report_event_ranges(
        &self,
        reports: &[RangeReport],
        zips: &[ZipFile],
    ) -> Result<RangeReportOutcome> {
        let mut outcome = RangeReportOutcome::default();
        if reports.is_empty() {
            return Ok(outcome);
        }
        let mut jobs: Vec<i64> = reports.iter().map(|r| r.id.panda_id).collect();
        jobs.sort_unstable();
        jobs.dedup();
        let list = jobs
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = self.begin(TxMode::Write).await?;
        let rows = tx
            .fetch(
                &format!(
                    "SELECT pandaid, jobstatus, commandtopilot, jeditaskid FROM jobsactive4 \
                     WHERE pandaid IN ({list}) AND eventservice = 1"
                ),
                &[],
                &[
                    ColumnType::BigInt,
                    ColumnType::Text,
                    ColumnType::Text,
                    ColumnType::BigInt,
                ],
            )
            .await?;
        let mut open = std::collections::HashMap::new();
        for job in &jobs {
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
            outcome.commands.push((*job, command));
        }
        let mut zip_rows: Vec<Option<(i64, i64)>> = vec![None; zips.len()];
        let now = time::now();
        for report in reports {
            let id = report.id;
            let allowed =
                matches!(open.get(&id.panda_id), Some((true, Some(task))) if *task == id.task_id);
            if !allowed {
                outcome.answers.push(RangeAnswer::Refused);
                continue;
            }
            let mut ziprow = None;
            if let Some(index) = report.zip.filter(|i| *i < zips.len()) {
                ziprow = match zip_rows[index] {
                    Some((job, row)) if job == id.panda_id => Some(row),
                    _ => {
                        let row = self
                            .zip_file_row(tx.as_mut(), id.panda_id, id.task_id, &zips[index], now)
                            .await?;
                        zip_rows[index] = Some((id.panda_id, row));
                        Some(row)
                    }
                };
            }
            let (status, attempt) = match report.status {
                EventStatus::Fatal => (EventStatus::Failed, Some(1)),
                other => (other, None),
            };
            let objstore = report
                .objstore_id
                .or(report.zip.and_then(|i| zips.get(i)).map(|z| z.objstore_id));
            tx.execute(
                "UPDATE jedi_events SET status = $6, error_code = $7, error_diag = $8, \
                 objstore_id = COALESCE($9, objstore_id), \
                 path_convention = COALESCE($10, path_convention), \
                 ziprow_id = COALESCE($11, ziprow_id), attemptnr = COALESCE($12, attemptnr) \
                 WHERE jeditaskid = $1 AND pandaid = $2 AND fileid = $3 AND job_processid = $4 \
                 AND attemptnr = $5 AND status IN (1, 2)",
                &[
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
                    opt_int(ziprow),
                    opt_int(attempt),
                ],
            )
            .await?;
            outcome.answers.push(RangeAnswer::Accepted);
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// The `zipoutput` file row of a consumer's zip file: the one already recorded under
    /// that name, else a new one.
    async fn zip_file_row(
        &self,
        tx: &mut dyn crate::Tx,
        panda_id: i64,
        task_id: i64,
        zip: &ZipFile,
        now: chrono::NaiveDateTime,
    ) -> Result<i64> {
        let found = tx
            .fetch(
                "SELECT row_id FROM filestable4 WHERE pandaid = $1 AND lfn = $2 \
                 AND type = 'zipoutput'",
                &[int(panda_id), Value::Text(Some(zip.lfn.clone()))],
                &[ColumnType::BigInt],
            )
            .await?;
        if let Some(row) = found.first().and_then(|r| r[0].as_i64()) {
            return Ok(row);
        }
        let row = next_ids(tx, self.dialect(), "filestable4_row_id_seq", 1)
            .await?
            .pop()
            .unwrap_or_default();
        let destination = match zip.path_convention {
            Some(convention) => format!("{}/{convention}", zip.objstore_id),
            None => zip.objstore_id.to_string(),
        };
        tx.execute(
            "INSERT INTO filestable4 (row_id, pandaid, modificationtime, guid, lfn, type, \
             status, destinationse, fsize, checksum, dispatchdblocktoken, jeditaskid) \
             VALUES ($1, $2, $3, $4, $5, 'zipoutput', 'ready', $6, $7, $8, $9, $10)",
            &[
                int(row),
                int(panda_id),
                Value::Time(Some(now)),
                Value::Text(Some(zip.guid.clone())),
                Value::Text(Some(zip.lfn.clone())),
                Value::Text(Some(destination)),
                int(zip.fsize.unwrap_or(0)),
                Value::Text(zip.adler32.as_ref().map(|a| format!("ad:{a}"))),
                Value::Text(zip.num_events.map(|n| n.to_string())),
                int(task_id),
            ],
        )
        .await?;
        Ok(row)
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
