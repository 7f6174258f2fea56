//! JEDI's agents for user tasks, each one step of `panda_service::task_processing`:
//! `task_refiner` (registered → defined), `contents_feeder` (defined → ready),
//! `job_generator` (ready → running: jobs made and submitted) and `post_processor` (attempts
//! accounted for, tasks closed). Each runs under its cluster-wide lease, and each step is
//! safe against another node running it too.

use async_trait::async_trait;

use super::{Task, TaskContext};

/// Tasks one run of a step looks at.
const TASKS_PER_RUN: i64 = 200;
/// Jobs one run of the generator makes at most (its first argument, if given).
const JOBS_PER_RUN: usize = 20_000;

pub struct TaskRefiner;
pub struct ContentsFeeder;
pub struct JobGenerator;
pub struct PostProcessor;

#[async_trait]
impl Task for TaskRefiner {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        Ok(ctx.service().refine_tasks(TASKS_PER_RUN).await?.to_string())
    }
}

#[async_trait]
impl Task for ContentsFeeder {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        Ok(ctx
            .service()
            .feed_task_contents(TASKS_PER_RUN)
            .await?
            .to_string())
    }
}

#[async_trait]
impl Task for JobGenerator {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        let max_jobs = ctx
            .arguments
            .first()
            .and_then(|a| a.parse().ok())
            .unwrap_or(JOBS_PER_RUN);
        Ok(ctx.service().generate_jobs(max_jobs).await?.to_string())
    }
}

#[async_trait]
impl Task for PostProcessor {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        Ok(ctx
            .service()
            .post_process_tasks(TASKS_PER_RUN)
            .await?
            .to_string())
    }
}
