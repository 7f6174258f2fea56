//! Tasks: registration (`task/submit`) and the commands kill, finish, retry, pause and resume.
//!
//! Upstream queues a submission in DEFT and commands in `PRODSYS_COMM`, and JEDI applies
//! them minutes later. We have no DEFT: the server writes the task to
//! `jedi_tasks`/`jedi_taskparams` itself, with status `registered` (task processing takes it
//! from there), and applies a command at once with JEDI's transitions: kill → `aborting`
//! (`aborted` when none of the task's jobs is still running), finish → `finishing`
//! (`finished` likewise), retry → `ready` (failed files get new attempts), pause → `paused`
//! (the status before in `oldStatus`), resume → that status again. The statuses a command is
//! refused in, the return codes and the messages are upstream's, so pbook and prun read them
//! as they would from upstream.

use panda_core::identity::{clean_user_id, Identity};
use panda_core::{task_status_is_final, JobTable, TaskAttr, TaskSpec, Value};
use panda_store::ports;
use panda_store::Decision;
use serde_json::{Map, Value as Json};

use crate::error::ServiceError;
use crate::kill::may_change;
use crate::JobService;

/// Return codes of task commands, as upstream's `properErrorCode`.
pub mod code {
    pub const OK: i64 = 0;
    pub const FAILED: i64 = 1;
    pub const NOT_FOUND: i64 = 2;
    pub const DUPLICATE: i64 = 2;
    pub const WRONG_STATUS: i64 = 4;
}

/// A user command on a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskCommand {
    Kill,
    Finish {
        soft: bool,
    },
    Retry,
    /// Stop generating jobs: `paused`, the status before kept in `oldStatus`.
    Pause,
    /// Back to the status before the pause.
    Resume,
    /// Let files waiting for staging go (upstream's `release`). Nothing is staged here, so
    /// an accepted release changes nothing.
    Release,
    /// End scouting at once (upstream's `avalanche`): accepted only in `scouting`, which
    /// tasks here never are.
    Avalanche,
}

impl TaskCommand {
    fn name(self) -> &'static str {
        match self {
            TaskCommand::Kill => "kill",
            TaskCommand::Finish { .. } => "finish",
            TaskCommand::Retry => "retry",
            TaskCommand::Pause => "pause",
            TaskCommand::Resume => "resume",
            TaskCommand::Release => "release",
            TaskCommand::Avalanche => "avalanche",
        }
    }

    /// Whether the command is accepted in `status` (upstream's rules).
    fn allowed_in(self, status: &str) -> bool {
        match self {
            TaskCommand::Kill | TaskCommand::Finish { .. } => !matches!(
                status,
                "finished"
                    | "done"
                    | "prepared"
                    | "broken"
                    | "aborted"
                    | "toabort"
                    | "aborting"
                    | "failed"
            ),
            TaskCommand::Retry => matches!(status, "finished" | "failed" | "exhausted"),
            TaskCommand::Pause => !matches!(
                status,
                "finished" | "failed" | "done" | "aborted" | "broken" | "paused"
            ),
            TaskCommand::Resume => matches!(status, "paused" | "throttled" | "staging"),
            TaskCommand::Release => matches!(
                status,
                "scouting" | "pending" | "running" | "ready" | "assigning" | "defined"
            ),
            TaskCommand::Avalanche => status == "scouting",
        }
    }
}

/// What a task submission or command answers: upstream's code and message, and the task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOutcome {
    pub code: i64,
    pub message: String,
    pub task_id: Option<i64>,
}

/// Task-parameter keys copied into `jedi_tasks` columns at registration (the rest is JEDI's
/// refinement, which comes with job generation).
const COPIED_PARAMETERS: &[(&str, TaskAttr)] = &[
    ("taskName", TaskAttr::taskName),
    ("vo", TaskAttr::vo),
    ("prodSourceLabel", TaskAttr::prodSourceLabel),
    ("workingGroup", TaskAttr::workingGroup),
    ("taskType", TaskAttr::taskType),
    ("processingType", TaskAttr::processingType),
    ("taskPriority", TaskAttr::taskPriority),
    ("architecture", TaskAttr::architecture),
    ("transUses", TaskAttr::transUses),
    ("transHome", TaskAttr::transHome),
    ("transPath", TaskAttr::transPath),
    ("coreCount", TaskAttr::coreCount),
    ("ramCount", TaskAttr::ramCount),
    ("ramUnit", TaskAttr::ramUnit),
    ("walltime", TaskAttr::walltime),
    ("walltimeUnit", TaskAttr::walltimeUnit),
    ("cloud", TaskAttr::cloud),
    ("site", TaskAttr::site),
    ("nucleus", TaskAttr::nucleus),
    ("campaign", TaskAttr::campaign),
    ("container_name", TaskAttr::container_name),
    ("countryGroup", TaskAttr::countryGroup),
    ("reqID", TaskAttr::reqID),
    ("ticketID", TaskAttr::ticketID),
    ("ticketSystemType", TaskAttr::ticketSystemType),
];

