//! The task functions beyond submission and the user commands: what the production role
//! changes (priority, attempts, reactivation, modification time) and the reads of a task's
//! datasets, files and job metadata. Return codes and messages are upstream's.

use chrono::Duration;
use panda_core::{time, TaskAttr};
use panda_store::{ports, DatasetFiles, Decision};
use serde_json::Value as Json;

use crate::error::ServiceError;
use crate::tasks::TaskOutcome;
use crate::JobService;

/// Most files `get_datasets_and_files` lists in one answer (a task's largest size).
pub const MAX_LISTED_FILES: i64 = crate::task_processing::MAX_TASK_FILES;
/// Most jobs whose metadata one call returns (upstream's ID limit of a call).
pub const MAX_METADATA_JOBS: i64 = 5500;
/// Largest attempt increase accepted at once.
pub const MAX_ATTEMPT_INCREASE: i64 = 100;
/// Largest modification-time offset accepted, in hours (a year).
pub const MAX_HOUR_OFFSET: i64 = 24 * 366;

fn outcome(code: i64, message: String, task_id: i64) -> TaskOutcome {
    TaskOutcome {
        code,
        message,
        task_id: Some(task_id),
    }
}

impl JobService {
    /// `task/change_priority`: the task's and its waiting jobs' current priority; `false`
    /// when there is no such task.
    pub async fn change_task_priority(
        &self,
        task_id: i64,
        priority: i64,
    ) -> Result<bool, ServiceError> {
        Ok(self
            .stores
            .jedi
            .set_task_priority(task_id, priority)
            .await?)
    }

    /// `task/change_modification_time`: now plus `hour_offset` hours.
    pub async fn change_task_modification_time(
        &self,
        task_id: i64,
        hour_offset: i64,
    ) -> Result<bool, ServiceError> {
        if hour_offset.abs() > MAX_HOUR_OFFSET {
            return Err(ServiceError::BadRequest(format!(
                "hour_offset {hour_offset} is out of range; at most {MAX_HOUR_OFFSET} hours either way"
            )));
        }
        let at = time::now() + Duration::hours(hour_offset);
        Ok(self
            .stores
            .jedi
            .set_task_modification_time(task_id, at)
            .await?)
    }

    /// `task/increase_attempts`: code 0 with the counts, 1 for an unknown task, 2 when the
    /// task (or its status before a pause) is not running, scouting or ready.
    pub async fn increase_task_attempts(
        &self,
        task_id: i64,
        increase: i64,
    ) -> Result<TaskOutcome, ServiceError> {
        if !(0..=MAX_ATTEMPT_INCREASE).contains(&increase) {
            return Err(ServiceError::BadRequest(format!(
                "increase must be a positive integer of at most {MAX_ATTEMPT_INCREASE}, got {increase}"
            )));
        }
        let Some(task) = self.stores.tasks.get_task(task_id).await? else {
            return Ok(outcome(
                1,
                format!("jediTaskID={task_id} not found"),
                task_id,
            ));
        };
        let active = ["running", "scouting", "ready"];
        let (status, old) = (
            task.get_str(TaskAttr::status).unwrap_or(""),
            task.get_str(TaskAttr::oldStatus).unwrap_or(""),
        );
        if !active.contains(&status) && !active.contains(&old) {
            return Ok(outcome(
                2,
                format!(
                    "command rejected since status={status} or oldStatus={old} not in {active:?}"
                ),
                task_id,
            ));
        }
        let (increased, reactivated) = self
            .stores
            .jedi
            .increase_file_attempts(task_id, increase)
            .await?;
        Ok(outcome(
            0,
            format!("increased attemptNr for {increased} inputs ({reactivated} reactivated)"),
            task_id,
        ))
    }

