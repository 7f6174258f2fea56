//! `copyArchive`'s timeouts (upstream's Watcher rules):
//! - `sent` with no word from the pilot for 30 min (`watcher/SENT_TIMEOUT` minutes, ours)
//!   → failed, jobDispatcherErrorCode 102;
//! - lost heartbeat: `running`/`starting`/`stagein`/`stageout` not updated for the heartbeat
//!   timeout (config `watcher/HEARTBEAT_TIMEOUT_<workflow>` in hours, `..._analysis` for
//!   user jobs; default 2 h) → failed, code 100 `lost heartbeat : <time>`;
//! - `holding` longer than 3 h at priority > 800, or than `job_timeout/TIMEOUT_holding`
//!   (default 48 h) → failed, code 103;
//! - waiting too long to start: `defined`/`assigned`/`activated`/`throttled` for 7 days,
//!   `pending`/`waiting` for 1 h → closed, taskBufferErrorCode 102 (EC_Expire), `toreassign`.
//!
//! Each job is re-checked under its row lock, so a heartbeat that arrives meanwhile wins.

use async_trait::async_trait;
use chrono::{Duration, NaiveDateTime};
use panda_core::{time, JobAttr, JobSpec, JobStatus, JobTable, QueueSpec, Value};
use panda_store::{ports, Decision};

use super::{Task, TaskContext};

pub struct Watcher;

pub const EC_WATCHER: i64 = 100;
pub const EC_SEND_ERROR: i64 = 102;
pub const EC_HOLDING: i64 = 103;
/// taskBuffer's `EC_Expire`.
pub const EC_EXPIRE: i64 = 102;
const BATCH: i64 = 1000;

const ACTIVE: &[&str] = &["running", "starting", "stagein", "stageout"];

/// A timeout from the `config` table in hours, or its default.
async fn hours(ctx: &TaskContext, component: &str, key: &str, default: f64) -> Duration {
    let value = ctx
        .daemon
        .config_value(component, key)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|h| *h > 0.0)
        .unwrap_or(default);
    Duration::milliseconds((value * 3_600_000.0) as i64)
}

fn older(job: &JobSpec, attr: JobAttr, limit: NaiveDateTime) -> bool {
    job.get(attr).as_time().is_some_and(|t| t < limit)
}

