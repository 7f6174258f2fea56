//! Writes that accompany a job change in the same transaction: the pilot's final file report
//! for the Adder (`job_output_report`), the job's metadata (`metatable`) and debug stdout
//! (`jobsdebug`).

use panda_core::file::FILE_ATTRIBUTES;
use panda_core::{time, ColumnType, FileAttr, FileSpec, JobAttr, JobSpec, Value};

use crate::driver::Tx;
use crate::error::Result;

#[derive(Clone, Debug, PartialEq)]
pub enum SideWrite {
    /// The pilot's final report for one attempt; kept once per (PandaID, attemptNr): a repeated
    /// final heartbeat does not replace it.
    OutputReport {
        job_status: String,
        attempt_nr: i64,
        data: String,
    },
    /// The job report; stored once, as upstream's addMetadata.
    Metadata(String),
    /// Payload stdout of a debug-mode job; replaced on each update.
    Stdout(String),
    /// The pilot's log excerpt, appended to `pandalog` as upstream's dispatcher does.
    PilotLog(String),
    /// Rewrites a file row (by `row_ID`), e.g. when the Adder marks outputs.
    UpdateFile(FileSpec),
    /// Removes a processed final report.
    DeleteOutputReport { attempt_nr: i64 },
}

impl SideWrite {
    /// This write as an INSERT that takes its row from a CTE named `updated` (the job's
    /// changed row), binding its values after `values`; so it happens only if the update did.
    /// `None` for writes that need more than one statement.
    pub(crate) fn insert_from_updated(
        &self,
        job: &JobSpec,
        values: &mut Vec<Value>,
    ) -> Option<String> {
        let mut bind = |value: Value| {
            values.push(value);
            format!("${}", values.len())
        };
        match self {
            SideWrite::OutputReport {
                job_status,
                attempt_nr,
                data,
            } => Some(format!(
                "INSERT INTO job_output_report (pandaid, prodsourcelabel, jobstatus, attemptnr, \
                 data, timestamp) SELECT pandaid, prodsourcelabel, {}, {}, {}, {} FROM updated \
                 ON CONFLICT DO NOTHING",
                bind(Value::Text(Some(job_status.clone()))),
                bind(Value::Int(Some(*attempt_nr))),
                bind(Value::Text(Some(data.clone()))),
                bind(Value::Time(Some(time::now()))),
            )),
            SideWrite::Metadata(text) => Some(format!(
                "INSERT INTO metatable (pandaid, metadata) SELECT pandaid, {} FROM updated \
                 WHERE NOT EXISTS (SELECT 1 FROM metatable WHERE metatable.pandaid = {})",
                bind(Value::Text(Some(text.clone()))),
                bind(Value::Int(Some(job.panda_id()))),
            )),
            SideWrite::PilotLog(text) => {
                let now = time::now();
                Some(format!(
                    "INSERT INTO pandalog (bintime, name, module, type, pid, loglevel, \
                     levelname, time, filename, message) SELECT {}, 'panda.mon.prod', \
                     'JobDispatcher', 'pilotLog', pandaid, 20, 'INFO', {}, 'JobDispatcher.py', \
                     {} FROM updated",
                    bind(Value::Time(Some(now))),
                    bind(Value::Text(Some(
                        now.format("%Y-%m-%d %H:%M:%S").to_string()
                    ))),
                    bind(Value::Text(Some(pilot_log_excerpt(text)))),
                ))
            }
            SideWrite::Stdout(_)
            | SideWrite::UpdateFile(_)
            | SideWrite::DeleteOutputReport { .. } => None,
        }
    }

    pub(crate) async fn apply(&self, tx: &mut dyn Tx, job: &JobSpec) -> Result<()> {
        let id = Value::Int(Some(job.panda_id()));
        let exists = |table: &str, extra: &str| {
            format!("SELECT pandaid FROM {table} WHERE pandaid = $1{extra}")
        };
        let big = [ColumnType::BigInt];
        match self {
            SideWrite::OutputReport {
                job_status,
                attempt_nr,
                data,
            } => {
                // The key (pandaid, attemptnr) keeps the first report; one statement, and no
                // lookup whose cached plan may predate the table's growth.
                tx.execute(
                    "INSERT INTO job_output_report (pandaid, prodsourcelabel, jobstatus, \
                     attemptnr, data, timestamp) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT DO NOTHING",
                    &[
                        id,
                        job.get(JobAttr::prodSourceLabel).clone(),
                        Value::Text(Some(job_status.clone())),
                        Value::Int(Some(*attempt_nr)),
                        Value::Text(Some(data.clone())),
                        Value::Time(Some(time::now())),
                    ],
                )
                .await?;
            }
            SideWrite::Metadata(text) => {
                if tx
                    .fetch(&exists("metatable", ""), std::slice::from_ref(&id), &big)
                    .await?
                    .is_empty()
                {
                    tx.execute(
                        "INSERT INTO metatable (pandaid, metadata) VALUES ($1, $2)",
                        &[id, Value::Text(Some(text.clone()))],
                    )
                    .await?;
                }
            }
            SideWrite::Stdout(text) => {
                let text: String = text.chars().take(2048).collect();
                let params = [id, Value::Text(Some(text))];
                let updated = tx
                    .execute(
                        "UPDATE jobsdebug SET stdout = $2 WHERE pandaid = $1",
                        &params,
                    )
                    .await?;
                if updated == 0 {
                    tx.execute(
                        "INSERT INTO jobsdebug (pandaid, stdout) VALUES ($1, $2)",
                        &params,
                    )
                    .await?;
                }
            }
            SideWrite::UpdateFile(file) => {
                let assignments: Vec<String> = FILE_ATTRIBUTES
                    .iter()
                    .enumerate()
                    .skip(1)
                    .map(|(i, a)| format!("{} = ${}", a.column(), i + 1))
                    .collect();
                let sql = format!(
                    "UPDATE filestable4 SET {} WHERE row_id = $1",
                    assignments.join(", ")
                );
                if file.get(FileAttr::row_ID).is_null() {
                    return Err(crate::StoreError::Conflict(
                        "a file to update has no row_ID".into(),
                    ));
                }
                tx.execute(&sql, file.values()).await?;
            }
            SideWrite::DeleteOutputReport { attempt_nr } => {
                tx.execute(
                    "DELETE FROM job_output_report WHERE pandaid = $1 AND attemptnr = $2",
                    &[id, Value::Int(Some(*attempt_nr))],
                )
                .await?;
            }
            SideWrite::PilotLog(text) => {
                let now = time::now();
                tx.execute(
                    "INSERT INTO pandalog (bintime, name, module, type, pid, loglevel, levelname, \
                     time, filename, message) VALUES ($1, 'panda.mon.prod', 'JobDispatcher', \
                     'pilotLog', $2, 20, 'INFO', $3, 'JobDispatcher.py', $4)",
                    &[
                        Value::Time(Some(now)),
                        id,
                        Value::Text(Some(now.format("%Y-%m-%d %H:%M:%S").to_string())),
                        Value::Text(Some(pilot_log_excerpt(text))),
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }
}

/// What `pandalog.message` keeps of a pilot's log.
fn pilot_log_excerpt(text: &str) -> String {
    text.chars().take(4000).collect()
}
