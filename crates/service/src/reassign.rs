//! Reassigning jobs (`job/reassign`): a job still waiting for a pilot (`defined`, `assigned`,
//! `activated`, `throttled`) goes through brokerage again, without its current queue when
//! another queue fits; its owner or the production role may ask. Running and finished jobs are
//! left alone, as upstream leaves them to the retry logic.

use panda_core::identity::Identity;
use panda_core::{JobAttr, JobStatus, QueueSpec};
use panda_store::ports;
use panda_store::{Decision, StoreError};

use crate::brokerage::choose_queue;
use crate::error::ServiceError;
use crate::kill::may_change;
use crate::JobService;

fn waiting(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Defined | JobStatus::Assigned | JobStatus::Activated | JobStatus::Throttled
    )
}

impl JobService {
    /// Re-brokers the caller's waiting jobs; returns how many moved to another queue.
    pub async fn reassign_jobs(
        &self,
        caller: &Identity,
        ids: &[i64],
    ) -> Result<usize, ServiceError> {
        let (queues, load) = self.brokerage_inputs().await?;
        let mut moved = 0;
        for id in ids {
            let outcome = ports::change_job(self.stores.changes.as_ref(), *id, |job, _side| {
                if !job.status().is_some_and(waiting)
                    || !may_change(caller, job.get_str(JobAttr::prodUserName))
                {
                    return Ok(Decision::Keep(false));
                }
                let current = job.get_str(JobAttr::computingSite).map(str::to_string);
                let others: Vec<QueueSpec> = queues
                    .iter()
                    .filter(|q| Some(q.name.as_str()) != current.as_deref())
                    .cloned()
                    .collect();
                let Some(queue) = choose_queue(&others, &load, job) else {
                    return Ok(Decision::Keep(false));
                };
                job.set_str(JobAttr::computingSite, &queue.name).ok();
                Ok(Decision::Write(true))
            })
            .await;
            match outcome {
                Ok((_, true)) => moved += 1,
                Ok(_) | Err(StoreError::JobNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(moved)
    }
}