#[async_trait]
impl Task for Watcher {
    async fn run(&self, ctx: &TaskContext) -> anyhow::Result<String> {
        let now = time::now();
        let mut done = 0;

        // Upstream fixes this at 30 min; `watcher/SENT_TIMEOUT` (minutes) is ours, for tests.
        let sent_limit = now - hours(ctx, "watcher", "SENT_TIMEOUT", 30.0).await / 60;
        for id in ctx
            .daemon
            .jobs_older_than(
                JobTable::Active,
                &["sent"],
                "modificationtime",
                sent_limit,
                BATCH,
            )
            .await?
        {
            done += fail(
                ctx,
                ctx,
                id,
                &["sent"],
                JobAttr::modificationTime,
                sent_limit,
                |job| {
                    job.set(
                        JobAttr::jobDispatcherErrorCode,
                        Value::Int(Some(EC_SEND_ERROR)),
                    );
                    job.set_str(
                        JobAttr::jobDispatcherErrorDiag,
                        "Sent job didn't receive reply from pilot within 30 min",
                    )
                    .ok();
                    JobStatus::Failed
                },
            )
            .await?;
        }

        let production = hours(ctx, "watcher", "HEARTBEAT_TIMEOUT_production", 2.0).await;
        let analysis = hours(ctx, "watcher", "HEARTBEAT_TIMEOUT_analysis", 2.0).await;
        let shortest = production.min(analysis);
        for id in ctx
            .daemon
            .jobs_older_than(
                JobTable::Active,
                ACTIVE,
                "modificationtime",
                now - shortest,
                BATCH,
            )
            .await?
        {
            let Some(job) = ctx.stores.jobs.get_job(id).await? else {
                continue;
            };
            let label = job.get_str(JobAttr::prodSourceLabel).unwrap_or("");
            let limit = if matches!(label, "user" | "panda") {
                now - analysis
            } else {
                now - heartbeat_for_queue(ctx, job.get_str(JobAttr::computingSite), production)
                    .await
            };
            done += fail(
                ctx,
                ctx,
                id,
                ACTIVE,
                JobAttr::modificationTime,
                limit,
                |job| {
                    let last = job.get(JobAttr::modificationTime).render();
                    job.set(
                        JobAttr::jobDispatcherErrorCode,
                        Value::Int(Some(EC_WATCHER)),
                    );
                    job.set_str(
                        JobAttr::jobDispatcherErrorDiag,
                        &format!("lost heartbeat : {last}"),
                    )
                    .ok();
                    JobStatus::Failed
                },
            )
            .await?;
        }

        let holding_all = now - hours(ctx, "job_timeout", "TIMEOUT_holding", 48.0).await;
        let holding_high = now - Duration::hours(3);
        for id in ctx
            .daemon
            .jobs_older_than(
                JobTable::Active,
                &["holding"],
                "modificationtime",
                holding_high,
                BATCH,
            )
            .await?
        {
            let Some(job) = ctx.stores.jobs.get_job(id).await? else {
                continue;
            };
            let high = job.get_i64(JobAttr::currentPriority).unwrap_or(0) > 800;
            let limit = if high { holding_high } else { holding_all };
            done += fail(
                ctx,
                ctx,
                id,
                &["holding"],
                JobAttr::modificationTime,
                limit,
                |job| {
                    job.set(
                        JobAttr::jobDispatcherErrorCode,
                        Value::Int(Some(super::watcher::EC_HOLDING)),
                    );
                    job.set_str(JobAttr::jobDispatcherErrorDiag, "timeout in holding")
                        .ok();
                    JobStatus::Failed
                },
            )
            .await?;
        }

        for (table, statuses, age) in [
            (
                JobTable::Defined,
                &["defined", "assigned"][..],
                Duration::days(7),
            ),
            (
                JobTable::Defined,
                &["pending", "waiting"][..],
                Duration::hours(1),
            ),
            (
                JobTable::Active,
                &["activated", "throttled"][..],
                Duration::days(7),
            ),
        ] {
            let limit = now - age;
            for id in ctx
                .daemon
                .jobs_older_than(table, statuses, "creationtime", limit, BATCH)
                .await?
            {
                done += fail(
                    ctx,
                    ctx,
                    id,
                    statuses,
                    JobAttr::creationTime,
                    limit,
                    |job| {
                        let status = job.get(JobAttr::jobStatus).render();
                        job.set(JobAttr::taskBufferErrorCode, Value::Int(Some(EC_EXPIRE)));
                        job.set_str(
                            JobAttr::taskBufferErrorDiag,
                            &format!("expired in {status}"),
                        )
                        .ok();
                        job.set_str(JobAttr::jobSubStatus, "toreassign").ok();
                        JobStatus::Closed
                    },
                )
                .await?;
            }
        }
        Ok(format!("{done} jobs timed out"))
    }
}

/// The heartbeat timeout of a queue's workflow (`watcher/HEARTBEAT_TIMEOUT_<workflow>`).
async fn heartbeat_for_queue(
    ctx: &TaskContext,
    site: Option<&str>,
    production: Duration,
) -> Duration {
    let Some(site) = site else { return production };
    let Ok(Some(json)) = ctx.stores.sites.queue_json(site).await else {
        return production;
    };
    let data = serde_json::from_str(&json).unwrap_or(serde_json::Value::Null);
    let queue = QueueSpec::from_json(site, data);
    match queue.data.get("workflow").and_then(|w| w.as_str()) {
        Some(workflow) if workflow != "production" => {
            let default = production.num_milliseconds() as f64 / 3_600_000.0;
            hours(
                ctx,
                "watcher",
                &format!("HEARTBEAT_TIMEOUT_{workflow}"),
                default,
            )
            .await
        }
        _ => production,
    }
}

/// Ends one job if it is still in one of `statuses` with `attr` older than `limit`; returns 1
/// when it did.
async fn fail(
    retry_ctx: &TaskContext,
    ctx: &TaskContext,
    id: i64,
    statuses: &[&str],
    attr: JobAttr,
    limit: NaiveDateTime,
    end: impl FnOnce(&mut JobSpec) -> JobStatus + Send,
) -> anyhow::Result<usize> {
    let (_, ended) = ports::change_job(ctx.stores.changes.as_ref(), id, |job, _| {
        let status = job.get(JobAttr::jobStatus).render();
        if !statuses.contains(&status.as_str()) || !older(job, attr, limit) {
            return Ok(Decision::Keep(None));
        }
        let new_status = end(job);
        job.set_status(new_status, time::now());
        Ok(Decision::Write(Some(new_status)))
    })
    .await?;
    if let Some(status) = ended {
        tracing::info!(target: "panda::watcher", panda_id = id, status = %status, "timed out");
        if status == JobStatus::Failed {
            retry_ctx.retry(id).await?;
        }
    }
    Ok(usize::from(ended.is_some()))
}
