//! Submission: what upstream's storeJobs/insertNewJob and the setupper do with new jobs.
//!
//! Each job gets a PandaID, the submitter's name, upstream's priority and attempt defaults and
//! file statuses, a queue (brokerage) when it names none, and is stored `defined`. The
//! data-management step then activates it (or assigns or fails it).

use std::collections::{HashMap, HashSet};

use panda_core::identity::{clean_user_id, Identity};
use panda_core::{time, FileAttr, JobAttr, JobSpec, JobStatus, QueueSpec, Value};
use panda_store::ports;
use panda_store::Decision;

use crate::brokerage::{choose_queue, rejection};
use crate::error::ServiceError;
use crate::setup::SetupDecision;
use crate::JobService;

/// Most jobs one submission may carry, as upstream.
pub const MAX_JOBS_PER_SUBMISSION: usize = 5000;

/// Labels whose attempt counters upstream normalizes at submission.
const USER_LABELS: [&str; 3] = ["user", "panda", "ptest"];

/// Labels whose submitters are told the jobset rather than the job's name (upstream's
/// analysis labels and its test labels).
const JOBSET_REPLY_LABELS: [&str; 6] = ["user", "panda", "ptest", "rc_test", "rc_test2", "rc_alrb"];

/// What the submitter gets back per job.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmittedJob {
    pub panda_id: i64,
    pub job_definition_id: Value,
    pub job_name: Value,
    pub jobset_id: Value,
    pub status: JobStatus,
    /// Whether upstream answers this job's submitter with `{"jobsetID": ...}` (analysis and
    /// test labels) rather than the job's name.
    pub reply_with_jobset: bool,
}

impl JobService {
    /// Stores new jobs and runs them through brokerage and the data-management step.
    pub async fn submit(
        &self,
        caller: &Identity,
        mut jobs: Vec<JobSpec>,
    ) -> Result<Vec<SubmittedJob>, ServiceError> {
        if jobs.is_empty() {
            return Err(ServiceError::BadRequest("no jobs to submit".into()));
        }
        if jobs.len() > MAX_JOBS_PER_SUBMISSION {
            return Err(ServiceError::BadRequest(format!(
                "{} jobs in one submission; at most {MAX_JOBS_PER_SUBMISSION} are accepted",
                jobs.len()
            )));
        }
        let managed = |j: &JobSpec| j.get_str(JobAttr::prodSourceLabel) == Some("managed");
        if !caller.production && jobs.iter().any(managed) {
            return Err(ServiceError::Forbidden(
                "submitting managed jobs needs the production role".into(),
            ));
        }
        let ids = self.stores.jobs.allocate_panda_ids(jobs.len()).await?;
        for (job, id) in jobs.iter_mut().zip(ids) {
            job.set(JobAttr::PandaID, Value::Int(Some(id)));
        }
        self.submit_prepared(caller, jobs, &HashSet::new()).await
    }