    /// `task/reactivate`: every input file `ready` again and the task `ready`.
    pub async fn reactivate_task(
        &self,
        task_id: i64,
        keep_attempt_nr: bool,
    ) -> Result<TaskOutcome, ServiceError> {
        let changed = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            task.set(TaskAttr::oldStatus, task.get(TaskAttr::status).clone());
            task.set_str(TaskAttr::status, "ready").ok();
            task.set_str(TaskAttr::superStatus, "ready").ok();
            Decision::Write(())
        })
        .await?;
        if changed.is_none() {
            return Ok(outcome(
                2,
                format!("jediTaskID={task_id} not found"),
                task_id,
            ));
        }
        let files = self
            .stores
            .jedi
            .reactivate_task_files(task_id, keep_attempt_nr)
            .await?;
        Ok(outcome(
            0,
            format!("updated {files} inputs and task {task_id} was reactivated "),
            task_id,
        ))
    }

    /// `task/get_datasets_and_files`: the task's datasets of these types with their files.
    pub async fn task_datasets_and_files(
        &self,
        task_id: i64,
        kinds: &[String],
    ) -> Result<Vec<DatasetFiles>, ServiceError> {
        if kinds.is_empty() || kinds.len() > 20 {
            return Err(ServiceError::BadRequest(
                "dataset_types must name 1 to 20 dataset types".into(),
            ));
        }
        Ok(self
            .stores
            .jedi
            .task_datasets_and_files(task_id, kinds, MAX_LISTED_FILES)
            .await?)
    }

    /// The task's job-parameter template (JEDI's `jedi_jobparams_template`), once refined.
    pub async fn job_parameters_template(
        &self,
        task_id: i64,
    ) -> Result<Option<String>, ServiceError> {
        let layout = self.stores.jedi.task_layout(task_id).await?;
        Ok(Some(layout.job_params_template).filter(|t| !t.is_empty()))
    }

    /// `job/get_metadata_for_analysis_jobs`: the metadata of the task's finished user jobs,
    /// by PandaID; metadata that is not JSON is left out, as upstream.
    pub async fn analysis_job_metadata(
        &self,
        task_id: i64,
    ) -> Result<Vec<(i64, Json)>, ServiceError> {
        Ok(self
            .stores
            .jedi
            .analysis_job_metadata(task_id, MAX_METADATA_JOBS)
            .await?
            .into_iter()
            .filter_map(|(id, text)| Some((id, serde_json::from_str(&text).ok()?)))
            .collect())
    }
}

/// The attributes `task/change_attribute` may change, as upstream: name and column.
pub const CHANGEABLE_ATTRIBUTES: [(&str, TaskAttr); 4] = [
    ("ramCount", TaskAttr::ramCount),
    ("wallTime", TaskAttr::walltime),
    ("cpuTime", TaskAttr::cpuTime),
    ("coreCount", TaskAttr::coreCount),
];

/// The split rules `task/change_split_rule` may change, by upstream's two-letter tags.
pub const CHANGEABLE_SPLIT_RULES: [&str; 18] = [
    "AI", "TW", "EC", "MF", "NG", "NI", "NF", "ES", "NJ", "AV", "IL", "LI", "LC", "CC", "OT", "UZ",
    "IM", "NP",
];

/// A split rule string (`TAG=value,TAG=value`) with `tag` set to `value`, or removed when
/// the value is empty or `None`.
pub fn with_split_rule(rules: Option<&str>, tag: &str, value: &str) -> String {
    let mut kept: Vec<String> = rules
        .unwrap_or("")
        .split(',')
        .filter(|r| !r.is_empty() && r.split('=').next() != Some(tag))
        .map(str::to_string)
        .collect();
    if !value.is_empty() && value != "None" {
        kept.push(format!("{tag}={value}"));
    }
    kept.join(",")
}

/// How a reassignment treats the task's jobs (upstream's `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReassignMode {
    /// Kill every unfinished job (the default).
    Kill,
    /// Kill only the jobs not yet with a pilot.
    Soft,
    /// Kill none.
    NoKill,
}

