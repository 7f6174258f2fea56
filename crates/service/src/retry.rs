//! Server-side retry for jobs no task system will retry (not JEDI's): a failed job with
//! `attemptNr < maxAttempt` comes back as a new job (new PandaID, `parentID` = the failed one,
//! `attemptNr + 1`, output and log LFNs suffixed with the attempt), unless a retry rule says
//! otherwise.
//!
//! Rules come from upstream's `retryerrors`/`retryactions`: a rule matches when the job's
//! error-code attribute named by `errorsource` equals `errorcode` and, if the rule has an
//! `errordiag`, the matching diagnostic contains it (a substring, not upstream's regex). The
//! first matching rule applies: `no_retry` stops retries, `limit_retry` lowers `maxAttempt` to
//! its `maxAttempt=N` parameter. Other actions are not implemented and are logged.

use panda_core::{AttrSet, FileAttr, JobAttr, JobSpec, JobStatus, Value};
use panda_store::ports;
use panda_store::{Decision, RetryRule};

use crate::error::ServiceError;
use crate::JobService;

/// upstream's taskBuffer `EC_Retried`: marks a job the server has retried.
pub const EC_RETRIED: i64 = 106;

/// What became of a failed job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    Retried {
        new_panda_id: i64,
    },
    NotFailed,
    /// JEDI retries its own jobs.
    LeftToJedi,
    NoRetryRule,
    AttemptsExhausted,
}

fn matches(rule: &RetryRule, job: &JobSpec) -> bool {
    let Some(source) = JobAttr::by_name(&rule.source) else {
        return false;
    };
    let code = match job.get(source) {
        Value::Int(Some(c)) => Some(*c),
        Value::Text(Some(t)) => t.trim().parse().ok(),
        _ => None,
    };
    if code != Some(rule.code) {
        return false;
    }
    match &rule.diag {
        None => true,
        Some(needle) => JobAttr::by_name(&rule.source.replace("Code", "Diag"))
            .and_then(|d| job.get_str(d))
            .is_some_and(|diag| diag.contains(needle.as_str())),
    }
}

fn parameter(rule: &RetryRule, key: &str) -> Option<i64> {
    rule.parameters
        .as_deref()?
        .split([',', ' '])
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| k.trim() == key))
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// `name.log.tgz` → `name.log.tgz.2`; an earlier `.N` suffix is replaced.
fn attempt_lfn(lfn: &str, attempt: i64) -> String {
    let base = match lfn.rsplit_once('.') {
        Some((head, tail)) if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) => head,
        _ => lfn,
    };
    format!("{base}.{attempt}")
}

/// The fields a new attempt starts without.
const RESET: [JobAttr; 24] = [
    JobAttr::commandToPilot,
    JobAttr::transExitCode,
    JobAttr::pilotErrorCode,
    JobAttr::pilotErrorDiag,
    JobAttr::exeErrorCode,
    JobAttr::exeErrorDiag,
    JobAttr::supErrorCode,
    JobAttr::supErrorDiag,
    JobAttr::ddmErrorCode,
    JobAttr::ddmErrorDiag,
    JobAttr::brokerageErrorCode,
    JobAttr::brokerageErrorDiag,
    JobAttr::jobDispatcherErrorCode,
    JobAttr::jobDispatcherErrorDiag,
    JobAttr::taskBufferErrorCode,
    JobAttr::taskBufferErrorDiag,
    JobAttr::startTime,
    JobAttr::endTime,
    JobAttr::batchID,
    JobAttr::pilotID,
    JobAttr::schedulerID,
    JobAttr::computingElement,
    JobAttr::jobSubStatus,
    JobAttr::cpuConsumptionTime,
];

impl JobService {
    /// Retries a failed job if its attempts and the retry rules allow it.
    pub async fn retry_failed(&self, job: &JobSpec) -> Result<RetryOutcome, ServiceError> {
        if job.status() != Some(JobStatus::Failed) {
            return Ok(RetryOutcome::NotFailed);
        }
        if job.get_str(JobAttr::lockedby) == Some("jedi") {
            return Ok(RetryOutcome::LeftToJedi);
        }
        let mut max_attempt = job.get_i64(JobAttr::maxAttempt).unwrap_or(0);
        if let Some(rule) = self
            .stores
            .jobs
            .retry_rules()
            .await?
            .iter()
            .find(|r| matches(r, job))
        {
            match rule.action.as_str() {
                "no_retry" => return Ok(RetryOutcome::NoRetryRule),
                "limit_retry" => {
                    if let Some(limit) = parameter(rule, "maxAttempt") {
                        max_attempt = max_attempt.min(limit);
                    }
                }
                other => {
                    tracing::info!(target: "panda::retry", action = other, "retry action not implemented; ignored")
                }
            }
        }
        let attempt = job.get_i64(JobAttr::attemptNr).unwrap_or(0);
        if attempt >= max_attempt {
            return Ok(RetryOutcome::AttemptsExhausted);
        }
        let mut next = job.clone();
        for attr in RESET {
            let null = JobAttr::attributes()[attr.index()].column_type.null();
            next.set(attr, null);
        }
        next.set(JobAttr::PandaID, Value::Int(Some(0)));
        next.set(JobAttr::parentID, Value::Int(Some(job.panda_id())));
        next.set(JobAttr::attemptNr, Value::Int(Some(attempt + 1)));
        next.set(JobAttr::jobStatus, Value::Text(Some("defined".into())));
        for file in next.files.iter_mut() {
            file.set(FileAttr::row_ID, Value::Int(None));
            if matches!(file.get_str(FileAttr::r#type), Some("output" | "log")) {
                let lfn = attempt_lfn(file.get_str(FileAttr::lfn).unwrap_or(""), attempt + 1);
                file.set_str(FileAttr::lfn, &lfn).ok();
                file.set_str(FileAttr::status, "unknown").ok();
            }
        }
        let mut jobs = vec![next];
        self.stores.jobs.insert_jobs(&mut jobs).await?;
        let new_panda_id = jobs[0].panda_id();
        self.run_setup_for(&jobs[0]).await?;
        ports::change_job(self.stores.changes.as_ref(), job.panda_id(), |old, _| {
            old.set(JobAttr::taskBufferErrorCode, Value::Int(Some(EC_RETRIED)));
            old.set_str(
                JobAttr::taskBufferErrorDiag,
                &format!("retried by the server as {new_panda_id}"),
            )
            .ok();
            Ok(Decision::Write(()))
        })
        .await?;
        Ok(RetryOutcome::Retried { new_panda_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_suffixes_replace_earlier_ones() {
        assert_eq!(attempt_lfn("x.log.tgz", 1), "x.log.tgz.1");
        assert_eq!(attempt_lfn("x.log.tgz.1", 2), "x.log.tgz.2");
    }

    #[test]
    fn rules_match_on_code_and_diagnostic() {
        let mut job = JobSpec::new();
        job.set(JobAttr::pilotErrorCode, Value::Int(Some(1305)));
        job.set_str(JobAttr::pilotErrorDiag, "Failed to execute payload")
            .ok();
        let rule = |diag: Option<&str>| RetryRule {
            source: "pilotErrorCode".into(),
            code: 1305,
            diag: diag.map(str::to_string),
            action: "no_retry".into(),
            parameters: Some("maxAttempt=3".into()),
        };
        assert!(matches(&rule(None), &job));
        assert!(matches(&rule(Some("execute payload")), &job));
        assert!(!matches(&rule(Some("disk full")), &job));
        assert_eq!(parameter(&rule(None), "maxAttempt"), Some(3));
    }
}
