//! Writes that accompany a job change in the same transaction: the pilot's final file report
//! for the Adder (`job_output_report`), the job's metadata (`metatable`) and debug stdout
//! (`jobsdebug`).

use panda_core::file::FILE_ATTRIBUTES;
use panda_core::{time, FileAttr, FileSpec, JobAttr, JobSpec, Value};

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

/// Where a side write's INSERT takes the job's `pandaid` and `prodsourcelabel` from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobSource {
    /// A CTE named `updated`, the job's row RETURNed by its UPDATE: the insert happens only if
    /// the update did.
    Updated,
    /// The job's values, bound.
    Bound,
}

impl SideWrite {
    /// This write as one INSERT, binding its values after `values`; `None` for writes that are
    /// not an insert of one row.
    pub(crate) fn insert_sql(
        &self,
        job: &JobSpec,
        source: JobSource,
        values: &mut Vec<Value>,
    ) -> Option<String> {
        let mut bind = |value: Value| {
            values.push(value);
            format!("${}", values.len())
        };
        if matches!(
            self,
            SideWrite::Stdout(_) | SideWrite::UpdateFile(_) | SideWrite::DeleteOutputReport { .. }
        ) {
            return None;
        }
        let from = match source {
            JobSource::Updated => "updated".to_string(),
            JobSource::Bound => format!(
                "(SELECT CAST({} AS BIGINT) AS pandaid, CAST({} AS VARCHAR(20)) AS \
                 prodsourcelabel) AS updated",
                bind(Value::Int(Some(job.panda_id()))),
                bind(job.get(JobAttr::prodSourceLabel).clone()),
            ),
        };
        match self {
            // The key (pandaid, attemptnr) keeps the first report. (`WHERE true`: SQLite needs
            // a WHERE before ON CONFLICT in an INSERT ... SELECT.)
            SideWrite::OutputReport {
                job_status,
                attempt_nr,
                data,
            } => Some(format!(
                "INSERT INTO job_output_report (pandaid, prodsourcelabel, jobstatus, attemptnr, \
                 data, timestamp) SELECT pandaid, prodsourcelabel, {}, {}, {}, {} FROM {from} \
                 WHERE true ON CONFLICT DO NOTHING",
                bind(Value::Text(Some(job_status.clone()))),
                bind(Value::Int(Some(*attempt_nr))),
                bind(Value::Text(Some(data.clone()))),
                bind(Value::Time(Some(time::now()))),
            )),
            SideWrite::Metadata(text) => Some(format!(
                "INSERT INTO metatable (pandaid, metadata) SELECT pandaid, {} FROM {from} \
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
                     {} FROM {from}",
                    bind(Value::Time(Some(now))),
                    bind(Value::Text(Some(
                        now.format("%Y-%m-%d %H:%M:%S").to_string()
                    ))),
                    bind(Value::Text(Some(text.chars().take(4000).collect()))),
                ))
            }
            // Returned `None` above, before binding anything.
            SideWrite::Stdout(_)
            | SideWrite::UpdateFile(_)
            | SideWrite::DeleteOutputReport { .. } => None,
        }
    }

    pub(crate) async fn apply(&self, tx: &mut dyn Tx, job: &JobSpec) -> Result<()> {
        let mut values = Vec::new();
        if let Some(insert) = self.insert_sql(job, JobSource::Bound, &mut values) {
            tx.execute(&insert, &values).await?;
            return Ok(());
        }
        let id = Value::Int(Some(job.panda_id()));
        match self {
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
            // Written above, as inserts.
            SideWrite::OutputReport { .. } | SideWrite::Metadata(_) | SideWrite::PilotLog(_) => {}
        }
        Ok(())
    }
}