    /// Stores new jobs that already carry their PandaIDs (task processing allocates them
    /// first, to record them with the task's files): defaults, brokerage, data management.
    /// A caller without a DN leaves `prodUserName` as the job has it. The jobs of `waiting`
    /// (PandaIDs) wait `assigned` for an input another job makes (a build's library) unless
    /// the data-management step fails them.
    pub(crate) async fn submit_prepared(
        &self,
        caller: &Identity,
        mut jobs: Vec<JobSpec>,
        waiting: &HashSet<i64>,
    ) -> Result<Vec<SubmittedJob>, ServiceError> {
        let needs_brokerage = jobs.iter().any(|j| j.get(JobAttr::computingSite).is_null());
        let (queues, load) = if needs_brokerage {
            self.brokerage_inputs().await?
        } else {
            (Vec::new(), HashMap::new())
        };
        let now = time::now();
        for job in jobs.iter_mut() {
            let id = job.panda_id();
            self.prepare(job, id, caller);
            if job.get(JobAttr::computingSite).is_null() {
                broker(job, &queues, &load, now);
            }
        }
        // The data-management step decides before the jobs are stored, so that they go
        // straight to their table in the one insert transaction; the status log still shows
        // `defined` first.
        for job in jobs.iter_mut() {
            if job.status() != Some(JobStatus::Defined) {
                continue;
            }
            let decision = self.data_management.setup(job);
            match decision {
                SetupDecision::Fail(_) => apply_setup(job, &decision, now),
                _ if waiting.contains(&job.panda_id()) => job.set_status(JobStatus::Assigned, now),
                _ => apply_setup(job, &decision, now),
            }
        }
        self.stores
            .jobs
            .insert_jobs_via(&mut jobs, Some(JobStatus::Defined))
            .await?;
        let mut results = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let status = job.status().unwrap_or(JobStatus::Defined);
            let label = job.get_str(JobAttr::prodSourceLabel).unwrap_or("");
            results.push(SubmittedJob {
                panda_id: job.panda_id(),
                job_definition_id: job.get(JobAttr::jobDefinitionID).clone(),
                job_name: job.get(JobAttr::jobName).clone(),
                jobset_id: job.get(JobAttr::jobsetID).clone(),
                status,
                reply_with_jobset: JOBSET_REPLY_LABELS.contains(&label),
            });
        }
        Ok(results)
    }

    /// The queues and their `activated` counts, which brokerage chooses from.
    pub(crate) async fn brokerage_inputs(
        &self,
    ) -> Result<(Vec<QueueSpec>, HashMap<String, i64>), ServiceError> {
        let sites = &self.stores.sites;
        let queues: Vec<QueueSpec> = sites
            .all_queues()
            .await?
            .into_iter()
            .filter_map(|(name, json)| {
                serde_json::from_str(&json)
                    .ok()
                    .map(|d| QueueSpec::from_json(&name, d))
            })
            .collect();
        let load: HashMap<String, i64> = sites.activated_counts().await?.into_iter().collect();
        Ok((queues, load))
    }

    /// Upstream's insertNewJob defaults.
    fn prepare(&self, job: &mut JobSpec, id: i64, caller: &Identity) {
        job.set(JobAttr::PandaID, Value::Int(Some(id)));
        job.set(JobAttr::jobStatus, Value::Text(Some("defined".into())));
        job.set(
            JobAttr::modificationHost,
            Value::Text(Some(self.settings.host_name.clone())),
        );
        if let Some(dn) = &caller.dn {
            job.set(JobAttr::prodUserName, Value::Text(Some(clean_user_id(dn))));
            if job.get(JobAttr::prodUserID).is_null() {
                job.set(JobAttr::prodUserID, Value::Text(Some(dn.clone())));
            }
        }
        // Upstream copies the assigned priority when there is one and otherwise keeps what
        // the submitter gave as the current priority. A NULL priority reads as 0 here (a
        // zero attribute), so 0 counts as not given.
        let assigned = job.get_i64(JobAttr::assignedPriority).unwrap_or(0);
        if assigned != 0 {
            job.set(JobAttr::currentPriority, Value::Int(Some(assigned)));
        }
        let atlas = job
            .get_str(JobAttr::VO)
            .is_none_or(|vo| vo.eq_ignore_ascii_case("atlas"));
        let label = job
            .get_str(JobAttr::prodSourceLabel)
            .unwrap_or("")
            .to_string();
        if USER_LABELS.contains(&label.as_str()) {
            let attempt = job.get_i64(JobAttr::attemptNr).unwrap_or(0);
            let max = job.get_i64(JobAttr::maxAttempt).unwrap_or(0);
            if max == -1 {
                job.set(JobAttr::maxAttempt, Value::Int(Some(attempt)));
            } else if max <= attempt {
                job.set(JobAttr::maxAttempt, Value::Int(Some(attempt + 2)));
            }
        }
        for file in job.files.iter_mut() {
            let status = file.get_str(FileAttr::status).unwrap_or("");
            if status != "ready" && status != "cached" {
                file.set(FileAttr::status, Value::Text(Some("unknown".into())));
            }
            let kind = file.get_str(FileAttr::r#type).unwrap_or("").to_string();
            // Upstream's setup gives every log a GUID of its own (the pilot names the log
            // tarball with it), and ATLAS outputs and logs the scope of their dataset.
            if kind == "log" {
                file.set(
                    FileAttr::GUID,
                    Value::Text(Some(crate::task_processing::new_guid())),
                );
            }
            if atlas && (kind == "log" || kind == "output") {
                let scope = file.get_str(FileAttr::dataset).and_then(scope_of_dataset);
                file.set(FileAttr::scope, Value::Text(scope));
            }
            if let Some(lfn) = file
                .get_str(FileAttr::lfn)
                .filter(|l| l.contains("$PANDAID"))
            {
                let lfn = lfn.replace("$PANDAID", &format!("{id:05}"));
                file.set(FileAttr::lfn, Value::Text(Some(lfn)));
            }
        }
    }

    /// Runs the data-management step on a `defined` job and stores its outcome.
    pub(crate) async fn run_setup_for(&self, job: &JobSpec) -> Result<JobStatus, ServiceError> {
        self.run_setup(job).await
    }

    async fn run_setup(&self, job: &JobSpec) -> Result<JobStatus, ServiceError> {
        let decision = self.data_management.setup(job);
        let (stored, ()) =
            ports::change_job(self.stores.changes.as_ref(), job.panda_id(), |job, _| {
                if job.status() != Some(JobStatus::Defined) {
                    return Ok(Decision::Keep(()));
                }
                apply_setup(job, &decision, time::now());
                Ok(Decision::Write(()))
            })
            .await?;
        Ok(stored.status().unwrap_or(JobStatus::Defined))
    }
}

