//! `add_main`, upstream's Adder: turns the pilot's final report of a `holding` job into the
//! job's outcome and archives it.
//!
//! - The report is for another attempt: it is stale and dropped; the job waits for its own.
//! - The pilot reported `failed`: the job fails with the pilot's error codes.
//! - The pilot reported `finished`: the file report must be JSON naming every output and log
//!   file of the job, each with a GUID (or the GUID the job's file already has), a size and
//!   a checksum (adler32 or md5), and nothing else; then the files take those values and the job finishes. Otherwise the job fails
//!   with ddmErrorCode 200 (upstream's EC_Adder) and a diagnostic naming the problem.
//! - A job that was being killed (`commandToPilot = tobekilled`) ends `cancelled` instead of
//!   `failed`.
//!
//! - An event-service consumer (`eventService = 1`) ends as its ranges decide
//!   (`panda_service::events`): its ranges are settled first, then the job finishes, closes
//!   for the file's next consumer, or fails with upstream's ES error code.
//!
//! The job, its files and the report's removal are written in one transaction, and the
//! data-management plugin is asked to finalize the outputs first.

use async_trait::async_trait;
use panda_core::{time, FileAttr, JobAttr, JobSpec, JobStatus, Value};
use panda_service::events::ConsumerVerdict;
use panda_service::FinalizeDecision;
use panda_store::{ports, Decision, OutputReport, SideWrite};
use serde_json::Value as Json;

use super::{Task, TaskContext};

pub struct Adder;

/// upstream's `EC_Adder`.
pub const EC_ADDER: i64 = 200;
/// Reports locked longer than this by a vanished Adder are taken over.
const STALE_LOCK_MINUTES: i64 = 10;
const BATCH: i64 = 200;
/// How long one run keeps taking batches while they come full.
const MAX_RUN: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Finished,
    Failed,
    Cancelled,
    Closed,
    Stale,
    Skipped,
    /// An ES consumer, to be settled by its ranges first.
    EventService {
        task_id: i64,
        jobset_id: i64,
        last_attempt: bool,
    },
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Finished => "finished",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Closed => "closed",
            Outcome::Stale => "stale",
            Outcome::Skipped => "skipped",
            Outcome::EventService { .. } => "event_service",
        }
    }
}

#[async_trait]
impl Task for Adder {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        let started = std::time::Instant::now();
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        // Full batches mean more is waiting: keep draining, within a bounded time per run.
        loop {
            let stale = time::now() - chrono::Duration::minutes(STALE_LOCK_MINUTES);
            let reports = ctx.daemon.pending_output_reports(stale, BATCH).await?;
            let full = reports.len() as i64 == BATCH;
            for report in reports {
                if !ctx
                    .daemon
                    .lock_output_report(&report, &ctx.node, stale)
                    .await?
                {
                    continue;
                }
                let outcome = process(ctx, &report).await?;
                *counts.entry(outcome.name().to_string()).or_default() += 1;
            }
            if !full || started.elapsed() > MAX_RUN {
                break;
            }
        }
        Ok(format!("{counts:?}"))
    }
}

async fn process(ctx: &TaskContext, report: &OutputReport) -> anyhow::Result<Outcome> {
    let plugin = ctx.data_management.clone();
    let (_, mut outcome) =
        ports::change_job(ctx.stores.changes.as_ref(), report.panda_id, |job, side| {
            Ok(decide(job, side, report, plugin.as_ref(), None))
        })
        .await?;
    if let Outcome::EventService {
        task_id,
        jobset_id,
        last_attempt,
    } = outcome
    {
        let verdict = ctx
            .service()
            .end_event_consumer(task_id, report.panda_id, jobset_id, last_attempt)
            .await?;
        outcome = ports::change_job(ctx.stores.changes.as_ref(), report.panda_id, |job, side| {
            Ok(decide(job, side, report, plugin.as_ref(), Some(&verdict)))
        })
        .await?
        .1;
    }
    if outcome == Outcome::Stale {
        ctx.daemon
            .delete_output_report(report.panda_id, report.attempt_nr)
            .await?;
    }
    if outcome == Outcome::Failed {
        ctx.retry(report.panda_id).await?;
    }
    tracing::info!(target: "panda::adder", panda_id = report.panda_id, outcome = outcome.name());
    Ok(outcome)
}

fn decide(
    job: &mut JobSpec,
    side: &mut Vec<SideWrite>,
    report: &OutputReport,
    plugin: &dyn panda_service::DataManagement,
    event_service: Option<&ConsumerVerdict>,
) -> Decision<Outcome> {
    if job.status() != Some(JobStatus::Holding) {
        return Decision::Keep(Outcome::Skipped);
    }
    let attempt = job.get_i64(JobAttr::attemptNr).unwrap_or(0);
    if attempt != report.attempt_nr {
        return Decision::Keep(Outcome::Stale);
    }
    if job.get_i64(JobAttr::eventService) == Some(1) {
        let Some(verdict) = event_service else {
            return Decision::Keep(Outcome::EventService {
                task_id: job.get_i64(JobAttr::jediTaskID).unwrap_or_default(),
                jobset_id: job.get_i64(JobAttr::jobsetID).unwrap_or_default(),
                last_attempt: attempt + 1 >= job.get_i64(JobAttr::maxAttempt).unwrap_or(1),
            });
        };
        return end_consumer(job, side, report, verdict);
    }
    let killed = job.get_str(JobAttr::commandToPilot) == Some("tobekilled");
    let checked = match report.job_status.as_str() {
        "finished" => check_report(job, report.data.as_deref().unwrap_or("")),
        _ => Err(None),
    };
    let checked = checked.and_then(|files| match plugin.finalize(job) {
        FinalizeDecision::Done => Ok(files),
        FinalizeDecision::Failed(diag) => Err(Some(diag)),
    });
    let now = time::now();
    let outcome = match checked {
        Ok(files) => {
            for file in files {
                side.push(SideWrite::UpdateFile(file));
            }
            job.set_status(JobStatus::Finished, now);
            Outcome::Finished
        }
        Err(ddm_problem) => {
            if let Some(diag) = ddm_problem {
                job.set(JobAttr::ddmErrorCode, Value::Int(Some(EC_ADDER)));
                job.set_str(JobAttr::ddmErrorDiag, &diag).ok();
            }
            for file in job.files.iter().filter(|f| is_output(f)) {
                let mut failed = file.clone();
                failed.set_str(FileAttr::status, "failed").ok();
                side.push(SideWrite::UpdateFile(failed));
            }
            if killed {
                job.set_status(JobStatus::Cancelled, now);
                Outcome::Cancelled
            } else {
                job.set_status(JobStatus::Failed, now);
                Outcome::Failed
            }
        }
    };
    side.push(SideWrite::DeleteOutputReport {
        attempt_nr: report.attempt_nr,
    });
    Decision::Write(outcome)
}

