//! Killing jobs (`job/kill`), as upstream's killJob: a job that is not `running` is archived at
//! once as `cancelled` (codes 2 and 4, "expire": `closed`, `toreassign`) with its outputs
//! failed; a running job gets `commandToPilot = tobekilled`, which its pilot receives with the
//! next heartbeat, and the Adder then archives it as `cancelled`. Only the job's owner or the
//! production role may kill a job.

use panda_core::identity::{clean_user_id, Identity};
use panda_core::{time, FileAttr, JobAttr, JobStatus, JobTable, Value};
use panda_store::ports;
use panda_store::{Decision, SideWrite, StoreError};

use crate::error::ServiceError;
use crate::JobService;

/// taskBuffer's `EC_Kill`.
pub const EC_KILL: i64 = 100;
/// taskBuffer's `EC_Expire`.
pub const EC_EXPIRE: i64 = 102;

/// Whether `caller` may change `owner`'s job: the owner (by cleaned DN) or the production role.
pub fn may_change(caller: &Identity, owner: Option<&str>) -> bool {
    caller.production
        || caller
            .dn
            .as_deref()
            .is_some_and(|dn| owner == Some(clean_user_id(dn).as_str()))
}

impl JobService {
    /// Kills jobs; returns, per PandaID, whether the kill was accepted.
    pub async fn kill_jobs(
        &self,
        caller: &Identity,
        ids: &[i64],
        code: Option<i64>,
    ) -> Result<Vec<bool>, ServiceError> {
        let who = caller
            .dn
            .as_deref()
            .map(clean_user_id)
            .unwrap_or_else(|| "anonymous".into());
        let mut results = Vec::with_capacity(ids.len());
        for id in ids {
            let outcome = ports::change_job(self.stores.changes.as_ref(), *id, |job, side| {
                let Some(status) = job.status().filter(|s| !s.is_final()) else {
                    return Ok(Decision::Keep(false));
                };
                if !may_change(caller, job.get_str(JobAttr::prodUserName)) {
                    return Ok(Decision::Keep(false));
                }
                job.set_str(JobAttr::commandToPilot, "tobekilled").ok();
                job.set_str(JobAttr::taskBufferErrorDiag, &format!("killed by {who}"))
                    .ok();
                if status == JobStatus::Running {
                    return Ok(Decision::Write(true));
                }
                let expire = matches!(code, Some(2) | Some(4));
                job.set(
                    JobAttr::taskBufferErrorCode,
                    Value::Int(Some(if expire { EC_EXPIRE } else { EC_KILL })),
                );
                if expire {
                    job.set_str(JobAttr::jobSubStatus, "toreassign").ok();
                }
                job.set_status(
                    if expire {
                        JobStatus::Closed
                    } else {
                        JobStatus::Cancelled
                    },
                    time::now(),
                );
                fail_outputs(job, side);
                Ok(Decision::Write(true))
            })
            .await;
            results.push(match outcome {
                Ok((_, accepted)) => accepted,
                Err(StoreError::JobNotFound(_)) => false,
                Err(e) => return Err(e.into()),
            });
        }
        Ok(results)
    }

    /// Sets `commandToPilot` (at most 250 characters) on an active job; production role only.
    pub async fn set_command(
        &self,
        caller: &Identity,
        id: i64,
        command: &str,
    ) -> Result<bool, ServiceError> {
        self.change_unfinished_job(caller, id, |job| {
            job.set_str(JobAttr::commandToPilot, command).ok();
        })
        .await
    }

    /// Turns debug mode (`dm` in `specialHandling`) on or off; production role only.
    pub async fn set_debug_mode(
        &self,
        caller: &Identity,
        id: i64,
        on: bool,
    ) -> Result<bool, ServiceError> {
        self.change_unfinished_job(caller, id, |job| {
            let tags = debug_tags(job.get_str(JobAttr::specialHandling), on);
            job.set(JobAttr::specialHandling, Value::Text(tags));
        })
        .await
    }

    /// The legacy `setDebugMode` as upstream: the job's owner or a production manager may turn
    /// debug mode on or off while the job waits or runs. The answer is upstream's sentence.
    pub async fn set_debug_mode_as_owner(
        &self,
        caller: &Identity,
        id: i64,
        on: bool,
    ) -> Result<String, ServiceError> {
        const CHANGEABLE: [&str; 6] = [
            "defined",
            "activated",
            "running",
            "sent",
            "starting",
            "assigned",
        ];
        let user = crate::user_name(caller);
        let outcome = ports::change_job(self.stores.changes.as_ref(), id, |job, _| {
            let status = job.get_str(JobAttr::jobStatus).unwrap_or("").to_string();
            if job.status().map(|s| s.table()) == Some(JobTable::Archived) {
                return Ok(Decision::Keep(format!("PandaID={id} not found in active DB")));
            }
            if !CHANGEABLE.contains(&status.as_str()) {
                return Ok(Decision::Keep(format!(
                    "Cannot set debugMode since the job status is {status} which is not in one of {CHANGEABLE:?}"
                )));
            }
            if !caller.production && job.get_str(JobAttr::prodUserName) != Some(user.as_str()) {
                return Ok(Decision::Keep(
                    "Permission denied. Not the owner or production manager".into(),
                ));
            }
            let current = job.get_str(JobAttr::specialHandling).map(str::to_string);
            let tags = debug_tags(current.as_deref(), on);
            if tags == current.filter(|c| !c.is_empty()) {
                return Ok(Decision::Keep("Already set accordingly".into()));
            }
            job.set(JobAttr::specialHandling, Value::Text(tags));
            Ok(Decision::Write("Succeeded".into()))
        })
        .await;
        match outcome {
            Ok((_, said)) => Ok(said),
            Err(StoreError::JobNotFound(_)) => Ok(format!("PandaID={id} not found in active DB")),
            Err(e) => Err(e.into()),
        }
    }

    /// An operator's change to a job that has not ended: production role only; false when the
    /// job is unknown or already archived.
    async fn change_unfinished_job(
        &self,
        caller: &Identity,
        id: i64,
        change: impl FnOnce(&mut panda_core::JobSpec) + Send,
    ) -> Result<bool, ServiceError> {
        if !caller.production {
            return Err(ServiceError::Forbidden(
                "production or pilot role required".into(),
            ));
        }
        let outcome = ports::change_job(self.stores.changes.as_ref(), id, |job, _| {
            if job.status().map(|s| s.table()) == Some(JobTable::Archived) {
                return Ok(Decision::Keep(false));
            }
            change(job);
            Ok(Decision::Write(true))
        })
        .await;
        match outcome {
            Ok((_, done)) => Ok(done),
            Err(StoreError::JobNotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// `specialHandling` with debug mode (`dm`; upstream's older `debug` too) turned on or off, the
/// other tags kept in order; `None` when no tag is left.
fn debug_tags(current: Option<&str>, on: bool) -> Option<String> {
    let mut tags: Vec<&str> = current
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty() && *t != "dm" && *t != "debug")
        .collect();
    if on {
        tags.push("dm");
    }
    (!tags.is_empty()).then(|| tags.join(","))
}

/// Marks a job's output and log files `failed`, as side writes of the job's change (a job that
/// ends without running makes none of them).
pub(crate) fn fail_outputs(job: &panda_core::JobSpec, side: &mut Vec<SideWrite>) {
    for file in job
        .files
        .iter()
        .filter(|f| matches!(f.get_str(FileAttr::r#type), Some("output" | "log")))
    {
        let mut failed = file.clone();
        failed.set_str(FileAttr::status, "failed").ok();
        side.push(SideWrite::UpdateFile(failed));
    }
}