impl ReassignMode {
    pub fn parse(mode: Option<&str>) -> Result<ReassignMode, ServiceError> {
        match mode {
            None | Some("") | Some("kill") => Ok(ReassignMode::Kill),
            Some("soft") => Ok(ReassignMode::Soft),
            Some("nokill") => Ok(ReassignMode::NoKill),
            Some(other) => Err(ServiceError::BadRequest(format!(
                "mode {other:?} is not kill, soft or nokill"
            ))),
        }
    }
}

impl JobService {
    /// `task/change_attribute` (production role): one of [`CHANGEABLE_ATTRIBUTES`].
    pub async fn change_task_attribute(
        &self,
        task_id: i64,
        name: &str,
        value: i64,
    ) -> Result<bool, ServiceError> {
        let Some((_, attr)) = CHANGEABLE_ATTRIBUTES.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = CHANGEABLE_ATTRIBUTES.iter().map(|(n, _)| *n).collect();
            return Err(ServiceError::BadRequest(format!(
                "{name} is not a valid attribute. Valid attributes are {names:?}"
            )));
        };
        let changed = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            task.set(*attr, panda_core::Value::Int(Some(value)));
            Decision::Write(())
        })
        .await?;
        Ok(changed.is_some())
    }

    /// `task/change_split_rule` (production role): one of [`CHANGEABLE_SPLIT_RULES`], set to
    /// `value` (removed when the value is empty or `None`).
    pub async fn change_task_split_rule(
        &self,
        task_id: i64,
        tag: &str,
        value: &str,
    ) -> Result<bool, ServiceError> {
        if !CHANGEABLE_SPLIT_RULES.contains(&tag) {
            return Err(ServiceError::BadRequest(format!(
                "{tag} is not a valid attribute. Valid attributes are {CHANGEABLE_SPLIT_RULES:?}"
            )));
        }
        if value.len() > 64 || value.contains(',') || value.contains('=') {
            return Err(ServiceError::BadRequest(format!(
                "split rule value {value:?} must be at most 64 characters without ',' or '='"
            )));
        }
        let changed = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            let rules = with_split_rule(task.get_str(TaskAttr::splitRule), tag, value);
            task.set_str(TaskAttr::splitRule, &rules).ok();
            Decision::Write(())
        })
        .await?;
        Ok(changed.is_some())
    }
}

/// The job statuses a soft reassignment leaves alone: the job is with a pilot.
const WITH_A_PILOT: [&str; 5] = ["sent", "starting", "running", "holding", "transferring"];

/// upstream's kill code for a reassignment.
const REASSIGN_KILL_CODE: i64 = 51;

impl JobService {
    /// `task/reassign`: the task's new site (or cloud, or nucleus); its unfinished jobs are
    /// killed as `mode` says, and their files go to new jobs there. Code 0, 2 for an unknown
    /// task, 4 when the task is finished or failed.
    pub async fn reassign_task(
        &self,
        caller: &panda_core::identity::Identity,
        task_id: i64,
        site: Option<&str>,
        cloud: Option<&str>,
        nucleus: Option<&str>,
        mode: ReassignMode,
    ) -> Result<TaskOutcome, ServiceError> {
        let (attr, value) = match (site, nucleus, cloud) {
            (Some(site), _, _) => (TaskAttr::site, site),
            (None, Some(nucleus), _) => (TaskAttr::nucleus, nucleus),
            (None, None, Some(cloud)) => (TaskAttr::cloud, cloud),
            _ => {
                return Err(ServiceError::BadRequest(
                    "reassign needs site, nucleus or cloud".into(),
                ))
            }
        };
        if value.is_empty() || value.len() > 60 {
            return Err(ServiceError::BadRequest(format!(
                "the new {} must be 1 to 60 characters",
                attr_name(attr)
            )));
        }
        let changed = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            let status = task.get_str(TaskAttr::status).unwrap_or("").to_string();
            if matches!(
                status.as_str(),
                "failed" | "aborted" | "broken" | "finished" | "done"
            ) {
                return Decision::Keep(Err(status));
            }
            task.set_str(attr, value).ok();
            Decision::Write(Ok(()))
        })
        .await?;
        match changed {
            None => {
                return Ok(outcome(
                    2,
                    format!("jediTaskID={task_id} not found"),
                    task_id,
                ))
            }
            Some((_, Err(status))) => {
                return Ok(outcome(
                    4,
                    format!(
                        "Command rejected: the reassign command is not accepted if the task is \
                         in {status} status "
                    ),
                    task_id,
                ))
            }
            Some((_, Ok(()))) => {}
        }
        if mode != ReassignMode::NoKill {
            let ids = self.stores.tasks.task_job_ids(task_id).await?;
            let briefs = self
                .stores
                .jobs
                .job_briefs(
                    &ids,
                    &[panda_core::JobTable::Defined, panda_core::JobTable::Active],
                )
                .await?;
            let victims: Vec<i64> = briefs
                .iter()
                .filter(|(_, b)| {
                    mode == ReassignMode::Kill || !WITH_A_PILOT.contains(&b.status.as_str())
                })
                .map(|(id, _)| *id)
                .collect();
            if !victims.is_empty() {
                self.kill_jobs(caller, &victims, Some(REASSIGN_KILL_CODE))
                    .await?;
            }
        }
        Ok(outcome(
            0,
            crate::tasks::registered("reassign", task_id),
            task_id,
        ))
    }
}