fn parameter_text(value: &Json) -> Option<String> {
    match value {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(if *b { "True" } else { "False" }.into()),
        _ => None,
    }
}

/// Sets a task's status and its `superStatus` (which JEDI keeps equal to the status for the
/// statuses used here).
fn set_status(task: &mut TaskSpec, status: &str) {
    task.set_str(TaskAttr::status, status).ok();
    task.set_str(TaskAttr::superStatus, status).ok();
}

/// The caller's user name as tasks record it.
pub fn user_name(caller: &Identity) -> String {
    caller
        .dn
        .as_deref()
        .map(clean_user_id)
        .unwrap_or_else(|| "anonymous".into())
}

impl JobService {
    /// Registers a task from its parameters (`insertTaskParams`). Bad parameters are a
    /// `BadRequest` naming the key; a unique task name already active is code 2.
    pub async fn submit_task(
        &self,
        caller: &Identity,
        mut parameters: Map<String, Json>,
        parent_tid: Option<i64>,
    ) -> Result<TaskOutcome, ServiceError> {
        let user = user_name(caller);
        if !caller.production || !parameters.contains_key("userName") {
            parameters.insert("userName".into(), Json::String(user.clone()));
        }
        if !caller.production || !parameters.contains_key("taskType") {
            parameters.insert("taskType".into(), Json::String("anal".into()));
            if !caller.production {
                parameters.insert("taskPriority".into(), Json::from(1000));
            }
        }
        let Some(name) = parameters.get("taskName").and_then(Json::as_str) else {
            return Err(ServiceError::BadRequest(
                "the task parameters need taskName, a string".into(),
            ));
        };
        let name = name.to_string();
        let mut task = TaskSpec::new();
        for (key, attr) in COPIED_PARAMETERS {
            // prun sends null for what it leaves unset (`architecture`, `site`, ...).
            let Some(raw) = parameters.get(*key).filter(|v| !v.is_null()) else {
                continue;
            };
            let text = parameter_text(raw).ok_or_else(|| {
                ServiceError::BadRequest(format!("task parameter {key} must be a scalar"))
            })?;
            task.set_str(*attr, &text)
                .map_err(|e| ServiceError::BadRequest(format!("task parameter {key}: {e}")))?;
        }
        let owner = parameters
            .get("userName")
            .and_then(Json::as_str)
            .unwrap_or(&user)
            .to_string();
        task.set_str(TaskAttr::userName, &owner).ok();
        set_status(&mut task, "registered");
        task.set(TaskAttr::attemptNr, Value::Int(Some(0)));
        let priority = task.get(TaskAttr::taskPriority).clone();
        task.set(TaskAttr::currentPriority, priority);
        if let Some(parent) = parent_tid {
            task.set(TaskAttr::parent_tid, Value::Int(Some(parent)));
        }
        let unique = parameters
            .get("uniqueTaskName")
            .is_some_and(|v| v.as_bool() == Some(true));
        if unique && task.get_str(TaskAttr::taskType) == Some("anal") {
            if let Some(existing) = self
                .stores
                .tasks
                .task_by_name(
                    task.get(TaskAttr::vo),
                    task.get(TaskAttr::prodSourceLabel),
                    &owner,
                    &name,
                )
                .await?
                .filter(|t| {
                    !t.get_str(TaskAttr::status)
                        .is_some_and(task_status_is_final)
                })
            {
                let id = existing.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
                return Ok(TaskOutcome {
                    code: code::DUPLICATE,
                    message: format!(
                        "taskName={name} is already used by jediTaskID={id} which is still active"
                    ),
                    task_id: Some(id),
                });
            }
        }
        let text = serde_json::to_string(&parameters)
            .map_err(|e| ServiceError::BadRequest(format!("task parameters: {e}")))?;
        let task = self.stores.tasks.insert_task(task, &text).await?;
        let id = task.get_i64(TaskAttr::jediTaskID).unwrap_or_default();
        if parent_tid.is_none() {
            ports::change_task(self.stores.changes.as_ref(), id, |t| {
                t.set(TaskAttr::parent_tid, Value::Int(Some(id)));
                Decision::Write(())
            })
            .await?;
        }
        Ok(TaskOutcome {
            code: code::OK,
            message: format!("succeeded. new jediTaskID={id}"),
            task_id: Some(id),
        })
    }

    /// Whether the caller owns the task or has the production role; `None` when the task
    /// does not exist.
    pub async fn may_change_task(
        &self,
        caller: &Identity,
        task_id: i64,
    ) -> Result<Option<bool>, ServiceError> {
        Ok(self
            .stores
            .tasks
            .get_task(task_id)
            .await?
            .map(|task| may_change(caller, task.get_str(TaskAttr::userName))))
    }

