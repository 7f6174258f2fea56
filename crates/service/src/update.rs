//! Pilot heartbeats (legacy updateJob, v1 pilot/update_job): upstream's updateJobStatus rules.
//!
//! Only `running`, `failed`, `finished`, `holding`, `starting` and `transferring` are accepted.
//! A final `finished`/`failed` is stored as `holding` with the pilot's file report kept in
//! `job_output_report` for the Adder. Late or out-of-order heartbeats never move a job back:
//! `holding` and `transferring` jobs ignore `starting`/`running`, a repeated final report is
//! `alreadydone`, `merging` jobs are left alone. A heartbeat for a job that is no longer
//! active, or for another attempt, is answered `tobekilled` and changes nothing. Every accepted
//! heartbeat stamps `modificationTime`, which is what the heartbeat timeout watches.

use panda_core::identity::Identity;
use panda_core::{time, JobAttr, JobSpec, JobStatus, JobTable, Value};
use panda_store::ports;
use panda_store::{Decision, SideWrite, StoreError};

use crate::error::ServiceError;
use crate::pilot_report::{PilotReport, PilotState};
use crate::JobService;

/// The job's columns a heartbeat decides on: everything [`apply`] and [`command_for`] read.
/// The store reads only these (a heartbeat touches a handful of the 127).
const HEARTBEAT_READS: [JobAttr; 8] = [
    JobAttr::attemptNr,
    JobAttr::jobDispatcherErrorDiag,
    JobAttr::batchID,
    JobAttr::endTime,
    JobAttr::specialHandling,
    JobAttr::commandToPilot,
    JobAttr::prodSourceLabel,
    JobAttr::computingSite,
];

/// The answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateResult {
    /// StatusCode 0 with the command for the pilot (`NULL` when none).
    Done { command: String },
    /// A state outside the allowed list: ignored, StatusCode 0.
    Ignored,
    /// StatusCode 60.
    NoRole(String),
}

/// What the rules make of a reported state, given the current one.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Store(JobStatus),
    AlreadyDone,
    Ignore,
}

fn verdict(current: JobStatus, reported: &PilotState) -> Verdict {
    use JobStatus::*;
    let target = match reported {
        PilotState::Finished | PilotState::Failed | PilotState::Holding => Holding,
        PilotState::Transferring => Transferring,
        PilotState::Running => Running,
        PilotState::Starting => Starting,
        PilotState::Other(_) => return Verdict::Ignore,
    };
    match (current, target) {
        (Merging, _) => Verdict::Ignore,
        (Holding, Holding) => Verdict::AlreadyDone,
        (Holding | Transferring, Running | Starting) => Verdict::Ignore,
        (Holding, Transferring) => Verdict::Ignore,
        (Running, Starting) => Verdict::Store(Running),
        (_, target) => Verdict::Store(target),
    }
}

/// `debug,` is prefixed for jobs in debug mode, as upstream.
fn command_for(job: &JobSpec) -> String {
    let debug = job
        .get_str(JobAttr::specialHandling)
        .is_some_and(|sh| sh.split(',').any(|t| t == "dm" || t == "debug"));
    let command = job.get_str(JobAttr::commandToPilot).unwrap_or("NULL");
    match (debug, command) {
        (true, "NULL") => "debug".to_string(),
        (true, c) => format!("debug,{c}"),
        (false, c) => c.to_string(),
    }
}

