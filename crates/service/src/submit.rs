//! Submission: what upstream's storeJobs/insertNewJob and the setupper do with new jobs.
//!
//! Each job gets a PandaID, the submitter's name, upstream's priority and attempt defaults and
//! file statuses, a queue (brokerage) when it names none, and is stored `defined`. The
//! data-management step then activates it (or assigns or fails it).

use std::collections::{HashMap, HashSet};

use panda_core::identity::{clean_user_id, Identity};
use panda_core::{time, FileAttr, JobAttr, JobSpec, JobStatus, QueueSpec, Value};
use panda_store::ports;
use panda_store::{Decision, GlobalShare, JobsetRequest, ResourceType};

use crate::brokerage::{choose_queue, rejection};
use crate::error::ServiceError;
use crate::setup::SetupDecision;
use crate::JobService;

/// Most jobs one submission may carry, as upstream.
pub const MAX_JOBS_PER_SUBMISSION: usize = 5000;

/// Labels whose attempt counters upstream normalizes at submission.
const USER_LABELS: [&str; 3] = ["user", "panda", "ptest"];

/// Upstream's analysis labels.
const ANALYSIS_LABELS: [&str; 2] = ["user", "panda"];

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
    /// `client_host` is where the submission came from: upstream records it as each job's
    /// `creationHost`.
    pub async fn submit(
        &self,
        caller: &Identity,
        mut jobs: Vec<JobSpec>,
        client_host: Option<&str>,
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
        if let Some(label) = jobs.iter().find_map(|j| {
            j.get_str(JobAttr::job_label)
                .filter(|l| !matches!(*l, "" | "NULL" | "user" | "managed"))
        }) {
            return Err(ServiceError::BadRequest(format!(
                "job_label={label} is not valid"
            )));
        }
        let managed = |j: &JobSpec| j.get_str(JobAttr::prodSourceLabel) == Some("managed");
        if !caller.production && jobs.iter().any(managed) {
            return Err(ServiceError::Forbidden(
                "submitting managed jobs needs the production role".into(),
            ));
        }
        // Upstream's VO of a submission: the submitter's first FQAN's, else the first job's,
        // else atlas; every job gets it (its dispatchers match jobs to queues by VO).
        let vo = caller
            .fqans
            .iter()
            .find_map(|fqan| {
                let vo = fqan.strip_prefix('/')?.split('/').next()?;
                (!vo.is_empty() && fqan.len() > vo.len() + 1).then(|| vo.to_string())
            })
            .or_else(|| {
                jobs[0]
                    .get_str(JobAttr::VO)
                    .filter(|v| !v.is_empty() && *v != "NULL")
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "atlas".to_string());
        let ids = self.stores.jobs.allocate_panda_ids(jobs.len()).await?;
        for (job, id) in jobs.iter_mut().zip(ids) {
            job.set(JobAttr::PandaID, Value::Int(Some(id)));
            job.set(JobAttr::VO, Value::Text(Some(vo.clone())));
            if let Some(host) = client_host.filter(|h| !h.is_empty()) {
                job.set(JobAttr::creationHost, Value::Text(Some(host.to_string())));
            }
        }
        self.number_user_jobs(caller, &mut jobs).await?;
        self.submit_prepared(caller, jobs, &HashSet::new()).await
    }

    /// Upstream's numbering of analysis and test jobs: when the first job carries a numeric
    /// `jobDefinitionID`, the IDs come from the submitter's counter (`users.jobid`): the
    /// analysis jobs get its `jobDefinitionID` (a retry keeps its own), and the analysis and
    /// test jobs its `jobsetID` (a new one for `-1`, none for `NULL` or 0). Merge jobs keep
    /// what they carry.
    async fn number_user_jobs(
        &self,
        caller: &Identity,
        jobs: &mut [JobSpec],
    ) -> Result<(), ServiceError> {
        let first = &jobs[0];
        let numbered = first
            .get_str(JobAttr::prodSourceLabel)
            .is_some_and(|l| JOBSET_REPLY_LABELS.contains(&l))
            && !matches!(
                first.get_str(JobAttr::processingType),
                Some("merge" | "unmerge")
            );
        let (Some(dn), Some(job_id), true) = (
            caller.dn.as_deref(),
            first.get_i64(JobAttr::jobDefinitionID),
            numbered,
        ) else {
            return Ok(());
        };
        let jobset = match first.get_i64(JobAttr::jobsetID) {
            Some(-1) => JobsetRequest::New,
            None | Some(0) => JobsetRequest::NoJobset,
            Some(id) => JobsetRequest::Given(id),
        };
        let ids = self
            .stores
            .users
            .take_user_job_ids(&clean_user_id(dn), job_id, jobset)
            .await?;
        for job in jobs.iter_mut() {
            let label = job
                .get_str(JobAttr::prodSourceLabel)
                .unwrap_or_default()
                .to_string();
            let label = label.as_str();
            let first_run = matches!(job.get_i64(JobAttr::attemptNr), None | Some(0))
                || !matches!(job.get_i64(JobAttr::jobExecutionID), None | Some(0))
                || job.get_str(JobAttr::lockedby) == Some("jedi");
            if ANALYSIS_LABELS.contains(&label) && first_run {
                job.set(
                    JobAttr::jobDefinitionID,
                    Value::Int(Some(ids.job_definition_id)),
                );
            }
            if JOBSET_REPLY_LABELS.contains(&label) {
                job.set(JobAttr::jobsetID, Value::Int(ids.jobset_id));
            }
        }
        Ok(())
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
        let needs_resource_type = jobs.iter().any(|j| unset(j, JobAttr::resource_type));
        let resource_types = if needs_resource_type {
            self.stores.sites.resource_types().await?
        } else {
            Vec::new()
        };
        let needs_share = jobs.iter().any(|j| unset(j, JobAttr::gshare));
        let shares = if needs_share {
            ShareLeaves::new(&self.stores.sites.global_shares().await?)
        } else {
            ShareLeaves::default()
        };
        for job in jobs.iter_mut() {
            let id = job.panda_id();
            // Upstream's classification, from the queue the submitter named (before
            // brokerage, as upstream); a value the submitter gave stands.
            let queue = match job.get_str(JobAttr::computingSite) {
                Some(site) => self.queue(site).await?,
                None => None,
            };
            if unset(job, JobAttr::resource_type) {
                let name = resource_type_of(job, &resource_types);
                job.set(JobAttr::resource_type, Value::Text(Some(name)));
            }
            if unset(job, JobAttr::gshare) {
                let share = shares.share_for(job, queue.as_deref());
                job.set(JobAttr::gshare, Value::Text(Some(share)));
            }
            if !matches!(job.get_str(JobAttr::job_label), Some("managed" | "user")) {
                let label = job_label(job.get_str(JobAttr::prodSourceLabel), queue.as_deref());
                job.set(JobAttr::job_label, Value::Text(Some(label.into())));
            }
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
        // Upstream marks a job whose submitter chose its queue (2, set by the submitter,
        // stays).
        if !job.get(JobAttr::computingSite).is_null()
            && job.get_i64(JobAttr::relocationFlag) != Some(2)
        {
            job.set(JobAttr::relocationFlag, Value::Int(Some(1)));
        }
        if unset(job, JobAttr::jobParameters) {
            job.set(JobAttr::jobParameters, Value::Text(Some(" ".into())));
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

/// Whether the job leaves `attr` to the server (no value, empty, or upstream's `NULL`).
fn unset(job: &JobSpec, attr: JobAttr) -> bool {
    job.get_str(attr)
        .is_none_or(|v| v.is_empty() || v == "NULL")
}

/// The first resource type whose core and memory bounds the job fits, as upstream matches
/// them (no core count means 1, 0 means any and counts as 8; memory per core in MB, rounded
/// half to even); `Undefined` when none fits.
fn resource_type_of(job: &JobSpec, types: &[ResourceType]) -> String {
    let cores = match job.get_i64(JobAttr::coreCount) {
        None => 1,
        Some(0) => 8,
        Some(n) => n,
    };
    let ram = job.get_i64(JobAttr::minRamCount).unwrap_or(0);
    let ram_per_core = (ram as f64 / cores as f64).round_ties_even() as i64;
    let fits = |t: &ResourceType| {
        t.min_core.is_none_or(|m| cores >= m)
            && t.max_core.is_none_or(|m| cores <= m)
            && t.min_ram_per_core.is_none_or(|m| ram_per_core >= m)
            && t.max_ram_per_core.is_none_or(|m| ram_per_core <= m)
    };
    types
        .iter()
        .find(|t| fits(t))
        .map_or_else(|| "Undefined".to_string(), |t| t.name.clone())
}

/// The leaves of upstream's tree of global shares, in the order upstream tries them: the
/// top-level shares in the table's order, each followed depth first by its children. With no
/// shares at all the tree is its root alone, `root`.
#[derive(Default)]
struct ShareLeaves {
    leaves: Vec<ShareRule>,
}

struct ShareRule {
    name: String,
    prodsourcelabel: Option<regex::Regex>,
    workinggroup: Option<regex::Regex>,
    processingtype: Option<regex::Regex>,
    rtype: Option<regex::Regex>,
}

impl ShareLeaves {
    fn new(shares: &[GlobalShare]) -> ShareLeaves {
        // Upstream matches with Python's re.match: anchored at the start only. A pattern that
        // does not compile matches nothing.
        let pattern = |p: &Option<String>| {
            p.as_ref()
                .map(|p| regex::Regex::new(&format!("^(?:{p})")).unwrap_or_else(|_| never()))
        };
        fn never() -> regex::Regex {
            regex::Regex::new("[^\\s\\S]").unwrap_or_else(|_| unreachable!("a fixed pattern"))
        }
        fn visit<'a>(
            share: &'a GlobalShare,
            shares: &'a [GlobalShare],
            depth: usize,
            out: &mut Vec<&'a GlobalShare>,
        ) {
            let children: Vec<&GlobalShare> = shares
                .iter()
                .filter(|s| s.parent.as_deref() == Some(share.name.as_str()))
                .collect();
            // A cycle in the table cannot hang a submission.
            if children.is_empty() || depth > 16 {
                out.push(share);
            }
            for child in children.into_iter().take_while(|_| depth <= 16) {
                visit(child, shares, depth + 1, out);
            }
        }
        let mut found = Vec::new();
        for top in shares.iter().filter(|s| s.parent.is_none()) {
            visit(top, shares, 0, &mut found);
        }
        let leaves = if found.is_empty() {
            vec![ShareRule {
                name: "root".into(),
                prodsourcelabel: None,
                workinggroup: None,
                processingtype: None,
                rtype: None,
            }]
        } else {
            found
                .into_iter()
                .map(|s| ShareRule {
                    name: s.name.clone(),
                    prodsourcelabel: pattern(&s.prodsourcelabel),
                    workinggroup: pattern(&s.workinggroup),
                    processingtype: pattern(&s.processingtype),
                    rtype: pattern(&s.rtype),
                })
                .collect()
        };
        ShareLeaves { leaves }
    }

    /// The first leaf the job matches (`Express` for an event-service merge, as upstream),
    /// `Undefined` when none does. An unset attribute is matched as upstream's text `NULL`;
    /// a leaf's resource-type pattern is matched against the type of the job's queue.
    fn share_for(&self, job: &JobSpec, queue: Option<&QueueSpec>) -> String {
        if job.get_i64(JobAttr::eventService) == Some(2) {
            return "Express".into();
        }
        let text = |attr| job.get_str(attr).unwrap_or("NULL");
        let queue_type = queue
            .and_then(|q| q.data.get("type"))
            .and_then(|t| t.as_str());
        let fits = |rule: &Option<regex::Regex>, value: &str| {
            rule.as_ref().is_none_or(|r| r.is_match(value))
        };
        self.leaves
            .iter()
            .find(|leaf| {
                fits(&leaf.prodsourcelabel, text(JobAttr::prodSourceLabel))
                    && fits(&leaf.workinggroup, text(JobAttr::workingGroup))
                    && fits(&leaf.processingtype, text(JobAttr::processingType))
                    && (leaf.rtype.is_none()
                        || job.get(JobAttr::computingSite).is_null()
                        || queue_type.is_some_and(|t| fits(&leaf.rtype, t)))
            })
            .map_or_else(|| "Undefined".into(), |leaf| leaf.name.clone())
    }
}

/// A job's `job_label` as upstream derives it from the queue it names: `user` on analysis
/// queues and for analysis labels on unified ones, otherwise (and for an unknown queue or none)
/// `managed`.
fn job_label(prod_source_label: Option<&str>, queue: Option<&QueueSpec>) -> &'static str {
    use panda_core::QueueType;
    let analysis_label = matches!(prod_source_label, Some("user" | "panda"));
    match queue.map(|q| &q.queue_type) {
        Some(QueueType::Analysis) => "user",
        Some(QueueType::Unified) if analysis_label => "user",
        _ => "managed",
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
    use super::{job_label, scope_of_dataset};

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

    #[test]
    fn the_resource_type_is_the_first_whose_bounds_the_job_fits() {
        use panda_core::{JobAttr, JobSpec, Value};
        use panda_store::ResourceType;
        let kind = |name: &str, cores: (Option<i64>, Option<i64>), ram: Option<i64>| ResourceType {
            name: name.into(),
            min_core: cores.0,
            max_core: cores.1,
            min_ram_per_core: None,
            max_ram_per_core: ram,
        };
        let types = [
            kind("SCORE", (Some(1), Some(1)), Some(2000)),
            kind("SCORE_HIMEM", (Some(1), Some(1)), None),
            kind("MCORE", (Some(2), None), Some(2000)),
        ];
        let job = |cores: Option<i64>, ram: i64| {
            let mut job = JobSpec::new();
            job.set(JobAttr::coreCount, Value::Int(cores));
            job.set(JobAttr::minRamCount, Value::Int(Some(ram)));
            job
        };
        assert_eq!(super::resource_type_of(&job(None, 1000), &types), "SCORE");
        assert_eq!(
            super::resource_type_of(&job(Some(1), 4000), &types),
            "SCORE_HIMEM"
        );
        assert_eq!(
            super::resource_type_of(&job(Some(0), 8000), &types),
            "MCORE"
        );
        assert_eq!(
            super::resource_type_of(&job(Some(8), 32000), &types),
            "Undefined"
        );
    }

    #[test]
    fn a_job_belongs_to_the_first_leaf_share_it_matches() {
        use panda_core::{JobAttr, JobSpec};
        use panda_store::GlobalShare;
        let share = |name: &str, parent: Option<&str>, label: Option<&str>| GlobalShare {
            name: name.into(),
            parent: parent.map(str::to_string),
            prodsourcelabel: label.map(str::to_string),
            workinggroup: None,
            processingtype: None,
            rtype: None,
        };
        let job = |label: &str| {
            let mut job = JobSpec::new();
            job.set_str(JobAttr::prodSourceLabel, label).expect("label");
            job
        };
        assert_eq!(
            super::ShareLeaves::new(&[]).share_for(&job("managed"), None),
            "root"
        );
        let tree = super::ShareLeaves::new(&[
            share("Production", None, Some("managed")),
            share("Analysis", None, Some("user|panda")),
            share("MC", Some("Production"), Some("managed")),
            share("Test", Some("Production"), Some("prod_test")),
        ]);
        assert_eq!(tree.share_for(&job("managed"), None), "MC");
        assert_eq!(tree.share_for(&job("prod_test"), None), "Test");
        assert_eq!(tree.share_for(&job("panda"), None), "Analysis");
        assert_eq!(tree.share_for(&job("install"), None), "Undefined");
    }

    #[test]
    fn the_job_label_follows_the_named_queue() {
        use panda_core::QueueSpec;
        let queue = |kind: &str| {
            QueueSpec::from_json("Q", serde_json::json!({"type": kind, "status": "online"}))
        };
        let (analysis, unified, production) =
            (queue("analysis"), queue("unified"), queue("production"));
        assert_eq!(job_label(Some("managed"), Some(&analysis)), "user");
        assert_eq!(job_label(Some("user"), Some(&unified)), "user");
        assert_eq!(job_label(Some("managed"), Some(&unified)), "managed");
        assert_eq!(job_label(Some("user"), Some(&production)), "managed");
        assert_eq!(job_label(Some("user"), None), "managed");
    }
}