fn attr_name(attr: TaskAttr) -> &'static str {
    use panda_core::AttrSet;
    panda_core::task::TASK_ATTRIBUTES[attr.index()].name
}

/// Statuses a task is re-executed from (upstream's incexec: `reload_input`, and a retry with
/// new parameters).
const REOPENABLE: [&str; 5] = ["finished", "failed", "aborted", "done", "exhausted"];

/// The parameters a retry may change, as upstream keeps them (`dsFor*` as well); the
/// changeable split rules by their names.
const RETRY_PARAMETERS: &[&str] = &[
    "site",
    "cloud",
    "includedSite",
    "excludedSite",
    "cliParams",
    "nFiles",
    "nEvents",
    "fixedSandbox",
    "sourceURL",
    "currentPriority",
    "ramCount",
    "forceStaged",
    "allowIncompleteInDS",
    "t1Weight",
    "nEsConsumers",
    "nMaxFilesPerJob",
    "nGBPerJob",
    "noInputPooling",
    "nFilesPerJob",
    "nEventsPerWorker",
    "nJumboJobs",
    "avoidVP",
    "allowInputLAN",
    "useLocalIO",
    "noLoopingCheck",
    "maxCoreCount",
    "onlyTagsForFC",
    "useZipToPin",
    "ignoreMissingInDS",
    "noAutoPause",
];

/// Merges the keys a retry may change into `old`; the keys it ignored, for the log.
pub fn merge_retry_parameters(
    old: &mut serde_json::Map<String, Json>,
    new: &serde_json::Map<String, Json>,
) -> Vec<String> {
    let mut ignored = Vec::new();
    for (key, value) in new {
        let key = match key.as_str() {
            "priority" => "currentPriority",
            "loopingCheck" => {
                old.insert(
                    "noLoopingCheck".into(),
                    Json::Bool(value.as_bool() != Some(true)),
                );
                continue;
            }
            other => other,
        };
        if RETRY_PARAMETERS.contains(&key) || key.starts_with("dsFor") {
            if value.is_null() {
                old.remove(key);
            } else {
                old.insert(key.to_string(), value.clone());
            }
        } else {
            ignored.push(key.to_string());
        }
    }
    ignored
}