impl JobService {
    pub async fn update_job(
        &self,
        caller: &Identity,
        update: PilotReport,
    ) -> Result<UpdateResult, ServiceError> {
        if !caller.may_dispatch() {
            return Ok(UpdateResult::NoRole(
                "production or pilot role required".into(),
            ));
        }
        if let PilotState::Other(_) = update.state {
            return Ok(UpdateResult::Ignored);
        }
        let result = ports::change_job_row(
            self.stores.changes.as_ref(),
            update.panda_id,
            &HEARTBEAT_READS,
            |job, side| apply(job, side, &update),
        )
        .await;
        match result {
            Ok((_, command)) => Ok(UpdateResult::Done { command }),
            Err(StoreError::JobNotFound(_)) => Ok(UpdateResult::Done {
                command: "tobekilled".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

fn apply(
    job: &mut JobSpec,
    side: &mut Vec<SideWrite>,
    update: &PilotReport,
) -> Result<Decision<String>, StoreError> {
    let Some(current) = job.status().filter(|s| s.table() == JobTable::Active) else {
        return Ok(Decision::Keep("tobekilled".into()));
    };
    let attempt = job.get_i64(JobAttr::attemptNr).unwrap_or(0);
    if update.attempt_nr.is_some_and(|a| a != attempt) {
        return Ok(Decision::Keep("tobekilled".into()));
    }
    let final_report = update.state.is_final();
    let diag_empty = job.get(JobAttr::jobDispatcherErrorDiag).is_null();
    let target = match verdict(current, &update.state) {
        // A first final report after the pilot itself reported holding goes through.
        Verdict::AlreadyDone if final_report && !diag_empty => JobStatus::Holding,
        Verdict::AlreadyDone if !final_report => return Ok(Decision::Keep(command_for(job))),
        Verdict::AlreadyDone => return Ok(Decision::Keep("alreadydone".into())),
        Verdict::Ignore => return Ok(Decision::Keep(command_for(job))),
        Verdict::Store(JobStatus::Holding) if current == JobStatus::Transferring && diag_empty => {
            return Ok(Decision::Keep("alreadydone".into()))
        }
        Verdict::Store(target) => target,
    };
    if let Some(new_batch) = reported(update, JobAttr::batchID) {
        let old_batch = job.get_str(JobAttr::batchID).unwrap_or("");
        if !old_batch.is_empty()
            && !new_batch.is_empty()
            && old_batch != new_batch
            && !numeric_batch_id(old_batch)
            && !numeric_batch_id(&new_batch)
        {
            job.set(JobAttr::supErrorCode, Value::Int(Some(INVALID_BATCH_ID)));
            job.set_str(
                JobAttr::supErrorDiag,
                &format!("got an update request with invalid batchID={new_batch}"),
            )
            .ok();
            return Ok(Decision::Write("tobekilled".into()));
        }
    }
    let now = time::now();
    let end_time_given = reported(update, JobAttr::endTime).is_some();
    let start_time_given = reported(update, JobAttr::startTime).is_some();
    for (attr, value) in &update.attributes {
        job.set(*attr, value.clone());
    }
    if target != current || final_report {
        job.set_status(target, now);
    }
    let entering_end = target == JobStatus::Holding
        || (target == JobStatus::Transferring && current == JobStatus::Running);
    if entering_end && !end_time_given && job.get(JobAttr::endTime).is_null() {
        job.set(JobAttr::endTime, Value::Time(Some(now)));
    }
    if target == JobStatus::Running
        && matches!(current, JobStatus::Sent | JobStatus::Starting)
        && !start_time_given
    {
        job.set(JobAttr::startTime, Value::Time(Some(now)));
    }
    match &update.state {
        PilotState::Finished | PilotState::Failed => {
            job.set(JobAttr::jobDispatcherErrorDiag, Value::Text(None));
            side.push(SideWrite::OutputReport {
                job_status: update.state.as_str().to_string(),
                attempt_nr: attempt,
                data: update.file_report.clone().unwrap_or_default(),
            });
        }
        PilotState::Holding | PilotState::Transferring => {
            let diag = format!(
                "set to {} by the pilot at {}",
                update.state,
                now.format("%Y-%m-%d %H:%M:%S")
            );
            job.set(JobAttr::jobDispatcherErrorDiag, Value::Text(Some(diag)));
        }
        _ => {}
    }
    // Upstream keeps no metadata from a failed job's report.
    if let Some(metadata) = update.metadata.as_ref().filter(|m| !m.is_empty()) {
        if update.state != PilotState::Failed {
            side.push(SideWrite::Metadata(metadata.clone()));
        }
    }
    if let Some(log) = update.pilot_log.as_ref().filter(|l| !l.is_empty()) {
        side.push(SideWrite::PilotLog(log.clone()));
    }
    if let Some(stdout) = update.stdout.as_ref().filter(|s| !s.is_empty()) {
        side.push(SideWrite::Stdout(stdout.clone()));
    }
    Ok(Decision::Write(command_for(job)))
}

/// `supErrorCode` for a heartbeat from another batch job (upstream's INVALID_BATCH_ID).
pub const INVALID_BATCH_ID: i64 = 1;

/// The value the pilot reported for an attribute, as text.
fn reported(update: &PilotReport, attr: JobAttr) -> Option<String> {
    update
        .attributes
        .iter()
        .find(|(a, _)| *a == attr)
        .map(|(_, v)| v.render())
}

/// Batch systems with numeric IDs (`1234` or `1234.0`) may renumber; those never mismatch.
fn numeric_batch_id(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    match id.split_once('.') {
        None => id.len() >= 2 && digits(id),
        Some((a, b)) => digits(a) && digits(b.trim_start_matches('.')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobStatus::*;

    fn verdict(current: JobStatus, reported: &str) -> Verdict {
        super::verdict(current, &PilotState::parse(reported))
    }

    #[test]
    fn final_states_are_stored_as_holding_once() {
        assert_eq!(verdict(Running, "finished"), Verdict::Store(Holding));
        assert_eq!(verdict(Running, "failed"), Verdict::Store(Holding));
        assert_eq!(verdict(Holding, "finished"), Verdict::AlreadyDone);
    }

    #[test]
    fn late_heartbeats_never_move_a_job_back() {
        assert_eq!(verdict(Holding, "running"), Verdict::Ignore);
        assert_eq!(verdict(Transferring, "starting"), Verdict::Ignore);
        assert_eq!(verdict(Holding, "transferring"), Verdict::Ignore);
        assert_eq!(verdict(Running, "starting"), Verdict::Store(Running));
        assert_eq!(verdict(Merging, "running"), Verdict::Ignore);
        assert_eq!(verdict(Sent, "starting"), Verdict::Store(Starting));
    }

    #[test]
    fn the_command_carries_the_debug_prefix() {
        let mut job = JobSpec::new();
        assert_eq!(command_for(&job), "NULL");
        job.set_str(JobAttr::commandToPilot, "tobekilled").ok();
        assert_eq!(command_for(&job), "tobekilled");
        job.set_str(JobAttr::specialHandling, "dm").ok();
        assert_eq!(command_for(&job), "debug,tobekilled");
    }
}