/// Ends an ES consumer as its ranges decided. A finished consumer's log is registered from
/// the report when the report names it well; the job finishes either way, since its work
/// is in the ranges.
fn end_consumer(
    job: &mut JobSpec,
    side: &mut Vec<SideWrite>,
    report: &OutputReport,
    verdict: &ConsumerVerdict,
) -> Decision<Outcome> {
    let now = time::now();
    let outcome = match verdict {
        ConsumerVerdict::Finished => {
            if report.job_status == "finished" {
                if let Ok(files) = check_report(job, report.data.as_deref().unwrap_or("")) {
                    side.extend(files.into_iter().map(SideWrite::UpdateFile));
                }
            }
            job.set_status(JobStatus::Finished, now);
            Outcome::Finished
        }
        ConsumerVerdict::Closed { sub_status, code } => {
            job.set_str(JobAttr::jobSubStatus, sub_status).ok();
            job.set(JobAttr::taskBufferErrorCode, Value::Int(Some(*code)));
            job.set_str(
                JobAttr::taskBufferErrorDiag,
                "closed: the event ranges left go to the file's next consumer",
            )
            .ok();
            job.set_status(JobStatus::Closed, now);
            Outcome::Closed
        }
        ConsumerVerdict::Failed { code, diag } => {
            job.set(JobAttr::taskBufferErrorCode, Value::Int(Some(*code)));
            job.set_str(JobAttr::taskBufferErrorDiag, diag).ok();
            for file in job.files.iter().filter(|f| is_output(f)) {
                let mut failed = file.clone();
                failed.set_str(FileAttr::status, "failed").ok();
                side.push(SideWrite::UpdateFile(failed));
            }
            job.set_status(JobStatus::Failed, now);
            Outcome::Failed
        }
    };
    side.push(SideWrite::DeleteOutputReport {
        attempt_nr: report.attempt_nr,
    });
    Decision::Write(outcome)
}

fn is_output(file: &panda_core::FileSpec) -> bool {
    matches!(file.get_str(FileAttr::r#type), Some("output" | "log"))
}

/// Checks a finished job's file report and returns its output and log files updated from it;
/// `Err(Some(diagnostic))` names what is wrong.
fn check_report(job: &JobSpec, data: &str) -> Result<Vec<panda_core::FileSpec>, Option<String>> {
    let report: serde_json::Map<String, Json> = match serde_json::from_str(data) {
        Ok(Json::Object(map)) => map,
        _ => {
            let shown: String = data.chars().take(80).collect();
            return Err(Some(format!(
                "file report is not a JSON object of files: {shown:?}"
            )));
        }
    };
    let mut files = Vec::new();
    let mut expected = std::collections::HashSet::new();
    for file in job.files.iter().filter(|f| is_output(f)) {
        let lfn = file.get_str(FileAttr::lfn).unwrap_or("").to_string();
        expected.insert(lfn.clone());
        let entry = report
            .get(&lfn)
            .ok_or_else(|| Some(format!("{lfn} is missing from the file report")))?;
        let text = |key: &str| {
            entry.get(key).and_then(|v| match v {
                Json::String(s) if !s.is_empty() => Some(s.clone()),
                Json::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        // The pilot reports an empty GUID for outputs whose GUID the server gave at
        // generation (task jobs); the stored one stands. A file with neither is refused.
        let stored = file
            .get_str(FileAttr::GUID)
            .filter(|g| !g.is_empty() && *g != "NULL")
            .map(str::to_string);
        let guid = text("guid")
            .or(stored)
            .ok_or_else(|| Some(format!("no guid for {lfn} in the file report")))?;
        let size = text("fsize")
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| Some(format!("no valid fsize for {lfn} in the file report")))?;
        let checksum = match (text("adler32"), text("md5sum")) {
            (Some(a), _) => format!("ad:{a}"),
            (None, Some(m)) => format!("md5:{m}"),
            (None, None) => return Err(Some(format!("no checksum for {lfn} in the file report"))),
        };
        let mut updated = file.clone();
        updated.set_str(FileAttr::GUID, &guid).ok();
        updated.set(FileAttr::fsize, Value::Int(Some(size)));
        updated.set_str(FileAttr::checksum, &checksum).ok();
        updated.set_str(FileAttr::status, "ready").ok();
        files.push(updated);
    }
    if let Some(unknown) = report.keys().find(|lfn| !expected.contains(*lfn)) {
        return Err(Some(format!(
            "{unknown} in the file report is not a file of this job"
        )));
    }
    Ok(files)
}