impl JobService {
    /// Re-executes a finished task (upstream's incexec): failed files get the task's
    /// attempts again, files added to its input dataset since are taken in, and the task is
    /// `ready`. Returns the number of new input files.
    async fn reopen_task(&self, task_id: i64) -> Result<u64, ServiceError> {
        let params_text = self.stores.tasks.task_parameters(task_id).await?;
        let attempts = crate::task_processing::retry_attempts(params_text.as_deref());
        self.stores
            .jedi
            .reset_failed_files(task_id, attempts)
            .await?;
        let params: serde_json::Map<String, Json> = params_text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let layout = self.stores.jedi.task_layout(task_id).await?;
        let mut added = 0;
        if let Some(master) = layout
            .datasets
            .iter()
            .find(|d| d.get_str(panda_core::DatasetAttr::r#type) == Some("input"))
        {
            let name = master
                .get_str(panda_core::DatasetAttr::datasetName)
                .unwrap_or("");
            let id = master
                .get_i64(panda_core::DatasetAttr::datasetID)
                .unwrap_or_default();
            if let Some(found) = self.catalog.dataset_files(name).await? {
                let files = crate::task_processing::input_files(&params, name, found)
                    .map_err(ServiceError::BadRequest)?;
                added = self
                    .stores
                    .jedi
                    .add_new_input_files(task_id, id, &files)
                    .await?;
            }
        }
        ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            task.set(TaskAttr::oldStatus, task.get(TaskAttr::status).clone());
            task.set_str(TaskAttr::status, "ready").ok();
            task.set_str(TaskAttr::superStatus, "ready").ok();
            task.set(TaskAttr::endTime, panda_core::Value::Time(None));
            Decision::Write(())
        })
        .await?;
        Ok(added)
    }

    /// `task/reload_input`: a finished task re-executed, its input dataset read again. Code
    /// 0, 2 for an unknown task, 4 in other statuses.
    pub async fn reload_task_input(&self, task_id: i64) -> Result<TaskOutcome, ServiceError> {
        let Some(task) = self.stores.tasks.get_task(task_id).await? else {
            return Ok(outcome(
                2,
                format!("jediTaskID={task_id} not found"),
                task_id,
            ));
        };
        let status = task.get_str(TaskAttr::status).unwrap_or("").to_string();
        if !REOPENABLE.contains(&status.as_str()) {
            return Ok(outcome(
                4,
                format!(
                    "Command rejected: the incexec command is not accepted if the task is in \
                     {status} status "
                ),
                task_id,
            ));
        }
        let added = self.reopen_task(task_id).await?;
        Ok(outcome(
            0,
            format!("command=incexec is registered for task ID {task_id} ({added} new inputs)"),
            task_id,
        ))
    }

    /// `task/retry` with `new_parameters`: code 3 when a finished task is re-executed with
    /// them, 5 when a running task's parameters were updated, 2 in other statuses.
    pub async fn retry_task_with_parameters(
        &self,
        task_id: i64,
        new: &serde_json::Map<String, Json>,
    ) -> Result<TaskOutcome, ServiceError> {
        let Some(task) = self.stores.tasks.get_task(task_id).await? else {
            return Ok(outcome(
                2,
                format!("jediTaskID={task_id} not found"),
                task_id,
            ));
        };
        let status = task.get_str(TaskAttr::status).unwrap_or("").to_string();
        let reopen = REOPENABLE.contains(&status.as_str());
        let update_only = matches!(status.as_str(), "running" | "scouting" | "pending")
            && task.get_str(TaskAttr::prodSourceLabel) == Some("user");
        if !reopen && !update_only {
            return Ok(outcome(
                2,
                format!(
                    "jediTaskID={task_id} is in the {status} state; retry it with new \
                     parameters once it is finished, failed or done"
                ),
                task_id,
            ));
        }
        let mut params: serde_json::Map<String, Json> = self
            .stores
            .tasks
            .task_parameters(task_id)
            .await?
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| {
                ServiceError::BadRequest(
                    "new parameter conversion failed: the task's parameters cannot be read".into(),
                )
            })?;
        let ignored = merge_retry_parameters(&mut params, new);
        if !ignored.is_empty() {
            tracing::info!(target: "panda::jedi", task_id, ?ignored, "retry parameters ignored");
        }
        let text = serde_json::to_string(&params).map_err(|e| {
            ServiceError::BadRequest(format!("new parameter conversion failed: {e}"))
        })?;
        self.stores.jedi.set_task_parameters(task_id, &text).await?;
        // What the task's columns carry of them.
        ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            for (key, attr) in [("site", TaskAttr::site), ("cloud", TaskAttr::cloud)] {
                if let Some(value) = params.get(key) {
                    let text = value.as_str().map(str::to_string);
                    task.set(attr, panda_core::Value::Text(text));
                }
            }
            for (key, attr) in [
                ("ramCount", TaskAttr::ramCount),
                ("currentPriority", TaskAttr::currentPriority),
            ] {
                if let Some(n) = params.get(key).and_then(Json::as_i64) {
                    task.set(attr, panda_core::Value::Int(Some(n)));
                }
            }
            Decision::Write(())
        })
        .await?;
        if update_only {
            return Ok(outcome(
                5,
                format!("{status}. new tasks params have been set to jediTaskID={task_id}. "),
                task_id,
            ));
        }
        self.reopen_task(task_id).await?;
        Ok(outcome(
            3,
            format!(
                "reactivation accepted. jediTaskID={task_id} (currently in {status} state) will \
                 be re-executed with old and/or new input"
            ),
            task_id,
        ))
    }
}