/// The Rucio scope of a dataset, as upstream derives it for outputs and logs: `user.<name>` and
/// `group.<name>` (lower-cased) for user and group datasets, otherwise the name's first field.
fn scope_of_dataset(dataset: &str) -> Option<String> {
    if dataset.is_empty() || dataset == "NULL" {
        return None;
    }
    let lower = dataset.to_ascii_lowercase();
    if lower.starts_with("user") || lower.starts_with("group") {
        let mut fields = lower.split('.');
        return match (fields.next(), fields.next()) {
            (Some(kind), Some(name)) => Some(format!("{kind}.{name}")),
            _ => None,
        };
    }
    dataset.split('.').next().map(str::to_string)
}

/// Moves a `defined` job on as the data-management step decided.
fn apply_setup(job: &mut JobSpec, decision: &SetupDecision, now: chrono::NaiveDateTime) {
    match decision {
        SetupDecision::Activate => job.set_status(JobStatus::Activated, now),
        SetupDecision::Assign => job.set_status(JobStatus::Assigned, now),
        SetupDecision::Fail(diag) => {
            job.set_status(JobStatus::Failed, now);
            job.set_str(JobAttr::ddmErrorDiag, diag).ok();
        }
    }
}

/// Our brokerage failure code (upstream's brokerage codes are not used by its clients).
pub const BROKERAGE_NO_QUEUE: i64 = 100;

fn broker(
    job: &mut JobSpec,
    queues: &[QueueSpec],
    load: &HashMap<String, i64>,
    now: chrono::NaiveDateTime,
) {
    match choose_queue(queues, load, job) {
        Some(queue) => {
            job.set(
                JobAttr::computingSite,
                Value::Text(Some(queue.name.clone())),
            );
        }
        None => {
            let reasons: Vec<String> = queues
                .iter()
                .filter_map(|q| rejection(q, job).map(|r| format!("{}: {r}", q.name)))
                .collect();
            let diag = if queues.is_empty() {
                "no queue is defined".to_string()
            } else {
                format!("no queue fits the job ({})", reasons.join("; "))
            };
            job.set_status(JobStatus::Failed, now);
            job.set(
                JobAttr::brokerageErrorCode,
                Value::Int(Some(BROKERAGE_NO_QUEUE)),
            );
            job.set_str(JobAttr::brokerageErrorDiag, &diag).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scope_of_dataset;

    #[test]
    fn outputs_and_logs_take_the_scope_of_their_dataset() {
        assert_eq!(
            scope_of_dataset("user.JDoe.test.log").as_deref(),
            Some("user.jdoe")
        );
        assert_eq!(
            scope_of_dataset("group.phys-higgs.x").as_deref(),
            Some("group.phys-higgs")
        );
        assert_eq!(
            scope_of_dataset("mc23_13p6TeV.801.x").as_deref(),
            Some("mc23_13p6TeV")
        );
        assert_eq!(scope_of_dataset("user"), None);
        assert_eq!(scope_of_dataset("NULL"), None);
        assert_eq!(scope_of_dataset(""), None);
    }
}
