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