/// Job-cloning modes (upstream's `EventServiceUtils`): their names and the split rule value.
const JOB_CLONING_MODES: [(&str, i64); 2] = [("runonce", 1), ("storeonce", 2)];
/// The split rules job cloning sets, by their tags in `splitRule`: useJobCloning,
/// nEventsPerWorker, nEsConsumers, nSitesPerJob.
const JOB_CLONING_RULES: [&str; 4] = ["UC", "ES", "EC", "NS"];
/// `eventService` of a task with job cloning, and of a plain one.
const TASK_JOB_CLONING: i64 = 2;
const TASK_NORMAL: i64 = 0;
/// Most tasks one `reassign_global_share` changes.
pub const MAX_SHARE_TASKS: usize = 5500;

/// The job statuses whose jobs follow a task's new global share (running ones only when
/// asked).
const WAITING_STATUSES: [&str; 5] = ["pending", "defined", "assigned", "waiting", "activated"];

impl JobService {
    /// `task/enable_job_cloning` (production role): the split rules for cloning and
    /// `eventService = 2`; `Err` names a bad mode.
    pub async fn enable_job_cloning(
        &self,
        task_id: i64,
        mode: Option<&str>,
        multiplicity: Option<i64>,
        num_sites: Option<i64>,
    ) -> Result<bool, ServiceError> {
        let mode = mode.unwrap_or("runonce");
        let Some((_, value)) = JOB_CLONING_MODES.iter().find(|(name, _)| *name == mode) else {
            return Err(ServiceError::BadRequest(format!(
                "invalid job cloning mode: {mode}"
            )));
        };
        let (multiplicity, sites) = (multiplicity.unwrap_or(2), num_sites.unwrap_or(2));
        if !(1..=100).contains(&multiplicity) || !(1..=100).contains(&sites) {
            return Err(ServiceError::BadRequest(
                "multiplicity and num_sites must be 1 to 100".into(),
            ));
        }
        let changed = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            let mut rules = task.get_str(TaskAttr::splitRule).map(str::to_string);
            for (tag, v) in [
                ("UC", value.to_string()),
                ("ES", "1".to_string()),
                ("EC", multiplicity.to_string()),
                ("NS", sites.to_string()),
            ] {
                rules = Some(with_split_rule(rules.as_deref(), tag, &v));
            }
            task.set_str(TaskAttr::splitRule, rules.as_deref().unwrap_or(""))
                .ok();
            task.set(
                TaskAttr::eventService,
                panda_core::Value::Int(Some(TASK_JOB_CLONING)),
            );
            Decision::Write(())
        })
        .await?;
        Ok(changed.is_some())
    }

    /// `task/disable_job_cloning` (production role): the cloning rules removed and
    /// `eventService = 0`.
    pub async fn disable_job_cloning(&self, task_id: i64) -> Result<bool, ServiceError> {
        let changed = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            let mut rules = task.get_str(TaskAttr::splitRule).map(str::to_string);
            for tag in JOB_CLONING_RULES {
                rules = Some(with_split_rule(rules.as_deref(), tag, ""));
            }
            task.set_str(TaskAttr::splitRule, rules.as_deref().unwrap_or(""))
                .ok();
            task.set(
                TaskAttr::eventService,
                panda_core::Value::Int(Some(TASK_NORMAL)),
            );
            Decision::Write(())
        })
        .await?;
        Ok(changed.is_some())
    }

    /// `task/enable_jumbo_jobs` (production role): `useJumbo` `W` (or `D` with 0 jobs) and the
    /// split rules `NJ`, `MJ`. Code 0, 2 for an unknown task.
    pub async fn enable_jumbo_jobs(
        &self,
        task_id: i64,
        total: i64,
        per_site: Option<i64>,
    ) -> Result<TaskOutcome, ServiceError> {
        if !(0..=100_000).contains(&total) {
            return Err(ServiceError::BadRequest(format!(
                "jumbo_jobs_total must be 0 to 100000, got {total}"
            )));
        }
        let per_site = per_site.filter(|n| *n > 0).unwrap_or(total);
        let changed = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            let flag = if total == 0 { "D" } else { "W" };
            task.set_str(TaskAttr::useJumbo, flag).ok();
            let rules =
                with_split_rule(task.get_str(TaskAttr::splitRule), "NJ", &total.to_string());
            let rules = with_split_rule(Some(&rules), "MJ", &per_site.to_string());
            task.set_str(TaskAttr::splitRule, &rules).ok();
            Decision::Write(())
        })
        .await?;
        Ok(match changed {
            Some(_) => outcome(0, "done".into(), task_id),
            None => outcome(2, "task not found".into(), task_id),
        })
    }

    /// `task/reassign_global_share` (production role): the tasks' global share, and their
    /// waiting jobs' (running ones too with `running_jobs`). Returns the tasks changed.
    pub async fn reassign_global_share(
        &self,
        task_ids: &[i64],
        share: &str,
        running_jobs: bool,
    ) -> Result<usize, ServiceError> {
        if task_ids.len() > MAX_SHARE_TASKS {
            return Err(ServiceError::BadRequest(format!(
                "{} tasks; at most {MAX_SHARE_TASKS} per call",
                task_ids.len()
            )));
        }
        if share.is_empty() || share.len() > 32 {
            return Err(ServiceError::BadRequest(
                "the share must be a name of 1 to 32 characters".into(),
            ));
        }
        let mut statuses: Vec<&str> = WAITING_STATUSES.to_vec();
        if running_jobs {
            statuses.extend(["starting", "running"]);
        }
        let mut changed = 0;
        for id in task_ids {
            if self
                .stores
                .jedi
                .set_task_share(*id, share, &statuses)
                .await?
            {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// `task/get_jumbo_job_datasets`: managed tasks with jumbo jobs, finished or done,
    /// modified between `from_offset` and `to_offset` days ago, with their output datasets.
    pub async fn jumbo_job_datasets(
        &self,
        from_offset: i64,
        to_offset: i64,
    ) -> Result<Vec<(i64, String, Vec<String>)>, ServiceError> {
        if !(0..=366).contains(&from_offset) || !(0..=366).contains(&to_offset) {
            return Err(ServiceError::BadRequest(
                "from_offset and to_offset must be 0 to 366 days".into(),
            ));
        }
        let now = time::now();
        let (after, before) = (
            now - Duration::days(from_offset),
            now - Duration::days(to_offset),
        );
        Ok(self.stores.jedi.jumbo_task_datasets(after, before).await?)
    }
}