    /// Applies kill, finish or retry to a task.
    pub async fn task_command(
        &self,
        caller: &Identity,
        task_id: i64,
        command: TaskCommand,
    ) -> Result<TaskOutcome, ServiceError> {
        let name = command.name();
        let who = user_name(caller);
        let outcome = ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
            let status = task.get_str(TaskAttr::status).unwrap_or("").to_string();
            if !command.allowed_in(&status) {
                let extra = "";
                return Decision::Keep(Err(format!(
                    "Command rejected: the {name} command is not accepted if the task is in \
                         {status} status {extra}"
                )));
            }
            if command == TaskCommand::Retry && status == "exhausted" && !caller.production {
                return Decision::Keep(Err(format!(
                    "Command rejected: the {name} command is not accepted if the task is in \
                         {status} status and production role is missing"
                )));
            }
            if matches!(command, TaskCommand::Release | TaskCommand::Avalanche) {
                return Decision::Keep(Ok(()));
            }
            let before = task.get_str(TaskAttr::oldStatus).map(str::to_string);
            let next = match command {
                TaskCommand::Kill => "aborting".to_string(),
                TaskCommand::Finish { .. } => "finishing".to_string(),
                TaskCommand::Retry => "ready".to_string(),
                TaskCommand::Pause => "paused".to_string(),
                // A task paused before it had an earlier status goes back to `ready`.
                TaskCommand::Resume => before.unwrap_or_else(|| "ready".into()),
                TaskCommand::Release | TaskCommand::Avalanche => status.clone(),
            };
            match command {
                TaskCommand::Resume => task.set(TaskAttr::oldStatus, Value::Text(None)),
                TaskCommand::Pause if matches!(status.as_str(), "throttled" | "pending") => {}
                _ => {
                    task.set_str(TaskAttr::oldStatus, &status).ok();
                }
            }
            set_status(task, &next);
            let qualifier = match command {
                TaskCommand::Finish { soft: true } => "soft ",
                _ => "",
            };
            task.set_str(
                TaskAttr::errorDialog,
                &format!("{qualifier}{name} by {who}"),
            )
            .ok();
            Decision::Write(Ok(()))
        })
        .await?;
        match outcome {
            None => Ok(TaskOutcome {
                code: code::NOT_FOUND,
                message: format!("jediTaskID={task_id} not found"),
                task_id: None,
            }),
            Some((_, Err(message))) => Ok(TaskOutcome {
                code: code::WRONG_STATUS,
                message,
                task_id: Some(task_id),
            }),
            Some((_, Ok(()))) => {
                self.carry_out(caller, task_id, command).await?;
                Ok(TaskOutcome {
                    code: code::OK,
                    message: registered(name, task_id),
                    task_id: Some(task_id),
                })
            }
        }
    }

    /// The part of a command JEDI would carry out: kill (and hard finish) kill the task's
    /// unfinished jobs; the task reaches its final status when no job is left running.
    async fn carry_out(
        &self,
        caller: &Identity,
        task_id: i64,
        command: TaskCommand,
    ) -> Result<(), ServiceError> {
        let (kill_jobs, done) = match command {
            TaskCommand::Kill => (true, "aborted"),
            TaskCommand::Finish { soft } => (!soft, "finished"),
            TaskCommand::Pause
            | TaskCommand::Resume
            | TaskCommand::Release
            | TaskCommand::Avalanche => return Ok(()),
            TaskCommand::Retry => {
                // JEDI's part of a retry: the failed files get the task's attempts again.
                let params = self.stores.tasks.task_parameters(task_id).await?;
                let attempts = crate::task_processing::retry_attempts(params.as_deref());
                let reset = self
                    .stores
                    .jedi
                    .reset_failed_files(task_id, attempts)
                    .await?;
                tracing::info!(target: "panda::jedi", task_id, files = reset, "task retried");
                return Ok(());
            }
        };
        let briefs = self
            .stores
            .jobs
            .job_briefs(
                &self.stores.tasks.task_job_ids(task_id).await?,
                &[JobTable::Defined, JobTable::Active],
            )
            .await?;
        let unfinished: Vec<i64> = briefs.keys().copied().collect();
        let remaining = if kill_jobs && !unfinished.is_empty() {
            self.kill_jobs(caller, &unfinished, None).await?;
            // Running jobs stay until their pilots act on `tobekilled`.
            self.stores
                .jobs
                .job_briefs(&unfinished, &[JobTable::Defined, JobTable::Active])
                .await?
                .len()
        } else {
            unfinished.len()
        };
        if remaining == 0 {
            ports::change_task(self.stores.changes.as_ref(), task_id, |task| {
                set_status(task, done);
                Decision::Write(())
            })
            .await?;
        }
        Ok(())
    }
}

/// Upstream's answer to an accepted task command, word for word (upstream's JEDI carries the
/// command out later; ours has done so when it answers, but clients and scripts read this
/// text).
pub(crate) fn registered(command: &str, task_id: i64) -> String {
    format!(
        "command={command} is registered for task ID {task_id}. will be executed in a few minutes"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_refused_in_upstreams_statuses() {
        assert!(TaskCommand::Kill.allowed_in("registered"));
        assert!(!TaskCommand::Kill.allowed_in("aborting"));
        assert!(!TaskCommand::Finish { soft: true }.allowed_in("done"));
        assert!(TaskCommand::Retry.allowed_in("failed"));
        assert!(!TaskCommand::Retry.allowed_in("running"));
    }
}
